import AgentAPI
import AgentClient
import ArgumentParser
import Foundation

/// `inject KIND ...`: one small subcommand per fault kind. Adding a kind = one `InjectKind` type that turns its
/// flags into the `spec` object (camelCase keys, values as the user wrote them) + one line in `subcommands`.
struct InjectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inject",
        abstract: "Inject a fault that the agent reverts by itself when its TTL runs out.",
        discussion: """
            Prints the new fault's id on stdout (with --json, the whole fault object). With --wait, blocks \
            until the fault ends, showing a countdown on stderr; Ctrl-C (or SIGTERM) reverts it and exits 130.

            EXAMPLES
              chaos-agentctl inject pause --name '^nginx' --ttl 30s --wait
              chaos-agentctl inject pause --name '^nginx' --ttl 10m --heartbeat 10s   # then: POST .../heartbeat
              chaos-agentctl inject kill --pid 4242 --signal TERM --ttl 1m --label team=db
              chaos-agentctl inject pause --unit nginx.service --ttl 30s
              chaos-agentctl inject disk-fill --path /var/log --leave-free 100MiB --ttl 10m
              chaos-agentctl inject squeeze --unit postgresql.service --cpu-max 20% --memory-high 256MiB --ttl 5m
              ID=$(chaos-agentctl inject pause --pid 4242 --ttl 5m); chaos-agentctl get $ID
            """,
        subcommands: [
            InjectPause.self, InjectKill.self, InjectNetwork.self, InjectCPU.self, InjectMemory.self, InjectIO.self,
            InjectDiskFill.self, InjectSqueeze.self,
        ]
    )
}

/// Flags every `inject KIND` takes.
struct InjectOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "How long the fault lasts before the agent reverts it (e.g. 30s, 5m, 1h; at most the agent's max TTL).",
            valueName: "duration"))
    var ttl: String

    @Option(
        name: .customLong("label"),
        help: ArgumentHelp("Attach a label to the fault (repeatable).", valueName: "key=value"))
    var labels: [String] = []

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Revert the fault unless it is renewed or sent a heartbeat within this interval (e.g. 10s). "
                + "With --wait, this CLI sends the heartbeats (default: 10s, or the TTL if shorter).",
            valueName: "duration"))
    var heartbeat: String?

    @Option(
        name: .customLong("idempotency-key"),
        help: ArgumentHelp(
            "Retrying with the same key and flags returns the fault the first try created instead of a second one.",
            valueName: "key"))
    var idempotencyKey: String?

    @Flag(
        name: .long,
        help: "Block until the fault ends, with a live countdown on stderr; Ctrl-C reverts the fault and exits 130.")
    var wait = false

    func validate() throws {
        try validateDuration(ttl, flag: "--ttl")
        if let heartbeat { try validateDuration(heartbeat, flag: "--heartbeat") }
        _ = try labelMap()
    }

    /// The heartbeat to ask for: `--heartbeat`, else with `--wait` 10s (or the TTL when shorter), so a CLI that is
    /// killed or cut off never leaves its fault behind for longer than that.
    var effectiveHeartbeat: String? {
        if let heartbeat { return heartbeat }
        guard wait else { return nil }
        if let t = Units.parseDuration(ttl), t < .seconds(10) { return ttl }
        return "10s"
    }

    func labelMap() throws -> [String: String] {
        var map: [String: String] = [:]
        for label in labels {
            guard let eq = label.firstIndex(of: "=") else {
                throw ValidationError("invalid --label '\(label)': write KEY=VALUE, e.g. --label team=db")
            }
            let key = String(label[..<eq]).trimmingCharacters(in: .whitespaces)
            let value = String(label[label.index(after: eq)...])
            guard !key.isEmpty else {
                throw ValidationError("invalid --label '\(label)': the key is empty (write KEY=VALUE)")
            }
            if map[key] != nil { throw ValidationError("--label \(key) given twice") }
            map[key] = value
        }
        return map
    }
}

/// Choosing processes: exactly one of `--pid`, `--name`, `--cgroup` or `--unit`.
struct ProcessSelector: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Target the process with this PID.", valueName: "pid"))
    var pid: Int32?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Target every process whose name or command line matches this pattern (a regular expression without backreferences, lookaround or lazy quantifiers; at most 256 bytes).",
            valueName: "regex"))
    var name: String?

    /// `--cgroup PATH` / `--unit NAME`: every process in that cgroup.
    @OptionGroup var cgroupTarget: CgroupSelector

    func validate() throws {
        let given = [pid != nil, name != nil, cgroupTarget.cgroup != nil, cgroupTarget.unit != nil].filter { $0 }.count
        if given > 1 { throw ValidationError("give only one of --pid, --name, --cgroup and --unit") }
        if given == 1 && pid == nil && name == nil { return }
        switch (pid, name) {
        case (nil, nil): throw ValidationError("choose the target: --pid PID, --name REGEX, --cgroup PATH or --unit NAME")
        case (.some(let p), nil) where p <= 0: throw ValidationError("--pid must be a positive process id (got \(p))")
        case (nil, .some(let n)) where n.isEmpty: throw ValidationError("--name must not be empty")
        default: break  // the agent checks a --name pattern (its linear-time subset) and says what it refuses
        }
    }

    var spec: [String: JSONValue] {
        if let pid { return ["pid": .number(Double(pid))] }
        if let name { return ["name": .string(name)] }
        return cgroupTarget.spec
    }
}

/// One `inject KIND` subcommand.
protocol InjectKind: AsyncParsableCommand {
    /// The API's `kind`.
    static var kind: String { get }
    var inject: InjectOptions { get }
    var global: GlobalOptions { get }
    /// The API's `spec` built from this kind's flags (camelCase keys).
    func spec() throws -> [String: JSONValue]
}

extension InjectKind {
    func run() async throws {
        let request = FaultRequest(
            kind: Self.kind, ttl: inject.ttl, heartbeat: inject.effectiveHeartbeat, labels: try inject.labelMap(),
            spec: .object(try spec()))
        try await Injector(global: global, wait: inject.wait, idempotencyKey: inject.idempotencyKey).run(request)
    }
}

struct InjectPause: InjectKind {
    static let configuration = CommandConfiguration(
        commandName: "pause",
        abstract: "Stop processes with SIGSTOP; SIGCONT them when the fault ends.",
        discussion: """
            Only the processes this fault stopped are resumed: one that was already stopped is left alone \
            (listed as skipped). PID 1, the agent, its callers, kernel threads and protected processes are refused.

            With --cgroup or --unit the whole cgroup is frozen (cgroup.freeze; the agent waits for "frozen 1" in \
            cgroup.events) and thawed at the end: processes forked meanwhile are frozen too. Refused when the \
            cgroup holds a protected process or the agent itself.

            EXAMPLES
              chaos-agentctl inject pause --name '^nginx' --ttl 30s --wait
              chaos-agentctl inject pause --pid 4242 --ttl 5m --label ticket=OPS-12
              chaos-agentctl inject pause --name 'worker --queue=mail' --ttl 1m --json
              chaos-agentctl inject pause --unit nginx.service --ttl 30s
            """
    )
    static let kind = "pause"

    @OptionGroup(title: "Target") var selector: ProcessSelector
    @OptionGroup(title: "Fault") var inject: InjectOptions
    @OptionGroup var global: GlobalOptions

    func spec() throws -> [String: JSONValue] { selector.spec }
}

struct InjectKill: InjectKind {
    static let configuration = CommandConfiguration(
        commandName: "kill",
        abstract: "Send a signal (default KILL) to processes, once or every --repeat interval until the TTL ends.",
        discussion: """
            Nothing is undone at the end: a killed process stays dead. With --repeat, matching processes that \
            appear during the TTL are killed too (a crash loop), and the killing stops when the fault ends. \
            With --cgroup or --unit every process in the cgroup is signalled; SIGKILL goes through cgroup.kill \
            (safe against concurrent forks) unless the cgroup holds a protected process, which is then spared.

            EXAMPLES
              chaos-agentctl inject kill --pid 4242 --ttl 10s
              chaos-agentctl inject kill --name '^worker' --signal TERM --ttl 1m
              chaos-agentctl inject kill --name '^worker' --repeat 5s --ttl 2m --wait
              chaos-agentctl inject kill --unit batch.service --ttl 10s
            """
    )
    static let kind = "kill"

    @OptionGroup(title: "Target") var selector: ProcessSelector

    @Option(
        name: .long,
        help: ArgumentHelp("The signal, by name (TERM, SIGTERM) or number (default KILL).", valueName: "signal"))
    var signal: String?

    @Option(
        name: .long,
        help: ArgumentHelp("Keep killing matching processes at this interval until the fault ends.", valueName: "duration"))
    var `repeat`: String?

    @OptionGroup(title: "Fault") var inject: InjectOptions
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let signal {
            let s = signal.uppercased()
            let name = s.hasPrefix("SIG") ? String(s.dropFirst(3)) : s
            let valid = (Int(name).map { (1...64).contains($0) } ?? false)
                || (!name.isEmpty && name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" })
            if !valid { throw ValidationError("invalid --signal '\(signal)': use a name (TERM, SIGKILL) or a number") }
        }
        if let r = `repeat` { try validateDuration(r, flag: "--repeat") }
    }

    func spec() throws -> [String: JSONValue] {
        var s = selector.spec
        if let signal { s["signal"] = .string(signal) }
        if let r = `repeat` { s["repeat"] = .string(r) }
        return s
    }
}
