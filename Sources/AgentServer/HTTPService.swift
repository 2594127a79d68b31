import AgentAPI
import AgentCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// Limits every connection, whatever its transport: a client that opens a connection and sends nothing (or stops
/// half-way through its headers) is closed after `idle`; one that sent a request head but not all of its body within
/// `request` is closed too. Time spent answering (an apply, an event stream) is not limited.
public struct ConnectionLimits: Sendable {
    public var idle: TimeAmount
    public var request: TimeAmount
    public var maxBody: Int
    /// Caps on the request line and headers (414, 431).
    public var head = HeadLimits()

    public init(idle: TimeAmount = .seconds(75), request: TimeAmount = .seconds(15), maxBody: Int = 64 * 1024) {
        self.idle = idle
        self.request = request
        self.maxBody = maxBody
    }
}

/// Counts responses whose last byte has been written to the socket, so a connection that ends with
/// `Connection: close` is closed only after its answer is out (closing a NIO channel drops writes still pending).
final class ResponseTracker: Sendable {
    private struct State {
        var completed = 0
        var closed = false
        var waiters: [(Int, CheckedContinuation<Void, Never>)] = []
    }
    private let state = Mutex(State())

    func responseWritten() {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.completed += 1
            let due = s.waiters.filter { $0.0 <= s.completed }.map(\.1)
            s.waiters.removeAll { $0.0 <= s.completed }
            return due
        }
        ready.forEach { $0.resume() }
    }

    /// The connection is gone: nothing more will be written, so nobody may wait for it.
    func connectionClosed() {
        let all = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.closed = true
            defer { s.waiters.removeAll() }
            return s.waiters.map(\.1)
        }
        all.forEach { $0.resume() }
    }

    /// Returns once `count` responses have been written (or failed to be), or the connection has closed.
    func waitUntilWritten(_ count: Int) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.completed >= count || s.closed { return true }
                s.waiters.append((count, c))
                return false
            }
            if now { c.resume() }
        }
    }
}

/// Closes the connection when the client is too slow: armed on connect and after each response, re-armed with the
/// shorter request limit when a request head arrives, disarmed while the request is being answered.
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let limits: ConnectionLimits
    private let tracker: ResponseTracker
    private var timer: Scheduled<Void>?

    init(limits: ConnectionLimits, tracker: ResponseTracker) {
        self.limits = limits
        self.tracker = tracker
    }

    private func arm(_ context: ChannelHandlerContext, _ after: TimeAmount) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: after) { channel.close(promise: nil) }
    }

    func handlerAdded(context: ChannelHandlerContext) { arm(context, limits.idle) }
    func handlerRemoved(context: ChannelHandlerContext) { timer?.cancel() }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        tracker.connectionClosed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: arm(context, limits.request)
        case .body: break
        case .end:
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        arm(context, limits.idle)
        let written = promise ?? context.eventLoop.makePromise()
        let tracker = self.tracker
        written.futureResult.whenComplete { _ in tracker.responseWritten() }
        context.write(data, promise: written)
    }
}

/// HTTP/1.1 request handling shared by every listener (Unix socket, mutual TLS, plain metrics): body caps, keep-alive,
/// JSON/text/event-stream answers, and the audit line for every call that may change something.
struct HTTPService: Sendable {
    typealias Handler = @Sendable (APIRequest, Caller) async -> APIResponse
    let handle: Handler
    let limits: ConnectionLimits
    let logger: Logger

    /// One accepted connection, ready for `serve`.
    struct Connection: Sendable {
        let channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>
        let tracker: ResponseTracker
    }

    /// Adds the HTTP codec and the deadline handler, then wraps the channel for async use. Call on the event loop.
    static func configure(_ channel: any Channel, limits: ConnectionLimits) throws -> Connection {
        let tracker = ResponseTracker()
        let pending = PendingHeadBytes()
        try channel.pipeline.syncOperations.addHandler(RequestHeadGuard(limits: limits.head, pending: pending))
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withErrorHandling: false, withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits.head.decoder)
        try channel.pipeline.syncOperations.addHandler(HTTPErrorResponder(limits: limits.head, pending: pending))
        try channel.pipeline.syncOperations.addHandler(RequestDeadlineHandler(limits: limits, tracker: tracker))
        return Connection(
            channel: try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel),
            tracker: tracker)
    }

    /// Accepts connections until graceful shutdown (which closes the listening socket), each served in its own child
    /// task by `body`; open connections are cancelled when the listener ends.
    /// Connections refused at accept (over a `ConnectionGate` cap) are already being closed and are skipped.
    static func acceptLoop<Extra: Sendable>(
        _ server: NIOAsyncChannel<Admitted<Extra>, Never>,
        _ body: @escaping @Sendable (Connection, Extra) async -> Void
    ) async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await admitted in connections {
                        guard case .serve(let connection, let extra) = admitted else { continue }
                        group.addTask { await body(connection, extra) }
                    }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }

    /// Serves one connection. `identify` runs once, when the first request head has arrived (for TLS: after the
    /// handshake verified the client certificate); an error from it is answered and the connection closed.
    func serve(
        _ connection: Connection, peer: String,
        identify: @Sendable () async -> Result<Caller, AgentError>
    ) async {
        let tracker = connection.tracker
        var responses = 0
        do {
            try await connection.channel.executeThenClose { inbound, outbound in
                // Every way out of this closure closes the connection: first let the last answer reach the socket.
                func finish(_ response: APIResponse, _ head: HTTPRequestHead) async throws {
                    responses += 1
                    try await write(response, head: head, to: outbound, close: true)
                    await tracker.waitUntilWritten(responses)
                }
                var caller: Caller?
                var head: HTTPRequestHead?
                var body = ByteBuffer()
                for try await part in inbound {
                    switch part {
                    case .head(let h):
                        // The decoder refuses other major versions; HTTP/1.x with an odd minor is refused here.
                        guard h.version == .http1_1 || h.version == .http1_0 else {
                            try await finish(APIRouter.error(AgentError(
                                status: 505, code: "http-version-not-supported",
                                message: "HTTP/\(h.version.major).\(h.version.minor) is not supported; use HTTP/1.1")), h)
                            return
                        }
                        guard h.uri.utf8.count <= limits.head.maxTarget else {
                            try await finish(APIRouter.error(AgentError(
                                status: 414, code: "uri-too-long",
                                message: "the request target is over \(limits.head.maxTarget) bytes")), h)
                            return
                        }
                        if let twice = ["idempotency-key", "last-event-id", "content-length"].first(where: { h.headers[$0].count > 1 }) {
                            try await finish(
                                APIRouter.error(.badRequest("header \(twice) is given more than once", field: twice)), h)
                            return
                        }
                        if caller == nil {
                            switch await identify() {
                            case .success(let c): caller = c
                            case .failure(let e):
                                logger.warning(
                                    "request refused",
                                    metadata: [
                                        "event": "api", "peer": "\(peer)", "method": "\(h.method.rawValue)",
                                        "path": "\(h.uri)", "status": "\(e.status)", "error": "\(e.message)",
                                    ])
                                try await finish(APIRouter.error(e), h)
                                return
                            }
                        }
                        head = h
                        body.clear()
                        if let length = h.headers.first(name: "content-length").flatMap(Int.init), length > limits.maxBody {
                            try await finish(
                                APIRouter.error(.tooLarge("request body is \(length) bytes; the limit is \(limits.maxBody)")), h)
                            return
                        }
                    case .body(var chunk):
                        if body.readableBytes + chunk.readableBytes > limits.maxBody, let h = head {
                            try await finish(
                                APIRouter.error(.tooLarge("request body is over the limit of \(limits.maxBody) bytes")), h)
                            return
                        }
                        body.writeBuffer(&chunk)
                    case .end:
                        guard let h = head, let caller else { continue }
                        head = nil
                        var headers: [String: String] = [:]
                        for (name, value) in h.headers { headers[name] = value }
                        let request = APIRequest(
                            method: h.method.rawValue, path: h.uri, headers: headers, body: Data(body.readableBytesView))
                        let response = await handle(request, caller)
                        if h.method != .GET && h.method != .HEAD { audit(request, caller: caller, peer: peer, response: response) }
                        if !h.isKeepAlive {
                            try await finish(response, h)
                            return
                        }
                        responses += 1
                        try await write(response, head: h, to: outbound, close: false)
                        if case .events = response { return }
                    }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
    }

    /// Audit: every call that may change something, with who made it, from where, the fault and the outcome.
    private func audit(_ request: APIRequest, caller: Caller, peer: String, response: APIResponse) {
        var metadata: Logger.Metadata = [
            "event": "api", "caller": "\(caller.identity)", "role": "\(caller.role.rawValue)", "peer": "\(peer)",
            "method": "\(request.method)", "path": "\(request.path)", "status": "\(response.status)",
        ]
        if let pid = caller.pid { metadata["pid"] = "\(pid)" }
        if let key = request.headers["idempotency-key"] { metadata["idempotencyKey"] = "\(key)" }
        if case .json(_, let data) = response,
            case .object(let o)? = try? JSONDecoder().decode(JSONValue.self, from: data)
        {
            if case .string(let id)? = o["id"] { metadata["lease"] = "\(id)" }
            if case .string(let state)? = o["state"] { metadata["outcome"] = "\(state)" }
            if case .object(let e)? = o["error"], case .string(let code)? = e["code"] { metadata["outcome"] = "\(code)" }
        }
        logger.info("request", metadata: metadata)
    }

    private func write(
        _ response: APIResponse, head: HTTPRequestHead, to out: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
        close: Bool
    ) async throws {
        switch response {
        case .json(let status, let data):
            var buf = ByteBuffer(bytes: data)
            buf.writeString("\n")
            try await writeDocument(status: status, contentType: "application/json", buf, head: head, to: out, close: close)
        case .text(let status, let contentType, let text):
            try await writeDocument(
                status: status, contentType: contentType, ByteBuffer(string: text), head: head, to: out, close: close)
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
                try await out.write(
                    .body(.byteBuffer(ByteBuffer(string: "id: \(event.seq)\nevent: \(event.type.rawValue)\ndata: \(json)\n\n"))))
            }
            try await out.write(.end(nil))
        }
    }

    private func writeDocument(
        status: Int, contentType: String, _ buf: ByteBuffer, head: HTTPRequestHead,
        to out: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, close: Bool
    ) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(buf.readableBytes))
        headers.add(name: "Server", value: "chaos-agentd")
        if close { headers.add(name: "Connection", value: "close") }
        try await out.write(.head(HTTPResponseHead(version: head.version, status: .init(statusCode: status), headers: headers)))
        if head.method != .HEAD { try await out.write(.body(.byteBuffer(buf))) }
        try await out.write(.end(nil))
    }
}
