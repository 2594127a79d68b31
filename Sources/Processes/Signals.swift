import CShims
import Foundation

/// What happened when a signal was sent to a recorded process.
public enum SignalOutcome: String, Sendable, Codable {
    /// The kernel accepted the signal for exactly the recorded process.
    case delivered
    /// The recorded process no longer exists (exited, or its PID now names another process, or it no longer
    /// matches what selected it): nothing was sent.
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

/// The three pidfd system calls (the kernel's by default; tests replace them to simulate PID reuse).
public protocol PidfdCalls: Sendable {
    /// pidfd_open: a descriptor, or -1 with `errno` set.
    func open(_ pid: Int32) -> Int32
    /// pidfd_send_signal: 0, or -1 with `errno` set.
    func sendSignal(_ fd: Int32, _ signal: Int32) -> Int32
    func close(_ fd: Int32)
}

public struct KernelPidfds: PidfdCalls {
    public init() {}
    public func open(_ pid: Int32) -> Int32 { cshim_pidfd_open(pid, 0) }
    public func sendSignal(_ fd: Int32, _ signal: Int32) -> Int32 { cshim_pidfd_send_signal(fd, signal) }
    public func close(_ fd: Int32) { closeDescriptor(fd) }
}

private func closeDescriptor(_ fd: Int32) { close(fd) }

/// A pidfd: it names one process for as long as it is open, whatever happens to the PID. Closed on deinit.
public final class ProcessHandle: Sendable {
    public let identity: ProcessIdentity
    let fd: Int32
    let calls: any PidfdCalls

    init(identity: ProcessIdentity, fd: Int32, calls: any PidfdCalls) {
        self.identity = identity
        self.fd = fd
        self.calls = calls
    }

    deinit { calls.close(fd) }

    /// Sends `signal` to exactly this process; `.gone` when it has exited (it may still be a zombie).
    public func send(_ signal: Int32) throws -> SignalOutcome {
        if calls.sendSignal(fd, signal) != 0 {
            if errno == ESRCH { return .gone }
            throw SystemCallError(
                "pidfd_send_signal(\(identity.pid), \(ProcessSignaller.name(of: signal)))", errno: errno)
        }
        return .delivered
    }
}

/// Signals processes through pidfds. The pidfd is opened FIRST and /proc is read while it is held, so what was read
/// (start time, name, command line) describes the process the pidfd pins, or that process has exited and the signal
/// goes nowhere: a PID recycled even within one start-time clock tick is never signalled.
public struct ProcessSignaller: Sendable {
    public var procfs: ProcFS
    public var calls: any PidfdCalls

    public init(procfs: ProcFS = ProcFS(), calls: any PidfdCalls = KernelPidfds()) {
        self.procfs = procfs
        self.calls = calls
    }

    /// Whether this kernel has pidfd_open (Linux 5.3+).
    public static var pidfdSupported: Bool {
        let fd = cshim_pidfd_open(getpid(), 0)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    /// Opens a pidfd on whatever process holds `pid`, then reads it from /proc. Nil when there is none (or it
    /// exited in between, so /proc may already show a successor: a successor cannot be signalled through the
    /// pidfd). With `expecting`, also nil unless the start time is the recorded one.
    public func pin(_ pid: Int32, expecting: ProcessIdentity? = nil) throws -> (ProcessHandle, HostProcess)? {
        let fd = calls.open(pid)
        if fd < 0 {
            if errno == ESRCH || errno == EINVAL { return nil }
            throw SystemCallError("pidfd_open(\(pid))", errno: errno)
        }
        // From here the handle owns fd (closed when it is released).
        guard let now = procfs.process(pid) else {
            calls.close(fd)
            return nil
        }
        let handle = ProcessHandle(identity: now.identity, fd: fd, calls: calls)
        if let expecting, expecting.startTime != now.startTime { return nil }
        return (handle, now)
    }

    /// Sends `signal` to `target` if, and only if, it is still the process that was recorded: same start time, and
    /// `stillIt` (for example the name pattern that selected it) holds for what /proc shows while the pidfd is held.
    public func send(
        _ signal: Int32, to target: ProcessIdentity, stillIt: (HostProcess) throws -> Bool = { _ in true }
    ) throws -> SignalOutcome {
        guard let (handle, now) = try pin(target.pid, expecting: target), try stillIt(now) else { return .gone }
        return try handle.send(signal)
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
