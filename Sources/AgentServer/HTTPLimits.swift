import AgentCore
import NIOCore
import NIOHTTP1

/// Caps on a request's head, on every listener: what NIO's decoder enforces (header count and bytes, answered 431 by
/// `HTTPErrorResponder`) and what it does not (the request line, answered 414 by `RequestHeadGuard`).
public struct HeadLimits: Sendable {
    /// Header fields per request (trailers included).
    public var maxHeaderCount = 64
    /// Bytes of header names and values per request; also the cap on one field.
    public var maxHeaderBytes = 16 * 1024
    /// Bytes of the request target (the URI).
    public var maxTarget = 8 * 1024

    public init() {}

    var decoder: NIOHTTPDecoderLimitConfiguration {
        var c = NIOHTTPDecoderLimitConfiguration()
        c.maxHeaderFieldCount = maxHeaderCount
        c.maxHeaderListSize = maxHeaderBytes
        c.maxHeaderFieldSize = maxHeaderBytes
        return c
    }

    /// Raw bytes the decoder may hold before it has produced a request part: a request line at the cap, headers at
    /// the cap with their separators, and some slack. Past it, the connection is answered and closed.
    var maxPendingBytes: Int { maxTarget + maxHeaderBytes + maxHeaderCount * 4 + 1024 }
}

/// Raw bytes received since the decoder last produced a request part; shared by the two handlers around it (both
/// run on the connection's event loop).
final class PendingHeadBytes {
    var count = 0
    /// Bytes of the first line (the request line) among them, and whether its end has arrived.
    var firstLine = 0
    var sawLineEnd = false
    var closing = false

    func partDecoded() {
        count = 0
        firstLine = 0
        sawLineEnd = false
    }
}

/// In front of the HTTP decoder, a backstop to its own limits: counts the raw bytes that have not become a request
/// part yet and, past `maxPendingBytes`, answers 414 (the first line alone is over the target cap) or 431 and closes.
/// It also tells the responder how long the request line has been so far. A byte counter, not a parser: the decoder
/// stays the one parser.
final class RequestHeadGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let limits: HeadLimits
    private let pending: PendingHeadBytes

    init(limits: HeadLimits, pending: PendingHeadBytes) {
        self.limits = limits
        self.pending = pending
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if pending.closing { return }
        let buffer = unwrapInboundIn(data)
        pending.count += buffer.readableBytes
        if !pending.sawLineEnd {
            if let end = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                pending.firstLine += end - buffer.readerIndex
                pending.sawLineEnd = true
            } else {
                pending.firstLine += buffer.readableBytes
            }
        }
        // Parts decoded from this read reset the counts; what is left is what the decoder holds undecoded (give or
        // take the part of this read before the last part).
        context.fireChannelRead(data)
        guard pending.count > limits.maxPendingBytes, !pending.closing else { return }
        pending.closing = true
        let error =
            pending.firstLine <= limits.maxTarget + 64
            ? AgentError(
                status: 431, code: "headers-too-large",
                message: "request headers are over \(limits.maxHeaderBytes) bytes or \(limits.maxHeaderCount) fields")
            : AgentError(status: 414, code: "uri-too-long", message: "the request line is over \(limits.maxTarget) bytes")
        HTTPErrorResponder.writeRaw(error, context: context)
    }
}

/// After the HTTP decoder (in place of NIO's HTTPServerProtocolErrorHandler, which answers everything 400): a parse
/// error is answered once — 414 for a request line over the cap, 431 for too many or too large headers, 400 for
/// anything else (an HTTP/0.9 request line or another major version among them) — and the connection closed (bytes
/// after it are never read as another request). Also tells the head guard
/// that the decoder produced a part.
final class HTTPErrorResponder: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let limits: HeadLimits
    private let pending: PendingHeadBytes
    private var responseOpen = false

    init(limits: HeadLimits, pending: PendingHeadBytes) {
        self.limits = limits
        self.pending = pending
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pending.partDecoded()
        if pending.closing { return }
        context.fireChannelRead(data)
    }

    static func status(of error: HTTPParserError, limits: HeadLimits, pending: PendingHeadBytes) -> AgentError {
        switch error {
        case .headerOverflow where !pending.sawLineEnd || pending.firstLine > limits.maxTarget:
            // NIO counts the URI against the header bytes too: an overflow before the request line ended is a URI.
            return AgentError(status: 414, code: "uri-too-long", message: "the request line is over \(limits.maxTarget) bytes")
        case .headerOverflow:
            return AgentError(
                status: 431, code: "headers-too-large",
                message: "request headers are over \(limits.maxHeaderBytes) bytes or \(limits.maxHeaderCount) fields")
        case .invalidVersion:
            return AgentError(status: 400, code: "bad-request", message: "malformed HTTP: the request line needs HTTP/1.0 or HTTP/1.1")
        default:
            return AgentError(status: 400, code: "bad-request", message: "malformed HTTP request (\(error))")
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parseError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if !pending.closing {
            pending.closing = true
            if responseOpen {
                // An answer is half-written: nothing sensible can follow it.
                context.close(promise: nil)
            } else {
                Self.writeRaw(Self.status(of: parseError, limits: limits, pending: pending), context: context, through: self)
            }
        }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let h) where h.status.code < 200: break
        case .head: responseOpen = true
        case .body: break
        case .end: responseOpen = false
        }
        context.write(data, promise: promise)
    }

    /// Writes `error` as a JSON answer with `Connection: close`, then closes. With `through`, as HTTP parts (the
    /// encoder is below); without, as raw bytes (from in front of the decoder).
    static func writeRaw(_ error: AgentError, context: ChannelHandlerContext, through responder: HTTPErrorResponder? = nil) {
        guard case .json(let status, let json) = APIRouter.error(error) else { return }
        var body = context.channel.allocator.buffer(capacity: json.count + 1)
        body.writeBytes(json)
        body.writeString("\n")
        let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
        let channel = context.channel
        if responder != nil {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(body.readableBytes))
            headers.add(name: "Server", value: "chaos-agentd")
            headers.add(name: "Connection", value: "close")
            let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers)
            context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            var out = context.channel.allocator.buffer(capacity: body.readableBytes + 160)
            out.writeString(
                "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(body.readableBytes)\r\n"
                    + "Server: chaos-agentd\r\nConnection: close\r\n\r\n")
            out.writeBuffer(&body)
            context.writeAndFlush(NIOAny(out)).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
