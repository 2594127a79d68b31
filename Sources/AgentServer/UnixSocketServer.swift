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

/// Two `T`s side by side: `Twice<Twice<UInt32>>` is four gids. Sizes the SO_PEERGROUPS buffer (a fixed-size value,
/// as NIO's `unsafeGetSocketOption` takes) without spelling out a tuple of thousands of elements.
struct Twice<T: Sendable>: Sendable {
    var a: T
    var b: T
}
/// 64 gids, the buffer tried first.
typealias Gids64 = Twice<Twice<Twice<Twice<Twice<Twice<UInt32>>>>>>
/// 65,536 gids (NGROUPS_MAX), the buffer tried when 64 is too small (ERANGE).
typealias Gids65536 = Twice<Twice<Twice<Twice<Twice<Twice<Twice<Twice<Twice<Twice<Gids64>>>>>>>>>>

/// The peer's credentials as the kernel recorded them when it connected: SO_PEERCRED (pid, uid, primary gid) and
/// SO_PEERGROUPS (supplementary groups; Linux 4.13+). These are the credentials of the connecting process, not what
/// /etc/group says its user could have: a process started with `SupplementaryGroups=` or `setpriv --groups` holds
/// the group, one that dropped it (`setpriv --clear-groups`) does not.
struct PeerIdentity: Sendable {
    var credentials: PeerCredentials
    /// Supplementary gids, without 0: the kernel fills only as many entries as the peer has and NIO hands the buffer
    /// over zeroed, so a 0 cannot be told from an unused entry. Group 0 counts through the primary gid only.
    var groups: [UInt32]

    /// Reads both options from an accepted Unix-domain channel (on its event loop).
    static func read(_ channel: any Channel) -> EventLoopFuture<PeerIdentity> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeSucceededFuture(
                PeerIdentity(credentials: PeerCredentials(pid: 0, uid: UInt32.max, gid: UInt32.max), groups: []))
        }
        let level = NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET)
        let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: level, name: NIOBSDSocket.Option(rawValue: SO_PEERCRED))
        let groupsOption = NIOBSDSocket.Option(rawValue: SO_PEERGROUPS)
        let small: EventLoopFuture<[UInt32]> = provider.unsafeGetSocketOption(level: level, name: groupsOption)
            .map { (g: Gids64) in gids(g) }
        let groups = small.flatMapError { error -> EventLoopFuture<[UInt32]> in
            guard (error as? IOError)?.errnoCode == ERANGE else { return channel.eventLoop.makeFailedFuture(error) }
            return provider.unsafeGetSocketOption(level: level, name: groupsOption).map { (g: Gids65536) in gids(g) }
        }
        return credentials.flatMap { cred in
            // No SO_PEERGROUPS (an old kernel): only the primary gid counts, which never grants more than the kernel says.
            groups.map { PeerIdentity(credentials: cred, groups: $0) }
                .recover { _ in PeerIdentity(credentials: cred, groups: []) }
        }
    }

    static func gids<T>(_ buffer: T) -> [UInt32] {
        withUnsafeBytes(of: buffer) { raw in raw.bindMemory(to: UInt32.self).filter { $0 != 0 } }
    }
}

/// Maps peer credentials to a caller: root is `admin`, a process holding the socket group (as its primary gid or as
/// one of its supplementary groups, as the kernel recorded them at connect) is `operator` (inject, renew, revert
/// one fault), anyone else who can connect is a `viewer` (read only).
public struct PeerAuthorizer: Sendable {
    public var writerGroup: UInt32?

    public init(writerGroup: UInt32?) { self.writerGroup = writerGroup }

    /// `groups` are the peer's supplementary groups from SO_PEERGROUPS; /etc/group is never consulted.
    public func caller(uid: UInt32, gid: UInt32, groups: [UInt32] = [], pid: Int32) -> Caller {
        let name = Self.userName(uid)
        let identity = name.map { "unix:\($0)" } ?? "unix:uid=\(uid)"
        var role = Role.viewer
        if uid == 0 {
            role = .admin
        } else if let g = writerGroup, gid == g || groups.contains(g) {
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
        /// Most connections held at once, and from one uid (root's count against `perPeer` only).
        public var maxConnections: Int
        public var perPeer: Int
        /// A connection sending no request head within this (of connecting or of its last answer) is closed.
        public var idle: Duration
        public init(
            path: String, mode: UInt32, group: UInt32?, maxBody: Int, maxConnections: Int = 256, perPeer: Int = 32,
            idle: Duration = .seconds(10)
        ) {
            self.path = path
            self.mode = mode
            self.group = group
            self.maxBody = maxBody
            self.maxConnections = maxConnections
            self.perPeer = perPeer
            self.idle = idle
        }
    }

    let options: Options
    let router: APIRouter
    let authorizer: PeerAuthorizer
    let logger: Logger
    let onListening: @Sendable () -> Void
    let http: HTTPService
    let gate: ConnectionGate

    public init(
        options: Options, router: APIRouter, logger: Logger, onListening: @escaping @Sendable () -> Void = {}
    ) {
        self.options = options
        self.router = router
        self.authorizer = PeerAuthorizer(writerGroup: options.group)
        self.logger = logger
        self.onListening = onListening
        self.http = HTTPService(
            handle: { await router.handle($0, caller: $1) },
            limits: ConnectionLimits(idle: TimeAmount(options.idle), maxBody: options.maxBody), logger: logger)
        self.gate = ConnectionGate(
            listener: "socket", total: options.maxConnections, perPeer: options.perPeer, logger: logger)
    }

    public func run() async throws {
        try prepareSocketPath()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .bind(unixDomainSocketPath: options.path, cleanupExistingSocketFile: false) { channel in
                let limits = self.http.limits
                let gate = self.gate
                return PeerIdentity.read(channel).flatMapThrowing { peer -> Admitted<PeerIdentity> in
                    let uid = peer.credentials.uid
                    if let refusal = gate.admit(channel, peer: "uid=\(uid)", privileged: uid == 0) {
                        try channel.pipeline.syncOperations.addHandler(
                            RefuseHandler(farewell: ConnectionGate.refusalResponse(refusal, listener: "socket")))
                        return .refused
                    }
                    return .serve(try HTTPService.configure(channel, limits: limits), peer)
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
            metadata: [
                "socket": "\(options.path)", "mode": "\(String(options.mode, radix: 8))",
                "gid": "\(options.group.map(String.init) ?? "-")", "maxConnections": "\(options.maxConnections)",
                "perPeer": "\(options.perPeer)",
            ])
        onListening()

        try await HTTPService.acceptLoop(server) { connection, peer in
            let cred = peer.credentials
            await self.http.serve(connection, peer: "unix:pid=\(cred.pid)") {
                .success(self.authorizer.caller(uid: cred.uid, gid: cred.gid, groups: peer.groups, pid: cred.pid))
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
