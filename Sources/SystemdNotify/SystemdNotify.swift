import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Talks to the service manager through the `sd_notify` datagram protocol, without linking libsystemd.
///
/// The protocol is stable (see `man sd_notify`): the manager puts the path of a datagram socket in `NOTIFY_SOCKET`;
/// the service sends newline-separated `KEY=VALUE` assignments to it, one datagram per message. A path that starts
/// with `/` names a socket in the file system; one that starts with `@` names a socket in the abstract namespace.
///
/// Without `NOTIFY_SOCKET` (run by hand, under a test, or by a manager that is not systemd) every call does nothing
/// and returns `false`, so callers never need to check whether they run under systemd.
///
/// ```swift
/// let notifier = SystemdNotifier()
/// // ... reconcile the journal, bind the socket ...
/// notifier.ready(status: "serving on /run/chaos-agent/agent.sock")
/// if let every = notifier.watchdogPingInterval { /* send notifier.watchdog() every `every` while healthy */ }
/// // ... on SIGTERM:
/// notifier.stopping()
/// ```
///
/// The value is immutable and `Sendable`; every send opens, uses and closes its own socket, so one notifier can be
/// shared by any number of tasks.
public struct SystemdNotifier: Sendable {
    /// Where notifications go, parsed from `NOTIFY_SOCKET`.
    public enum Destination: Sendable, Hashable {
        /// A socket in the file system (`NOTIFY_SOCKET=/run/systemd/notify`).
        case path(String)
        /// A socket in the abstract namespace (`NOTIFY_SOCKET=@name`), stored without the leading `@`.
        case abstract(String)
    }

    /// The destination, or `nil` when `NOTIFY_SOCKET` is absent, empty or of a kind this notifier cannot reach
    /// (a relative path, or `vsock:` from newer systemd). When `nil`, every send is a no-op that returns `false`.
    public let destination: Destination?

    private let watchdogMicroseconds: UInt64?

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from `environment`.
    ///
    /// - Parameter environment: the process environment; tests pass their own.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.init(environment: environment, pid: getpid())
    }

    /// Like ``init(environment:)``, comparing `WATCHDOG_PID` with `pid` instead of this process's id.
    public init(environment: [String: String], pid: pid_t) {
        destination = Self.parseDestination(environment["NOTIFY_SOCKET"])
        watchdogMicroseconds = Self.parseWatchdog(
            usec: environment["WATCHDOG_USEC"], pid: environment["WATCHDOG_PID"], ourPID: pid)
    }

    /// Whether notifications have somewhere to go (the process was started with a usable `NOTIFY_SOCKET`).
    public var isEnabled: Bool { destination != nil }

    /// The watchdog timeout systemd enforces (`WatchdogSec=`), from `WATCHDOG_USEC`.
    ///
    /// `nil` when the watchdog is off: `WATCHDOG_USEC` absent, zero or not a number, or `WATCHDOG_PID` set to
    /// another process (the variable was inherited, the watchdog is not ours) or to something that is not a number.
    /// When non-nil, send ``watchdog()`` well within it; ``watchdogPingInterval`` is the customary half.
    public var watchdogInterval: Duration? {
        watchdogMicroseconds.map { .microseconds($0) }
    }

    /// Half of ``watchdogInterval``: how often to send ``watchdog()``, as `man sd_watchdog_enabled` recommends.
    public var watchdogPingInterval: Duration? {
        watchdogMicroseconds.map { .microseconds($0 / 2) }
    }

    /// Sends `state` (one or more newline-separated `KEY=VALUE` assignments) as one datagram.
    ///
    /// Never throws and never traps: any failure (no `NOTIFY_SOCKET`, address too long, socket or send error)
    /// returns `false`. A send blocks for at most about two seconds if the manager's queue is full.
    ///
    /// - Returns: `true` if the whole datagram was handed to the kernel.
    @discardableResult
    public func send(_ state: String) -> Bool {
        guard let destination, !state.isEmpty else { return false }
        #if canImport(Glibc) || canImport(Musl)
            return Self.sendDatagram(Array(state.utf8), to: destination)
        #else
            return false
        #endif
    }

    /// Tells the manager that start-up is complete (`READY=1`), optionally with a `STATUS=` line.
    ///
    /// With `Type=notify`, systemd considers the unit started (and starts units ordered after it) only now, so send
    /// this after the journal has been reconciled and the API socket is accepting connections.
    @discardableResult
    public func ready(status: String? = nil) -> Bool {
        send(Self.message("READY=1", status: status))
    }

    /// Tells the manager that the service is shutting down (`STOPPING=1`).
    @discardableResult
    public func stopping(status: String? = nil) -> Bool {
        send(Self.message("STOPPING=1", status: status))
    }

    /// Tells the manager the service is reloading its configuration (`RELOADING=1`). Send ``ready(status:)`` when
    /// done. systemd 253 and later also want `MONOTONIC_USEC=`, which is included.
    @discardableResult
    public func reloading(status: String? = nil) -> Bool {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let usec = UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1_000
        return send(Self.message("RELOADING=1\nMONOTONIC_USEC=\(usec)", status: status))
    }

    /// Sets the free-form status line shown by `systemctl status` (`STATUS=...`). Newlines become spaces.
    @discardableResult
    public func status(_ text: String) -> Bool {
        send("STATUS=" + Self.oneLine(text))
    }

    /// Keeps the watchdog from firing (`WATCHDOG=1`). Send only while the service is really healthy.
    @discardableResult
    public func watchdog() -> Bool {
        send("WATCHDOG=1")
    }

    /// Asks for more time to finish starting, reloading or stopping (`EXTEND_TIMEOUT_USEC=`): the current timeout
    /// becomes at least `duration` from now. Useful when reverting many faults takes longer than `TimeoutStopSec=`.
    @discardableResult
    public func extendTimeout(by duration: Duration) -> Bool {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return false }
        // Clamped rather than trapping on overflow: a silly duration must not crash the daemon.
        let usec =
            UInt64(min(seconds, Int64(UInt64.max / 1_000_000) - 1)) * 1_000_000
            + UInt64(attoseconds / 1_000_000_000_000)
        return send("EXTEND_TIMEOUT_USEC=\(usec)")
    }

    // MARK: - Parsing

    static func parseDestination(_ value: String?) -> Destination? {
        guard let value, let first = value.first else { return nil }
        switch first {
        case "/": return .path(value)
        case "@": return value.count > 1 ? .abstract(String(value.dropFirst())) : nil
        default: return nil
        }
    }

    static func parseWatchdog(usec: String?, pid: String?, ourPID: pid_t) -> UInt64? {
        guard let usec, let value = UInt64(usec), value > 0 else { return nil }
        if let pid {
            // Set but unparsable is treated as "not for us", like sd_watchdog_enabled's -EINVAL.
            guard let owner = pid_t(pid), owner == ourPID else { return nil }
        }
        return value
    }

    private static func message(_ head: String, status: String?) -> String {
        guard let status else { return head }
        return head + "\nSTATUS=" + oneLine(status)
    }

    // A newline inside STATUS= would start a new assignment.
    private static func oneLine(_ text: String) -> String {
        text.replacingOccurrences(of: "\r\n", with: " ")
            .replacingOccurrences(of: "\n", with: " ")
            .replacingOccurrences(of: "\r", with: " ")
    }

    // MARK: - Socket

    #if canImport(Glibc) || canImport(Musl)
        /// Builds the `sockaddr_un` for `destination`; `nil` if the name does not fit.
        static func socketAddress(for destination: Destination) -> (sockaddr_un, socklen_t)? {
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let capacity = MemoryLayout.size(ofValue: address.sun_path)
            let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path) ?? 2
            let bytes: [UInt8]
            let length: Int
            switch destination {
            case .path(let path):
                // Room for the terminating NUL, which the length includes (as sd_notify does).
                bytes = Array(path.utf8)
                guard !bytes.contains(0), bytes.count < capacity else { return nil }
                length = pathOffset + bytes.count + 1
            case .abstract(let name):
                // Leading NUL, then the name; the length covers exactly those bytes and no trailing NUL, because
                // in the abstract namespace every byte of the address is significant.
                bytes = [0] + Array(name.utf8)
                guard bytes.count <= capacity else { return nil }
                length = pathOffset + bytes.count
            }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: bytes)
            }
            return (address, socklen_t(length))
        }

        private static func sendDatagram(_ payload: [UInt8], to destination: Destination) -> Bool {
            guard let resolved = socketAddress(for: destination) else { return false }
            var address = resolved.0
            let length = resolved.1
            #if canImport(Glibc)
                let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            #else
                let type = SOCK_DGRAM | SOCK_CLOEXEC
            #endif
            let fd = socket(AF_UNIX, type, 0)
            guard fd >= 0 else { return false }
            defer { close(fd) }

            // A datagram send blocks while the receiver's queue is full; bound that so a stuck manager can never
            // wedge the caller (the watchdog task, or shutdown).
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

            let sent: Int = payload.withUnsafeBytes { buffer in
                withUnsafePointer(to: &address) { pointer in
                    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                        while true {
                            let n = sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), sa, length)
                            if n < 0 && errno == EINTR { continue }
                            return n
                        }
                    }
                }
            }
            return sent == payload.count
        }
    #endif
}
