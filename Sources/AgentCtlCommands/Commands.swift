import AgentAPI
import AgentClient
import ArgumentParser
import Foundation

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the agent: version, uptime, policy, active faults, host facts and which fault kinds work here.",
        discussion: """
            EXAMPLES
              chaos-agentctl status
              chaos-agentctl status --json | jq '.kinds[] | select(.available)'
              chaos-agentctl --socket /tmp/test-agent.sock status
            """
    )

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let status = try await global.withClient { try await $0.status() }
        if global.json {
            try Terminal.printJSON(status)
            return
        }
        Terminal.stdout(Self.render(status))
    }

    static func render(_ s: AgentStatus) -> String {
        let h = s.host
        let uptime = Units.formatDuration(.seconds(s.uptimeSeconds.rounded(.down)))
        var out = Format.keyValues([
            ("version", s.version),
            ("pid", String(s.pid)),
            ("uptime", "\(uptime) (since \(Format.time(s.startedAt)))"),
            ("socket", s.socket),
            ("state dir", s.stateDir),
            ("max TTL", s.maxTTL),
            ("active faults", String(s.activeFaults)),
            ("recovered at start", String(s.recovered)),
            ("kernel", h.kernel),
            ("euid", String(h.euid)),
            ("capabilities", h.capabilities.isEmpty ? "-" : h.capabilities.joined(separator: " ")),
            ("pidfd", h.pidfd ? "yes" : "no"),
            ("cgroup v2", h.cgroup2Mount ?? "no"),
            ("cgroup controllers", h.cgroupControllers.isEmpty ? "-" : h.cgroupControllers.joined(separator: " ")),
            ("netlink", h.netlink ? "yes" : "no"),
        ])
        out += "\n\n"
        out += Format.table(
            ["KIND", "AVAILABLE", "REASON"],
            s.kinds.map { [$0.kind, $0.available ? "yes" : "no", $0.reason ?? "-"] })
        return out
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List faults: by default the ones not yet ended; --all adds reverted and failed ones.",
        discussion: """
            Columns: ID KIND TARGET STATE EXPIRES-IN OWNER LABELS. EXPIRES-IN is the time left before the agent \
            reverts the fault by itself ('-' once it has ended). The agent keeps ended faults for 15 minutes.

            EXAMPLES
              chaos-agentctl list
              chaos-agentctl list --all
              chaos-agentctl list --json | jq -r '.faults[].id'
            """,
        aliases: ["ls"]
    )

    @Flag(name: .long, help: "Include faults that have ended (reverted or failed).")
    var all = false

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        var faults = try await global.withClient { try await $0.list() }
        if !all { faults = faults.filter { !$0.state.isFinal } }
        faults.sort { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        if global.json {
            try Terminal.printJSON(FaultList(faults: faults))
            return
        }
        if faults.isEmpty {
            Terminal.stderr(all ? "no faults" : "no active faults (--all shows ended ones)")
            return
        }
        Terminal.stdout(Self.render(faults))
    }

    static func render(_ faults: [FaultObject], now: Date = Date()) -> String {
        Format.table(
            ["ID", "KIND", "TARGET", "STATE", "EXPIRES-IN", "OWNER", "LABELS"],
            faults.map {
                [
                    $0.id, $0.kind, Format.target($0), $0.state.rawValue, Format.expiresIn($0, now: now), $0.owner,
                    Format.labels($0.labels),
                ]
            })
    }
}

struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Show one fault in detail.",
        discussion: """
            EXAMPLES
              chaos-agentctl get f-3c9a2b7d1e4f
              chaos-agentctl get f-3c9a2b7d1e4f --json | jq -r .state
              chaos-agentctl get "$(chaos-agentctl inject pause --pid 4242 --ttl 30s)"
            """
    )

    @Argument(help: ArgumentHelp("The fault's id (f-...).", valueName: "id"))
    var id: String

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let fault = try await global.withClient { try await $0.get(id) }
        if global.json {
            try Terminal.printJSON(fault)
            return
        }
        Terminal.stdout(Self.render(fault))
    }

    static func render(_ f: FaultObject, now: Date = Date()) -> String {
        var pairs: [(String, String)] = [
            ("id", f.id),
            ("kind", f.kind),
            ("state", f.state.rawValue),
            ("target", Format.target(f)),
        ]
        for p in Format.processes(f.target["processes"]) { pairs.append(("  process", Format.process(p))) }
        for p in Format.processes(f.target["skipped"]) {
            pairs.append(("  skipped", Format.process(p) + (p["reason"]?.stringValue.map { ": \($0)" } ?? "")))
        }
        pairs += [
            ("spec", Format.compactJSON(f.spec)),
            ("ttl", f.ttl),
            ("created", Format.time(f.createdAt)),
            (
                "expires",
                Format.time(f.expiresAt)
                    + (f.state.isFinal ? "" : " (in \(Format.timeLeft(f.expiresAt.timeIntervalSince(now))))")
            ),
            (
                "heartbeat",
                f.heartbeat.map { hb in
                    hb + (f.heartbeatDueAt.map { " (due \(Format.time($0)))" } ?? "")
                } ?? "-"
            ),
            ("reverted", Format.time(f.revertedAt)),
            ("reason", f.revertReason ?? "-"),
            ("owner", f.owner),
            ("labels", Format.labels(f.labels)),
            ("error", f.error ?? "-"),
            ("revert attempts", String(f.revertAttempts)),
        ]
        return Format.keyValues(pairs)
    }
}

struct RenewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "renew",
        abstract: "Move an active fault's deadline to now + TTL.",
        discussion: """
            The TTL counts from now, not from the old deadline, and is capped by the agent's max TTL. \
            Renewing a fault that has ended is refused (exit 3).

            EXAMPLES
              chaos-agentctl renew f-3c9a2b7d1e4f --ttl 5m
              chaos-agentctl renew f-3c9a2b7d1e4f --ttl 30s --json
              while sleep 20; do chaos-agentctl renew "$ID" --ttl 30s || break; done
            """
    )

    @Argument(help: ArgumentHelp("The fault's id (f-...).", valueName: "id"))
    var id: String

    @Option(name: .long, help: ArgumentHelp("The new time left, from now (e.g. 30s, 5m).", valueName: "duration"))
    var ttl: String

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        try validateDuration(ttl, flag: "--ttl")
    }

    func run() async throws {
        let fault = try await global.withClient { try await $0.renew(id, ttl: ttl) }
        if global.json {
            try Terminal.printJSON(fault)
            return
        }
        Terminal.stdout(
            "\(fault.id) renewed: expires in \(Format.timeLeft(fault.expiresAt.timeIntervalSinceNow)) (\(Format.time(fault.expiresAt)))"
        )
    }
}

struct RevertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revert",
        abstract: "Revert a fault now, or every fault with --all.",
        discussion: """
            Prints each reverted fault's id. A revert the kernel refuses is retried by the agent until it \
            succeeds; the fault then stays 'reverting' and this command exits 1.

            EXAMPLES
              chaos-agentctl revert f-3c9a2b7d1e4f
              chaos-agentctl revert --all
              chaos-agentctl revert --all --json | jq -r '.reverted[].id'
            """
    )

    @Argument(help: ArgumentHelp("The fault's id (f-...).", valueName: "id"))
    var id: String?

    @Flag(name: .long, help: "Revert every fault the agent holds.")
    var all = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if all && id != nil { throw ValidationError("give a fault id or --all, not both") }
        if !all && id == nil { throw ValidationError("give the id of the fault to revert, or --all") }
    }

    func run() async throws {
        let faults: [FaultObject]
        if let id {
            let fault = try await global.withClient { try await $0.revert(id) }
            faults = [fault]
            if global.json { try Terminal.printJSON(fault) }
        } else {
            faults = try await global.withClient { try await $0.revertAll() }
            if global.json { try Terminal.printJSON(RevertAllResult(reverted: faults)) }
        }
        let stuck = faults.filter { !$0.state.isFinal }
        if !global.json {
            for f in faults where f.state.isFinal { Terminal.stdout(f.id) }
            if all && faults.isEmpty { Terminal.stderr("nothing to revert") }
        }
        for f in stuck {
            printError(
                "\(f.id) is still \(f.state.rawValue)\(f.error.map { ": \($0)" } ?? "")",
                hint: "the agent keeps retrying; watch it with 'chaos-agentctl get \(f.id)'")
        }
        if !stuck.isEmpty { throw ExitCode(CtlExitCode.failure) }
    }
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Follow fault lifecycle events (applied, renewed, reverted, failed, revert-failed).",
        discussion: """
            Runs until interrupted. One line per event; with --json, one JSON object per line (for jq or scripts). \
            --since SEQ first replays the events the agent still buffers after SEQ.

            EXAMPLES
              chaos-agentctl events
              chaos-agentctl events --json | jq -c 'select(.type == "reverted") | .fault.id'
              chaos-agentctl events --since 0
            """
    )

    @Option(
        name: .long,
        help: ArgumentHelp("Replay buffered events after this sequence number first (Last-Event-ID).", valueName: "seq"))
    var since: UInt64?

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let json = global.json
        try await global.withClient { client in
            for try await event in client.events(lastEventID: since) {
                if json {
                    try Terminal.printJSONLine(event)
                } else {
                    Terminal.stdout(Self.render(event))
                    Terminal.flush()
                }
            }
        }
        throw AgentClientError.unreachable(path: ((try? global.endpoint())?.description ?? "the agent"), reason: "the agent closed the event stream")
    }

    static func render(_ e: FaultEvent) -> String {
        let f = e.fault
        var line = "\(Format.time(e.at))  #\(e.seq)  \(e.type.rawValue)  \(f.id)  \(f.kind)  \(Format.target(f))"
        switch e.type {
        case .applied, .renewed:
            line += "  expires \(Format.time(f.expiresAt)) (ttl \(f.ttl))"
        case .failed, .revertFailed:
            if let err = f.error { line += "  error: \(err)" }
        case .reverted:
            if let reason = f.revertReason { line += "  reason: \(reason)" }
        case .heartbeatMissed:
            line += "  no heartbeat within \(f.heartbeat ?? "?")"
        }
        if !f.labels.isEmpty { line += "  labels \(Format.labels(f.labels))" }
        return line
    }
}

/// Usage error unless `text` is a duration the agent will understand.
func validateDuration(_ text: String, flag: String) throws {
    guard let d = Units.parseDuration(text) else {
        throw ValidationError(
            "invalid duration '\(text)' for \(flag): write a number and a unit, e.g. 250ms, 30s, 5m, 1h, 1h30m")
    }
    if d <= .zero { throw ValidationError("\(flag) must be more than 0 (got '\(text)')") }
}
