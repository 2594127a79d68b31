import Synchronization
import Testing

@testable import Netlink

/// A transport that records every request and answers it from a script: by default a positive ACK (NLMSG_ERROR 0)
/// for requests and NLMSG_DONE for dumps, both echoing the request's sequence number.
final class RecordingTransport: NetlinkTransport {
    struct State {
        var sent: [[UInt8]] = []
        var pending: [[UInt8]] = []
        /// Canned reply messages (without header seq/pid; filled in) returned before the ACK/DONE of the next request.
        var replies: [(type: UInt16, flags: UInt16, payload: [UInt8])] = []
        /// Error code for the next ACK (negative errno), and extended-ACK message.
        var nextError: (code: Int32, message: String?)?
    }
    let state = Mutex(State())
    let portID: UInt32 = 4242

    func send(_ message: [UInt8]) throws(NetlinkError) {
        state.withLock { s in
            s.sent.append(message)
            let seq = message.hostInteger(UInt32.self, at: 8)!
            let flags = message.hostInteger(UInt16.self, at: 6)!
            for r in s.replies { s.pending.append(Self.message(type: r.type, flags: r.flags, seq: seq, pid: portID, payload: r.payload)) }
            s.replies = []
            if flags & 0x300 == 0x300 {
                s.pending.append(Self.message(type: 3, flags: 2, seq: seq, pid: portID, payload: [0, 0, 0, 0]))
            } else {
                var payload = [UInt8]()
                let (code, text) = s.nextError ?? (0, nil)
                withUnsafeBytes(of: code) { payload.append(contentsOf: $0) }
                payload.append(contentsOf: message[0..<16])  // capped echo
                var f: UInt16 = 0x100
                if let text {
                    f |= 0x200
                    let str = Array(text.utf8) + [0]
                    withUnsafeBytes(of: UInt16(4 + str.count)) { payload.append(contentsOf: $0) }
                    withUnsafeBytes(of: UInt16(1)) { payload.append(contentsOf: $0) }
                    payload.append(contentsOf: str)
                    while payload.count % 4 != 0 { payload.append(0) }
                }
                s.nextError = nil
                s.pending.append(Self.message(type: 2, flags: f, seq: seq, pid: portID, payload: payload))
            }
        }
    }

    func receive() throws(NetlinkError) -> [UInt8] {
        state.withLock { s in s.pending.isEmpty ? [] : s.pending.removeFirst() }
    }

    var lastRequest: [UInt8] { state.withLock { $0.sent.last ?? [] } }

    static func message(type: UInt16, flags: UInt16, seq: UInt32, pid: UInt32, payload: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        for v in [UInt32(16 + payload.count)] { withUnsafeBytes(of: v) { out.append(contentsOf: $0) } }
        withUnsafeBytes(of: type) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: flags) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: seq) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: pid) { out.append(contentsOf: $0) }
        out.append(contentsOf: payload)
        while out.count % 4 != 0 { out.append(0) }
        return out
    }
}

/// Hex of a request with its sequence number and port id zeroed, as the goldens are written.
func goldenHex(_ bytes: [UInt8]) -> String {
    var b = bytes
    for i in 8..<16 where i < b.count { b[i] = 0 }
    return b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

/// A golden: annotated pieces (`"hex // comment"`), whitespace and comments stripped.
func golden(_ pieces: [String]) -> String {
    pieces.map { piece in
        let hex = piece.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        return hex.filter { !$0.isWhitespace }
    }.joined()
}

/// A session over a fresh recording transport.
func recordingSession() -> (RTNetlink, RecordingTransport) {
    let t = RecordingTransport()
    return (RTNetlink(transport: t), t)
}
