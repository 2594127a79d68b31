import CMNL
import CShims
import Foundation
import Glibc
import Synchronization

/// What `RTNetlink` needs from a netlink socket: send one request, receive one datagram. Tests substitute a recording
/// transport; production uses `MNLSocket`.
public protocol NetlinkTransport: Sendable {
    /// The socket's netlink port id (nl_pid), which replies carry.
    var portID: UInt32 { get }
    /// Sends one complete message.
    func send(_ message: [UInt8]) throws(NetlinkError)
    /// Receives one datagram (one or more messages).
    func receive() throws(NetlinkError) -> [UInt8]
}

/// A NETLINK_ROUTE socket opened with libmnl, bound inside a chosen network namespace.
///
/// Options set: NETLINK_CAP_ACK (ACKs echo only the request header), NETLINK_EXT_ACK (the kernel explains errors),
/// NETLINK_GET_STRICT_CHK (dump requests are validated and may be filtered by the kernel), a 1 MiB send buffer (a
/// netem distribution table makes a request of ~8.3 KiB) and a receive timeout so a lost reply cannot hang a caller.
public final class MNLSocket: NetlinkTransport, @unchecked Sendable {
    // @unchecked: `socket` is immutable after init and libmnl's send/recv are plain syscalls on its fd; `RTNetlink`
    // serializes request/reply exchanges itself.
    private let socket: OpaquePointer
    public let portID: UInt32
    /// Large enough for a whole dump datagram (the kernel caps those at 32 KiB).
    static let receiveBufferSize = 64 * 1024

    /// Opens the socket in `namespace`. For any namespace but `.current` this happens on a dedicated thread that
    /// setns(2)es into the target and back, so no thread of the agent is ever left in another namespace (the thread
    /// exits when done either way); the socket stays bound to the namespace it was created in.
    public convenience init(namespace: NetworkNamespace = .current, receiveTimeout: Duration = .seconds(10)) throws(NetlinkError) {
        guard let ns = namespace.validated else {
            throw NetlinkError(operation: "open netlink socket in \(namespace)", errno: EINVAL)
        }
        guard let path = ns.path else {
            try self.init(openingIn: "current netns", receiveTimeout: receiveTimeout)
            return
        }
        let opened = try MNLSocket.onDedicatedThread { () throws(NetlinkError) -> OpaquePointer in
            let operation = "open netlink socket in \(ns)"
            let target = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard target >= 0 else { throw NetlinkError(operation: "\(operation): open \(path)", errno: Glibc.errno) }
            defer { close(target) }
            let original = Glibc.open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
            guard original >= 0 else {
                throw NetlinkError(operation: "\(operation): open own netns", errno: Glibc.errno)
            }
            defer { close(original) }
            guard cshim_setns_net(target) == 0 else {
                throw NetlinkError(operation: "\(operation): setns", errno: Glibc.errno)
            }
            // Returning is belt and braces: this thread exits right after, so even a failure here strands nothing.
            defer { _ = cshim_setns_net(original) }
            return try MNLSocket.openConfigured(operation: operation, receiveTimeout: receiveTimeout)
        }
        self.init(adopting: opened)
    }

    private convenience init(openingIn what: String, receiveTimeout: Duration) throws(NetlinkError) {
        self.init(adopting: try MNLSocket.openConfigured(operation: "open netlink socket in \(what)", receiveTimeout: receiveTimeout))
    }

    private init(adopting socket: OpaquePointer) {
        self.socket = socket
        self.portID = mnl_socket_get_portid(socket)
    }

    deinit { mnl_socket_close(socket) }

    private static func openConfigured(operation: String, receiveTimeout: Duration) throws(NetlinkError) -> OpaquePointer {
        guard let nl = mnl_socket_open2(NETLINK_ROUTE, Int32(SOCK_CLOEXEC.rawValue)) else {
            throw NetlinkError(operation: operation, errno: Glibc.errno)
        }
        var one: Int32 = 1
        for option in [NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK] {
            // Best effort: an old kernel without one of these still works, with less helpful errors.
            _ = mnl_socket_setsockopt(nl, option, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let fd = mnl_socket_get_fd(nl)
        var sendBuffer: Int32 = 1 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sendBuffer, socklen_t(MemoryLayout<Int32>.size))
        let (seconds, attoseconds) = receiveTimeout.components
        var timeout = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard mnl_socket_bind(nl, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let saved = Glibc.errno
            mnl_socket_close(nl)
            throw NetlinkError(operation: "\(operation): bind", errno: saved)
        }
        return nl
    }

    public func send(_ message: [UInt8]) throws(NetlinkError) {
        while true {
            let sent = message.withUnsafeBytes { mnl_socket_sendto(socket, $0.baseAddress, $0.count) }
            if sent == message.count { return }
            if sent < 0, Glibc.errno == EINTR { continue }
            throw NetlinkError(operation: "netlink send", errno: sent < 0 ? Glibc.errno : EMSGSIZE)
        }
    }

    public func receive() throws(NetlinkError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: MNLSocket.receiveBufferSize)
        while true {
            // mnl_socket_recvfrom reports a truncated datagram (MSG_TRUNC) as ENOSPC.
            let got = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(socket, $0.baseAddress, $0.count) }
            if got >= 0 { return Array(buffer[0..<got]) }
            if Glibc.errno == EINTR { continue }
            let saved = Glibc.errno
            throw NetlinkError(
                operation: saved == EAGAIN ? "netlink receive (timed out waiting for the kernel)" : "netlink receive",
                errno: saved)
        }
    }

    /// Runs `body` on a fresh thread and waits for it: the thread may change per-thread state (its network
    /// namespace) and dies afterwards.
    private static func onDedicatedThread<T>(_ body: @escaping @Sendable () throws(NetlinkError) -> T) throws(NetlinkError) -> T {
        let box = ThreadResult<T>()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            do throws(NetlinkError) { box.result = Result.success(try body()) } catch { box.result = Result.failure(error) }
            done.signal()
        }
        thread.name = "netns-socket"
        thread.start()
        done.wait()
        return try box.result!.get()
    }
}

/// A result handed from a dedicated thread: written before the thread signals, read after the waiter wakes.
private final class ThreadResult<T>: @unchecked Sendable {
    var result: Result<T, NetlinkError>?
}
