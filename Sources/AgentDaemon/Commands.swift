import AgentAPI
import AgentCore
import ArgumentParser
import Faults
import Foundation
import Logging

/// `chaos-agentd`: the fault agent daemon.
public struct AgentDaemonCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "chaos-agentd",
        abstract: "The chaos-agent daemon: injects host faults as leases that always end.",
        discussion: """
            Every fault is a lease with a deadline. The daemon journals each fault before applying it, reverts it at \
            its deadline, on `chaos-agentctl revert`, on SIGTERM/SIGINT, and, after a crash, at its next start (before \
            it answers) or via `chaos-agentd reap` (systemd's ExecStopPost).

            Examples:
              chaos-agentd                                    # serve on /run/chaos-agent/agent.sock
              chaos-agentd run --socket /tmp/a.sock --state-dir /tmp/a-state
              chaos-agentd reap --state-dir /run/chaos-agent  # revert what a killed agent left

            Configuration: /etc/chaos-agent/agent.toml (see etc/agent.toml.example); flags override it.
            """,
        version: agentVersion,
        subcommands: [Run.self, Reap.self, Worker.self, WatchdogCommand.self],
        defaultSubcommand: Run.self)

    public init() {}
}

struct CommonOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Configuration file (TOML).", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("Directory for the journal and lock (default /run/chaos-agent).", valueName: "dir"))
    var stateDir: String?

    @Option(help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    var logLevel: String = "info"

    func load() throws -> AgentConfig {
        var c = try AgentConfig.load(path: config)
        if let stateDir { c.stateDir = stateDir }
        return c
    }

    func makeLogger() throws -> Logger {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        var logger = Logger(label: "chaos-agentd")
        logger.logLevel = level
        return logger
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the API until SIGTERM/SIGINT, then revert every fault and exit 0.",
        discussion: """
            At start-up the journal is read and every fault not marked reverted is reverted before the socket \
            answers; then READY=1 is sent to systemd (Type=notify). Exit status 0 after a clean shutdown; 1 when a \
            fault could not be reverted (the journal keeps it for `chaos-agentd reap`).
            """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Unix socket to serve on (default /run/chaos-agent/agent.sock).", valueName: "path"))
    var socket: String?

    @Option(
        help: ArgumentHelp(
            "Hang watchdog: revert every fault when the lease engine gives no sign of life for this long while any "
                + "fault is active (a deadline that falls due gets 3s).", valueName: "duration"))
    var hangTimeout: String = "15s"

    @Flag(help: "Do not start the hang watchdog process (it reverts the faults of an agent that hangs or dies).")
    var noWatchdog = false

    func validate() throws {
        guard let d = Units.parseDuration(hangTimeout), d >= .seconds(1), d <= .seconds(600) else {
            throw ValidationError("--hang-timeout must be a duration from 1s to 10m, like 15s")
        }
    }

    func run() async throws {
        let logger = try common.makeLogger()
        var config: AgentConfig
        do { config = try common.load() } catch { throw CleanFailure("\(error)") }
        if let socket { config.socket = socket }
        let daemon: Daemon
        // A reap that is reverting (the watchdog's, systemd's ExecStopPost) is waited for, not refused.
        var acquire = StateDirLock.Acquire()
        acquire.wait = .seconds(30)
        do { daemon = try Daemon(config: config, logger: logger, acquire: acquire) } catch { throw CleanFailure("\(error)") }
        logger.notice(
            "starting",
            metadata: [
                "version": "\(agentVersion)", "pid": "\(getpid())", "socket": "\(config.socket)",
                "stateDir": "\(config.stateDir)", "instance": "\(daemon.instance.id)",
                "tcMajor": "\(String(format: "%x:", daemon.instance.tcMajor))", "maxTTL": "\(Units.formatDuration(config.maxTTL))",
                "kernel": "\(daemon.host.kernel)", "capabilities": "\(daemon.host.capabilities.joined(separator: ","))",
            ])
        let report = await daemon.reconcile(accept: true)
        let left: [FaultObject]
        do {
            var timeouts = HangTimeouts()
            timeouts.hang = Units.parseDuration(hangTimeout)!.seconds
            timeouts.dueSilence = min(timeouts.dueSilence, timeouts.hang)
            left = try await daemon.serve(recovered: report.reverted.count, hangWatchdog: noWatchdog ? nil : timeouts)
        } catch {
            logger.critical("agent stopped with an error", metadata: ["error": "\(error)"])
            _ = await daemon.engine.shutdown()
            throw CleanFailure("\(error)")
        }
        if !left.isEmpty { throw ExitCode(1) }
    }
}

struct Reap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Revert every fault the journal still holds, without serving.",
        discussion: """
            For systemd's ExecStopPost (it runs even after SIGKILL or a watchdog kill) and for a person cleaning up \
            after a crashed agent. Prints what it reverted. Exit status 0 when the host is clean, 1 (with the reason) \
            when something could not be reverted, 1 when a live agent still owns the state directory.
            """)

    @OptionGroup var common: CommonOptions

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Option(
        help: ArgumentHelp(
            "Wait this long for another reap, or an agent that is exiting, to release the state directory.",
            valueName: "seconds"))
    var waitLock: Double = 10

    @Flag(
        help: ArgumentHelp(
            "Take over from the agent holding the state directory if it is stopped (SIGSTOP): it is kept frozen while "
                + "its faults are reverted from the journal, then killed."))
    var takeOver = false

    @Flag(help: "With --take-over: take over from the holding agent even when it is not stopped (it is frozen first).")
    var force = false

    @Option(help: ArgumentHelp("With --take-over: only if the holder is this pid.", valueName: "pid"))
    var expectPid: Int32?

    func validate() throws {
        guard (0...600).contains(waitLock) else { throw ValidationError("--wait-lock must be 0...600 seconds") }
        guard takeOver || (!force && expectPid == nil) else {
            throw ValidationError("--force and --expect-pid only go with --take-over")
        }
    }

    func run() async throws {
        let logger = try common.makeLogger()
        let daemon: Daemon
        var acquire = StateDirLock.Acquire()
        acquire.wait = .milliseconds(Int64(waitLock * 1000))
        acquire.takeOver = takeOver
        acquire.force = force
        acquire.expectPID = expectPid
        do {
            daemon = try Daemon(config: try common.load(), logger: logger, role: "reap", acquire: acquire)
        } catch { throw CleanFailure("\(error)") }
        if let frozen = daemon.lock.frozenHolder {
            logger.warning(
                "took over from a hung agent: it stays frozen while its faults are reverted, then it is killed",
                metadata: ["event": "take-over", "agentPid": "\(frozen)"])
        }
        let report = await daemon.reconcile(accept: false)
        daemon.lock.release()
        if json {
            struct Out: Encodable {
                var reverted: [FaultObject]
                var pending: [FaultObject]
                var orphans: [String]
                var journalBadLines: Int
            }
            let data = try WireCoding.encoder(pretty: true).encode(
                Out(
                    reverted: report.reverted, pending: report.stillPending, orphans: report.orphans,
                    journalBadLines: report.journalBadLines))
            print(String(decoding: data, as: UTF8.self))
        } else {
            if report.reverted.isEmpty && report.stillPending.isEmpty && report.orphans.isEmpty {
                print("reap: nothing to revert; the journal in \(daemon.config.stateDir) holds no active fault")
            }
            for f in report.reverted {
                if f.state == .failed {
                    print("ended as failed \(f.id) \(f.kind) owner=\(f.owner): \(f.error ?? "its revert can never succeed")")
                } else {
                    print("reverted \(f.id) \(f.kind) owner=\(f.owner) target=\(Self.summary(f))")
                }
            }
            for f in report.stillPending { print("NOT reverted \(f.id) \(f.kind): \(f.error ?? "unknown error")") }
            for o in report.orphans { print("removed (no journal entry): \(o)") }
            if report.journalBadLines > 0 {
                print("reap: the journal had \(report.journalBadLines) torn or corrupt line(s); every good record was used")
            }
        }
        if !report.isClean {
            _ = await daemon.engine.shutdown(retryFor: .seconds(5))
            throw CleanFailure("\(report.stillPending.count) fault(s) could not be reverted")
        }
    }

    static func summary(_ f: FaultObject) -> String {
        guard case .object(let o) = f.target else { return "-" }
        // Resource faults: the cgroup or file they acted on.
        for key in ["cgroup", "file"] { if let v = o[key]?.stringValue { return "\(key) \(v)" } }
        if let v = o["freeze"]?["cgroup"]?.stringValue { return "cgroup \(v) (frozen)" }
        guard case .array(let procs)? = o["processes"] else { return "-" }
        return procs.compactMap { p -> String? in
            guard let pid = p["pid"]?.numberValue else { return nil }
            return "pid \(Int(pid))" + (p["comm"]?.stringValue.map { " (\($0))" } ?? "")
        }.joined(separator: ", ")
    }
}

/// An error that prints one line and exits 1.
struct CleanFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Entry point for the executable.
/// `chaos-agentd worker KIND ...`: a stress worker (cpu, memory, io). Not for people: the daemon starts it inside a
/// lease cgroup with the arguments `WorkerArguments.argv` writes.
struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A stress worker started by the daemon inside a lease cgroup (internal).", shouldDisplay: false)

    @Argument var kind: String
    @Option var threads: Int = 1
    @Option var bytes: UInt64 = 0
    @Option var path: String?
    @Option var mode: String?
    @Option var cgroup: String?
    @Option var tag: String?
    @Option var deadline: Double
    @Option var deadlineFile: String?

    func validate() throws {
        guard WorkerArguments.Kind(rawValue: kind) != nil else { throw ValidationError("unknown worker kind '\(kind)'") }
        guard (1...4096).contains(threads) else { throw ValidationError("--threads must be 1...4096") }
    }

    func run() throws {
        ResourceWorker.run(
            WorkerArguments(
                kind: WorkerArguments.Kind(rawValue: kind)!, threads: threads, bytes: bytes, path: path, mode: mode,
                cgroup: cgroup, tag: tag, deadline: deadline, deadlineFile: deadlineFile))
    }
}

public enum DaemonMain {
    public static func main() async {
        do {
            var command = try AgentDaemonCommand.parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            exit(0)
        } catch let failure as CleanFailure {
            FileHandle.standardError.write(Data("chaos-agentd: \(failure.description)\n".utf8))
            exit(1)
        } catch {
            let code = AgentDaemonCommand.exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((AgentDaemonCommand.fullMessage(for: error) + "\n").utf8))
                exit(2)
            }
            AgentDaemonCommand.exit(withError: error)
        }
    }
}
