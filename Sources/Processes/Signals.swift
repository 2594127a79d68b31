import CShims
import Foundation

/// What happened when a signal was sent to a recorded process.
public enum SignalOutcome: String, Sendable, Codable {
    /// The kernel accepted the signal for exactly the recorded process.
    case delivered
    /// The recorded process no longer exists (exited, or its PID now names another process): nothing was sent.
    case gone
}

/// An error from a system call, with the call's name and errno.
public struct SystemCallError: Error, CustomStringConvertible, Sendable {
    public var call: String
    public var errno: Int32
    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }
    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// Signals processes through pidfds, re-checking the start time after the pidfd is open so that a recycled PID is
/// never signalled.
public struct ProcessSignaller: Sendable {
    public var procfs: ProcFS

    public init(procfs: ProcFS = ProcFS()) { self.procfs = procfs }

    /// Whether this kernel has pidfd_open (Linux 5.3+).
    public static var pidfdSupported: Bool {
        let fd = cshim_pidfd_open(getpid(), 0)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    /// Sends `signal` to `target` if, and only if, it is still the process that was recorded.
    public func send(_ signal: Int32, to target: ProcessIdentity) throws -> SignalOutcome {
        let fd = cshim_pidfd_open(target.pid, 0)
        if fd < 0 {
            if errno == ESRCH { return .gone }
            throw SystemCallError("pidfd_open(\(target.pid))", errno: errno)
        }
        defer { close(fd) }
        // The pidfd pins whichever process holds the PID now; make sure it is the recorded one.
        guard let now = procfs.process(target.pid), now.startTime == target.startTime else { return .gone }
        if cshim_pidfd_send_signal(fd, signal) != 0 {
            if errno == ESRCH { return .gone }
            throw SystemCallError("pidfd_send_signal(\(target.pid), \(Self.name(of: signal)))", errno: errno)
        }
        return .delivered
    }

    /// Signal number for `KILL`, `SIGKILL`, `kill`, `9`. Nil for anything else.
    public static func number(for name: String) -> Int32? {
        let upper = name.uppercased()
        if let n = Int32(upper), n > 0, n < 65 { return n }
        let bare = upper.hasPrefix("SIG") ? String(upper.dropFirst(3)) : upper
        return signalTable.first(where: { $0.1 == bare })?.0
    }

    /// `KILL` for 9, and so on; `SIG<n>` for numbers without a name.
    public static func name(of signal: Int32) -> String {
        signalTable.first(where: { $0.0 == signal }).map { "SIG" + $0.1 } ?? "SIG\(signal)"
    }

    static let signalTable: [(Int32, String)] = [
        (SIGHUP, "HUP"), (SIGINT, "INT"), (SIGQUIT, "QUIT"), (SIGILL, "ILL"), (SIGTRAP, "TRAP"), (SIGABRT, "ABRT"),
        (SIGBUS, "BUS"), (SIGFPE, "FPE"), (SIGKILL, "KILL"), (SIGUSR1, "USR1"), (SIGSEGV, "SEGV"), (SIGUSR2, "USR2"),
        (SIGPIPE, "PIPE"), (SIGALRM, "ALRM"), (SIGTERM, "TERM"), (SIGCHLD, "CHLD"), (SIGCONT, "CONT"),
        (SIGSTOP, "STOP"), (SIGTSTP, "TSTP"), (SIGTTIN, "TTIN"), (SIGTTOU, "TTOU"), (SIGURG, "URG"),
        (SIGXCPU, "XCPU"), (SIGXFSZ, "XFSZ"), (SIGVTALRM, "VTALRM"), (SIGPROF, "PROF"), (SIGWINCH, "WINCH"),
        (SIGIO, "IO"), (SIGPWR, "PWR"), (SIGSYS, "SYS"),
    ]
}
