import AgentAPI
import AgentCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// SO_PEERCRED's `struct ucred`.
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// Maps peer credentials to a caller: root is `admin`, members of the socket group are `operator` (inject, renew,
/// revert one fault), anyone else who can connect is a `viewer` (read only).
public struct PeerAuthorizer: Sendable {
    public var writerGroup: UInt32?

    public init(writerGroup: UInt32?) { self.writerGroup = writerGroup }

    public func caller(uid: UInt32, gid: UInt32, pid: Int32) -> Caller {
        let name = Self.userName(uid)
        let identity = name.map { "unix:\($0)" } ?? "unix:uid=\(uid)"
        var role = Role.viewer
        if uid == 0 {
            role = .admin
        } else if let g = writerGroup,
            gid == g || Self.supplementaryGroups(uid: uid, name: name, primary: gid).contains(g)
        {
            role = .operator
        }
        return Caller(identity: identity, role: role, pid: pid > 0 ? pid : nil)
    }

    static func userName(_ uid: UInt32) -> String? {
        var pwd = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buf = [CChar](repeating: 0, count: 4096)
        guard getpwuid_r(uid, &pwd, &buf, buf.count, &result) == 0, result != nil, let n = pwd.pw_name else {
            return nil
        }
        return String(cString: n)
    }

    static func supplementaryGroups(uid: UInt32, name: String?, primary: UInt32) -> [UInt32] {
        guard let name else { return [] }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(name, primary, &groups, &count) == -1 {
            groups = [gid_t](repeating: 0, count: Int(count))
            guard getgrouplist(name, primary, &groups, &count) != -1 else { return [] }
        }
        return Array(groups.prefix(Int(count)))
    }

    /// The gid of a group by name, or nil when there is no such group.
    public static func groupID(named name: String) -> UInt32? {
        var grp = group()
        var result: UnsafeMutablePointer<group>?
        var buf = [CChar](repeating: 0, count: 8192)
        guard getgrnam_r(name, &grp, &buf, buf.count, &result) == 0, result != nil else { return nil }
        return grp.gr_gid
    }
}

/// HTTP/1.1 over a Unix-domain socket with SwiftNIO: binds the socket (mode and group as configured), identifies
/// every connection by SO_PEERCRED, caps request bodies, and hands requests to the `APIRouter`.
/// As a `Service`, it stops accepting on graceful shutdown and ends open connections.
public final class UnixSocketServer: Service, Sendable {
    public struct Options: Sendable {
        public var path: String
        public var mode: UInt32
        public var group: UInt32?
        public var maxBody: Int
        public init(path: String, mode: UInt32, group: UInt32?, maxBody: Int) {
            self.path = path
            self.mode = mode
            self.group = group
            self.maxBody = maxBody
        }
    }

    let options: Options
    let router: APIRouter
    let authorizer: PeerAuthorizer
    let logger: Logger
    let onListening: @Sendable () -> Void
    let http: HTTPService

    public init(
        options: Options, router: APIRouter, logger: Logger, onListening: @escaping @Sendable () -> Void = {}
    ) {
        self.options = options
        self.router = router
        self.authorizer = PeerAuthorizer(writerGroup: options.group)
        self.logger = logger
        self.onListening = onListening
        self.http = HTTPService(
            handle: { await router.handle($0, caller: $1) }, limits: ConnectionLimits(maxBody: options.maxBody),
            logger: logger)
    }

    public func run() async throws {
        try prepareSocketPath()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .bind(unixDomainSocketPath: options.path, cleanupExistingSocketFile: false) { channel in
                let provider = channel as? any SocketOptionProvider
                let credentials: EventLoopFuture<PeerCredentials> =
                    provider?.unsafeGetSocketOption(
                        level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET),
                        name: NIOBSDSocket.Option(rawValue: SO_PEERCRED))
                    ?? channel.eventLoop.makeSucceededFuture(PeerCredentials(pid: 0, uid: UInt32.max, gid: UInt32.max))
                let limits = self.http.limits
                return credentials.flatMapThrowing { cred in
                    (try HTTPService.configure(channel, limits: limits), cred)
                }
            }
        guard chmod(options.path, mode_t(options.mode)) == 0 else {
            throw AgentError.failed("chmod \(options.path): \(String(cString: strerror(errno)))")
        }
        if let g = options.group, chown(options.path, 0, g) != 0 {
            logger.warning("cannot give the socket to its group", metadata: ["error": "\(String(cString: strerror(errno)))"])
        }
        logger.info(
            "listening",
            metadata: ["socket": "\(options.path)", "mode": "\(String(options.mode, radix: 8))", "gid": "\(options.group.map(String.init) ?? "-")"])
        onListening()

        try await HTTPService.acceptLoop(server) { connection, cred in
            await self.http.serve(connection, peer: "unix:pid=\(cred.pid)") {
                .success(self.authorizer.caller(uid: cred.uid, gid: cred.gid, pid: cred.pid))
            }
        }
        unlink(options.path)
    }

    private func prepareSocketPath() throws {
        let dir = (options.path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        var st = stat()
        guard lstat(options.path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw AgentError.failed("\(options.path) exists and is not a socket; refusing to replace it")
        }
        if Self.someoneListens(at: options.path) {
            throw AgentError.failed("another agent is already serving on \(options.path)")
        }
        unlink(options.path)
    }

    static func someoneListens(at path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }

}
