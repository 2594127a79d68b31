import AgentCore
import ArgumentParser
import CShims
import Foundation
import Logging

/// The agent's side of the hang watchdog: a separate process (`chaos-agentd watchdog`) that `run` starts after
/// reconciling, fed over a pipe with a beat from the lease engine's own thread. systemd's WatchdogSec only exists under
/// systemd; `scripts/run`, containers and other init systems get the same protection from this.
///
/// Beat line: `B <active faults> <seconds to the next deadline, or -1> <the agent's lease time, Unix seconds>`; `bye`
/// after a clean shutdown. The watchdog acts when the beats stop: on EOF without `bye` (the agent died: crash,
/// SIGKILL, OOM) it reaps at once; on silence while a deadline is due, or a longer silence while any fault is active
/// (hung, SIGSTOPped, deadlocked) it freezes the agent, reverts every fault from the journal in its place and kills it
/// (`reap --take-over`). An idle agent (no fault) does not beat at all. Once the beats stop it also reads the journal, the truth about which faults exist: a fault
/// applied after the last beat (the agent hung right after applying it) is known there.
final class HangWatchdogLink: Sendable {
    private let writeFD: Int32
    let pid: Int32

    private init(writeFD: Int32, pid: Int32) {
        self.writeFD = writeFD
        self.pid = pid
    }

    /// This binary (the watchdog and the reap it execs are this same program).
    static var executable: String { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0] }

    /// Starts the watchdog process for this agent.
    static func start(stateDir: String, configPath: String?, timeouts: HangTimeouts, logger: Logger) -> HangWatchdogLink? {
        signal(SIGPIPE, SIG_IGN)
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            logger.error("hang watchdog not started: pipe failed", metadata: ["errno": "\(errno)"])
            return nil
        }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        // The agent never blocks on a watchdog that does not read (stopped, or slow): a lost beat is harmless.
        _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
        let exe = HangWatchdogLink.executable
        var args = [
            exe, "watchdog", "--agent-pid", "\(getpid())", "--state-dir", stateDir,
            "--silence", "\(timeouts.dueSilence)", "--hang-timeout", "\(timeouts.hang)",
        ]
        if let configPath { args += ["--config", configPath] }
        let cArgs = args.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        let pid = cshim_spawn_detached(exe, cArgs, fds[0])
        close(fds[0])
        guard pid > 0 else {
            logger.error("hang watchdog not started: fork failed", metadata: ["errno": "\(errno)"])
            close(fds[1])
            return nil
        }
        logger.notice(
            "hang watchdog started",
            metadata: [
                "event": "watchdog", "pid": "\(pid)", "dueSilence": "\(timeouts.dueSilence)s",
                "hangTimeout": "\(timeouts.hang)s",
            ])
        return HangWatchdogLink(writeFD: fds[1], pid: pid)
    }

    /// One beat. Returns false when the watchdog is gone (EPIPE).
    @discardableResult
    func beat(active: Int, nextDeadlineIn: Double?, leaseNow: Date) -> Bool {
        send(
            "B \(active) \(nextDeadlineIn.map { String(format: "%.3f", max(0, $0)) } ?? "-1") "
                + String(format: "%.3f", leaseNow.timeIntervalSince1970) + "\n")
    }

    /// Tells the watchdog the agent is leaving with every fault reverted, then lets it go.
    func bye() {
        send("bye\n")
        close(writeFD)
    }

    @discardableResult
    private func send(_ line: String) -> Bool {
        let n = line.withCString { write(writeFD, $0, strlen($0)) }
        return n >= 0 || errno == EAGAIN
    }
}

/// How long the watchdog waits for a beat before it acts.
public struct HangTimeouts: Sendable {
    /// Silence after a deadline fell due.
    public var dueSilence: Double = 3
    /// Silence while any fault is active, whatever its deadline.
    public var hang: Double = 15
    /// How often the agent beats.
    public var beatEvery: Duration = .milliseconds(500)

    public init() {}
}

/// `chaos-agentd watchdog`: the watchdog process itself (internal: `run` starts it).
struct WatchdogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watchdog",
        abstract: "Watches a running agent and reverts its faults if it hangs or dies (internal: `run` starts it).",
        shouldDisplay: false)

    @Option var agentPid: Int32
    @Option var stateDir: String
    @Option var config: String?
    @Option var silence: Double = 3
    @Option var hangTimeout: Double = 15

    func run() throws {
        var watch = HangWatch(agentPID: agentPid, dueSilence: silence, hang: hangTimeout)
        let stateDir = self.stateDir
        watch.journal = {
            // Read-only: opening the journal creates nothing that is not there and writes nothing.
            guard FileManager.default.fileExists(atPath: stateDir + "/journal.log"),
                let live = try? Journal(directory: stateDir).replay().unreverted
            else { return nil }
            return (live.count, live.map(\.expiresAt.timeIntervalSince1970).min())
        }
        let verdict = watch.watch(input: 0)
        let say = { (s: String) in FileHandle.standardError.write(Data("chaos-agentd watchdog: \(s)\n".utf8)) }
        var args = ["reap", "--state-dir", stateDir]
        if let config { args += ["--config", config] }
        switch verdict {
        case .cleanExit:
            return
        case .died:
            say("agent \(agentPid) exited without reverting; reverting its faults from the journal")
            args += ["--wait-lock", "10"]
        case .hung(let why):
            say("agent \(agentPid) is hung (\(why)); freezing it, reverting every fault from the journal, killing it")
            args += ["--take-over", "--force", "--expect-pid", "\(agentPid)"]
        }
        let exe = HangWatchdogLink.executable
        let cArgs = ([exe] + args).map { strdup($0) } + [nil]
        execv(exe, cArgs)
        say("cannot exec \(exe): \(String(cString: strerror(errno)))")
        throw ExitCode(1)
    }
}

/// The watchdog's reading of the beats (separate from the process plumbing so unit tests drive it with a pipe).
struct HangWatch: Sendable {
    enum Verdict: Equatable {
        case cleanExit
        case died
        case hung(String)
    }

    var agentPID: Int32
    var dueSilence: Double
    var hang: Double
    var now: @Sendable () -> Double = { BootClock.seconds() }
    /// Faults the journal holds that are not reverted, and their earliest expiry in the agent's lease time (Unix
    /// seconds); nil when the journal cannot be read. Consulted (at most once a second) only while the agent is silent.
    var journal: @Sendable () -> (count: Int, earliestExpiry: Double?)? = { nil }

    func watch(input fd: Int32) -> Verdict {
        let pidfd = cshim_pidfd_open(agentPID, 0)
        defer { if pidfd >= 0 { close(pidfd) } }
        var lastBeat = now()
        var active = 0
        var nextDue: Double?
        var sawBye = false
        // Lease time minus boot time, from the last beat: maps the journal's deadlines onto this process's clock.
        var leaseOffset: Double?
        var lastJournalLook = -Double.infinity
        var journalCount = 0
        var journalDue: Double?
        var pending = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            var pfds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            if pidfd >= 0 { pfds.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
            // Quick while faults exist; once a second while the agent is idle (it does not beat then).
            let r = poll(&pfds, nfds_t(pfds.count), max(active, journalCount) > 0 || nextDue != nil ? 200 : 1000)
            if r < 0 && errno != EINTR { return .died }
            let t = now()
            if r > 0 && pfds[0].revents != 0 {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 {
                    if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                    return sawBye ? .cleanExit : .died
                }
                pending += buffer[0..<n]
                while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[..<nl], as: UTF8.self)
                    pending.removeSubrange(...nl)
                    if line == "bye" { sawBye = true; continue }
                    let parts = line.split(separator: " ")
                    guard parts.count >= 3, parts[0] == "B", let a = Int(parts[1]), let d = Double(parts[2]) else { continue }
                    lastBeat = t
                    active = a
                    nextDue = d < 0 ? nil : t + d
                    if parts.count >= 4, let leaseNow = Double(parts[3]) { leaseOffset = leaseNow - t }
                    journalCount = 0
                    journalDue = nil
                }
            }
            if pfds.count > 1 && pfds[1].revents != 0 {
                // The agent exited; whatever is still in the pipe was read above.
                return sawBye ? .cleanExit : .died
            }
            if t - lastBeat >= dueSilence && t - lastJournalLook >= 1, let seen = journal() {
                lastJournalLook = t
                // An idle agent is silent by design: silence counts from when its first fault shows up.
                if active == 0 && nextDue == nil && journalCount == 0 && seen.count > 0 { lastBeat = t }
                journalCount = seen.count
                if let expiry = seen.earliestExpiry, let offset = leaseOffset { journalDue = expiry - offset } else { journalDue = nil }
            }
            let silent = t - lastBeat
            for due in [nextDue, journalDue].compactMap({ $0 }) where silent >= dueSilence && t - due >= dueSilence {
                return .hung(String(format: "no beat for %.1fs while a deadline has been due for %.1fs", silent, t - due))
            }
            if max(active, journalCount) > 0 && silent >= hang {
                return .hung(String(format: "no beat for %.1fs with %d fault(s) active", silent, max(active, journalCount)))
            }
        }
    }
}
