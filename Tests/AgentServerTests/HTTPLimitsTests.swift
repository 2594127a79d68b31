import AgentCore
import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import AgentServer

/// Issue 10, item 9, at the HTTP layer: the handlers `HTTPService.configure` puts around NIO's decoder, driven with raw
/// bytes on an EmbeddedChannel. Each malformed input gets exactly one answer and a closed connection.
@Suite("HTTP head limits")
struct HTTPLimitsTests {
    /// The pipeline every listener uses, minus the async wrapper: guard, NIO's codec with our limits, our responder.
    func channel(_ limits: HeadLimits = HeadLimits()) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let pending = PendingHeadBytes()
        try channel.pipeline.syncOperations.addHandler(RequestHeadGuard(limits: limits, pending: pending))
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withErrorHandling: false, withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits.decoder)
        try channel.pipeline.syncOperations.addHandler(HTTPErrorResponder(limits: limits, pending: pending))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    /// Feeds `raw` in chunks of `chunk` bytes (as reads would arrive); returns the heads that got through, every
    /// status line written back, and whether the channel was closed.
    func run(_ raw: [UInt8], chunk: Int = 4096) throws -> (heads: [HTTPRequestHead], statuses: [Int], closed: Bool) {
        let ch = try channel()
        var heads: [HTTPRequestHead] = []
        var offset = 0
        while offset < raw.count, ch.isActive {
            let end = min(raw.count, offset + chunk)
            var buf = ch.allocator.buffer(capacity: end - offset)
            buf.writeBytes(raw[offset..<end])
            offset = end
            do { try ch.writeInbound(buf) } catch is HTTPParserError {}
            while let part = try ch.readInbound(as: HTTPServerRequestPart.self) {
                if case .head(let h) = part { heads.append(h) }
            }
        }
        var out = ""
        while let b = try ch.readOutbound(as: ByteBuffer.self) { out += String(buffer: b) }
        let statuses = out.components(separatedBy: "\r\n").filter { $0.hasPrefix("HTTP/1.1 ") }.compactMap {
            Int($0.split(separator: " ")[1])
        }
        return (heads, statuses, !ch.isActive)
    }

    func request(headers n: Int, value: String = "v") -> [UInt8] {
        Array(("GET /v1/faults HTTP/1.1\r\nHost: x\r\n" + (0..<n).map { "X-H\($0): \(value)\r\n" }.joined() + "\r\n").utf8)
    }

    @Test func tenThousandHeadersAre431AndClosed() throws {
        let r = try run(request(headers: 10_000))
        #expect(r.heads.isEmpty)
        #expect(r.statuses == [431])
        #expect(r.closed)
    }

    @Test func theCapsAreWhereTheDocsSay() throws {
        #expect(try run(request(headers: 63)).heads.count == 1)  // 64 with Host
        #expect(try run(request(headers: 64)).statuses == [431])
        #expect(try run(request(headers: 1, value: String(repeating: "a", count: 15_000))).heads.count == 1)
        #expect(try run(request(headers: 1, value: String(repeating: "a", count: 17_000))).statuses == [431])
        #expect(try run(request(headers: 2, value: String(repeating: "a", count: 9_000))).statuses == [431])
    }

    @Test func longRequestLinesAre414AndClosed() throws {
        for n in [20_000, 100_000, 1_000_000] {
            for chunk in [1024, 65536] {
                let r = try run(Array("GET /\(String(repeating: "a", count: n)) HTTP/1.1\r\nHost: x\r\n\r\n".utf8), chunk: chunk)
                #expect(r.heads.isEmpty, "\(n)")
                #expect(r.statuses == [414], "\(n) in chunks of \(chunk)")
                #expect(r.closed)
            }
        }
        // Under the decoder's cap but over 8 KiB: the head gets through, and HTTPService answers 414 (a host test).
        #expect(try run(Array("GET /\(String(repeating: "a", count: 9_000)) HTTP/1.1\r\n\r\n".utf8)).heads.count == 1)
    }

    @Test func http09AndOtherVersionsGetOneAnswer() throws {
        for raw in ["GET /v1/faults\r\n\r\n", "GET /healthz\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n", "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/0.9\r\n\r\n", "GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"]
        {
            let r = try run(Array(raw.utf8))
            #expect(r.heads.isEmpty, "\(raw.debugDescription)")
            #expect(r.statuses == [400], "\(raw.debugDescription)")
            #expect(r.closed, "\(raw.debugDescription)")
        }
        // Two good pipelined requests: the first head goes on (NIO holds the second until the first is answered),
        // and the limits layer neither answers nor closes.
        let two = try run(Array("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n".utf8))
        #expect(two.heads.map(\.uri) == ["/a"])
        #expect(two.statuses.isEmpty && !two.closed)
    }
}
