import Synchronization

/// An rtnetlink session bound to one network namespace: verb-named operations on links, qdiscs and filters.
///
/// Every request carries NLM_F_ACK and waits for the kernel's answer; replies are matched by sequence number and port
/// id (strays are skipped); a negative answer becomes a `NetlinkError` carrying the kernel's extended-ACK message.
/// Requests are serialized, so one instance may be shared between tasks; calls block the caller for the round trip
/// (microseconds), so call them from the actor that owns network state rather than from many tasks at once.
public final class RTNetlink: Sendable {
    /// The namespace the socket was opened in.
    public let namespace: NetworkNamespace
    private let transport: any NetlinkTransport
    private let lastSequence: Mutex<UInt32>

    /// Opens a NETLINK_ROUTE socket inside `namespace` (see `MNLSocket`).
    public convenience init(namespace: NetworkNamespace = .current) throws(NetlinkError) {
        self.init(transport: try MNLSocket(namespace: namespace), namespace: namespace)
    }

    /// A session over any transport; tests pass one that records requests.
    public init(transport: any NetlinkTransport, namespace: NetworkNamespace = .current) {
        self.transport = transport
        self.namespace = namespace
        self.lastSequence = Mutex(0)
    }

    // MARK: - Exchange

    /// Sends `message` with NLM_F_REQUEST|NLM_F_ACK (added here) and returns the replies that precede the ACK
    /// (a GET answers with one message, a NEW/DEL with none).
    func request(_ message: MessageBuilder, _ operation: @autoclosure () -> String) throws(NetlinkError) -> [ReceivedMessage] {
        try exchange(message, extraFlags: NL.request | NL.ack, dump: false, operation)
    }

    /// Sends `message` as a dump (NLM_F_REQUEST|NLM_F_DUMP) and returns every message up to NLMSG_DONE.
    ///
    /// No NLM_F_ACK here: the kernel answers a dump with NLMSG_DONE (carrying the error, if any, and extended-ACK
    /// TLVs) and never with an ACK, so DONE is the acknowledgement.
    func dump(_ message: MessageBuilder, _ operation: @autoclosure () -> String) throws(NetlinkError) -> [ReceivedMessage] {
        try exchange(message, extraFlags: NL.request | NL.dump, dump: true, operation)
    }

    private func exchange(
        _ message: MessageBuilder, extraFlags: UInt16, dump: Bool, _ operation: () -> String
    ) throws(NetlinkError) -> [ReceivedMessage] {
        var message = message
        let flags = message.bytes.hostInteger(UInt16.self, at: 6)! | extraFlags
        message.patchUInt16(at: 6, flags)
        return try lastSequence.withLock { (sequence: inout UInt32) throws(NetlinkError) -> [ReceivedMessage] in
            sequence &+= 1
            if sequence == 0 { sequence = 1 }
            let seq = sequence
            do throws(NetlinkError) {
                try transport.send(message.finish(sequence: seq))
                var replies: [ReceivedMessage] = []
                while true {
                    for reply in ReceivedMessage.split(try transport.receive()) {
                        // Replies to our unicast requests carry our port id; anything else is a stray.
                        guard reply.sequence == seq, reply.portID == transport.portID || reply.portID == 0 else { continue }
                        switch reply.type {
                        case NL.error:
                            if let error = RTNetlink.decodeError(reply, operation: operation) { throw error }
                            return replies
                        case NL.done:
                            if let error = RTNetlink.decodeDone(reply, operation: operation) { throw error }
                            if dump { return replies }
                        case NL.noop:
                            continue
                        default:
                            replies.append(reply)
                        }
                    }
                }
            } catch {
                // Transport errors name only the syscall; say what we were doing.
                if error.operation.hasPrefix("netlink ") {
                    throw NetlinkError(operation: "\(operation()): \(error.operation)", errno: error.errno)
                }
                throw error
            }
        }
    }

    /// Sends several requests in one datagram, each with NLM_F_REQUEST|NLM_F_ACK and its own sequence number, and
    /// collects one answer per request. Throws the first failure in request order.
    func exchangeBatch(_ messages: [(MessageBuilder, String)]) throws(NetlinkError) {
        try lastSequence.withLock { (sequence: inout UInt32) throws(NetlinkError) in
            var datagram: [UInt8] = []
            var pending: [UInt32: Int] = [:]  // sequence -> index in `messages`
            for (i, (message, _)) in messages.enumerated() {
                var message = message
                message.patchUInt16(at: 6, message.bytes.hostInteger(UInt16.self, at: 6)! | NL.request | NL.ack)
                sequence &+= 1
                if sequence == 0 { sequence = 1 }
                pending[sequence] = i
                datagram += message.finish(sequence: sequence)
            }
            var failures: [Int: NetlinkError] = [:]
            do throws(NetlinkError) {
                try transport.send(datagram)
                while !pending.isEmpty {
                    for reply in ReceivedMessage.split(try transport.receive()) {
                        guard reply.type == NL.error, let i = pending[reply.sequence],
                            reply.portID == transport.portID || reply.portID == 0
                        else { continue }
                        pending.removeValue(forKey: reply.sequence)
                        if let error = RTNetlink.decodeError(reply, operation: { messages[i].1 }) { failures[i] = error }
                    }
                }
            } catch {
                let i = pending.values.min() ?? 0
                throw NetlinkError(operation: "\(messages[i].1): \(error.operation)", errno: error.errno)
            }
            if let first = failures.keys.min() { throw failures[first]! }
        }
    }

    /// NLMSG_ERROR: `s32 error`, the echoed request (only its header under NETLINK_CAP_ACK), then extended-ACK TLVs
    /// when NLM_F_ACK_TLVS is set. nil for a positive ACK (error 0).
    static func decodeError(_ reply: ReceivedMessage, operation: () -> String) -> NetlinkError? {
        guard let code = reply.payload.hostInteger(Int32.self, at: 0) else {
            return NetlinkError(operation: operation(), errno: 71 /* EPROTO */, kernelMessage: "truncated NLMSG_ERROR")
        }
        guard code != 0 else { return nil }
        var tlvOffset = 4 + NL.headerSize
        if reply.flags & NL.capped == 0, let echoed = reply.payload.hostInteger(UInt32.self, at: 4) {
            tlvOffset = 4 + nlAlign(Int(echoed))
        }
        return makeError(code: code, reply: reply, tlvOffset: tlvOffset, operation: operation)
    }

    /// NLMSG_DONE ends a dump: `s32 error` then, with NLM_F_ACK_TLVS, extended-ACK TLVs.
    static func decodeDone(_ reply: ReceivedMessage, operation: () -> String) -> NetlinkError? {
        guard let code = reply.payload.hostInteger(Int32.self, at: 0), code != 0 else { return nil }
        return makeError(code: code, reply: reply, tlvOffset: 4, operation: operation)
    }

    private static func makeError(
        code: Int32, reply: ReceivedMessage, tlvOffset: Int, operation: () -> String
    ) -> NetlinkError {
        var message: String?
        var missing: UInt32?
        if reply.flags & NL.ackTLVs != 0, tlvOffset <= reply.payload.count {
            let tlvs = Attribute.parse(reply.payload.dropFirst(tlvOffset))
            message = tlvs[NL.errAttrMsg]?.string
            missing = tlvs[NL.errAttrMissType]?.u32
        }
        return NetlinkError(operation: operation(), errno: code < 0 ? -code : code, kernelMessage: message, missingAttribute: missing)
    }
}
