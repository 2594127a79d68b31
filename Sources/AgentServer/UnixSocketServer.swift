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

/// Maps peer credentials to a caller: root and members of the socket group may change faults; anyone else who can
/// connect may only read.
public struct PeerAuthorizer: Sendable {
    public var writerGroup: UInt32?

    public init(writerGroup: UInt32?) { self.writerGroup = writerGroup }

    public func caller(uid: UInt32, gid: UInt32, pid: Int32) -> Caller {
        let name = Self.userName(uid)
        let identity = name.map { "unix:\($0)" } ?? "unix:uid=\(uid)"
        var writer = uid == 0
        if !writer, let g = writerGroup {
            writer = gid == g || Self.supplementaryGroups(uid: uid, name: name, primary: gid).contains(g)
        }
        return Caller(identity: identity, role: writer ? .writer : .reader, pid: pid > 0 ? pid : nil)
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

    public init(
        options: Options, router: APIRouter, logger: Logger, onListening: @escaping @Sendable () -> Void = {}
    ) {
        self.options = options
        self.router = router
        self.authorizer = PeerAuthorizer(writerGroup: options.group)
        self.logger = logger
        self.onListening = onListening
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
                return credentials.flatMapThrowing { cred in
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    let async = try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel)
                    return (async, cred)
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

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await (connection, cred) in connections {
                        group.addTask { await self.serve(connection, cred) }
                    }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
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

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, _ cred: PeerCredentials) async {
        let caller = authorizer.caller(uid: cred.uid, gid: cred.gid, pid: cred.pid)
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var body = ByteBuffer()
                for try await part in inbound {
                    switch part {
                    case .head(let h):
                        head = h
                        body.clear()
                        if let length = h.headers.first(name: "content-length").flatMap(Int.init), length > options.maxBody {
                            try await write(APIRouter.error(.tooLarge("request body is \(length) bytes; the limit is \(options.maxBody)")), head: h, to: outbound, close: true)
                            return
                        }
                    case .body(var chunk):
                        if body.readableBytes + chunk.readableBytes > options.maxBody, let h = head {
                            try await write(APIRouter.error(.tooLarge("request body is over the limit of \(options.maxBody) bytes")), head: h, to: outbound, close: true)
                            return
                        }
                        body.writeBuffer(&chunk)
                    case .end:
                        guard let h = head else { continue }
                        head = nil
                        var headers: [String: String] = [:]
                        for (name, value) in h.headers { headers[name] = value }
                        let request = APIRequest(
                            method: h.method.rawValue, path: h.uri, headers: headers,
                            body: Data(body.readableBytesView))
                        let response = await router.handle(request, caller: caller)
                        // Audit: every call that may change something, with who made it and the outcome.
                        if h.method != .GET && h.method != .HEAD {
                            logger.info(
                                "request",
                                metadata: [
                                    "event": "api", "caller": "\(caller.identity)", "pid": "\(cred.pid)",
                                    "method": "\(h.method.rawValue)", "path": "\(h.uri)", "status": "\(response.status)",
                                ])
                        }
                        let keepAlive = h.isKeepAlive
                        try await write(response, head: h, to: outbound, close: !keepAlive)
                        if !keepAlive { return }
                        if case .events = response { return }
                    }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    private func write(
        _ response: APIResponse, head: HTTPRequestHead, to out: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
        close: Bool
    ) async throws {
        switch response {
        case .json(let status, let data):
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(data.count + 1))
            headers.add(name: "Server", value: "chaos-agentd")
            if close { headers.add(name: "Connection", value: "close") }
            try await out.write(.head(HTTPResponseHead(version: head.version, status: .init(statusCode: status), headers: headers)))
            if head.method != .HEAD {
                var buf = ByteBuffer(bytes: data)
                buf.writeString("\n")
                try await out.write(.body(.byteBuffer(buf)))
            }
            try await out.write(.end(nil))
        case .events(let stream):
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "text/event-stream")
            headers.add(name: "Cache-Control", value: "no-cache")
            headers.add(name: "Server", value: "chaos-agentd")
            try await out.write(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers)))
            // An initial comment so clients see the stream open before the first event.
            try await out.write(.body(.byteBuffer(ByteBuffer(string: ": chaos-agentd events\n\n"))))
            let encoder = WireCoding.encoder()
            for await event in stream {
                let json = String(decoding: try encoder.encode(event), as: UTF8.self)
                try await out.write(.body(.byteBuffer(ByteBuffer(string: "id: \(event.seq)\nevent: \(event.type.rawValue)\ndata: \(json)\n\n"))))
            }
            try await out.write(.end(nil))
        }
    }
}
