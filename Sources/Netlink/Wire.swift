// Netlink wire encoding: a byte builder for requests and a reader for replies.
//
// Netlink integers are in host byte order (little-endian on every machine this agent runs on); packet-header fields
// inside tc structures (u32 keys, flower addresses and ports, ETH_P_* in tcm_info) are big-endian and are written with
// the explicit `bigEndian` helpers.

/// Numeric constants of the netlink, rtnetlink and tc ABI. Written out here (rather than taken from the C headers)
/// so the encoder is plain Swift; `ConstantsTests` checks each against the kernel headers.
enum NL {
    static let headerSize = 16
    static let alignTo = 4

    // nlmsghdr types
    static let noop: UInt16 = 1
    static let error: UInt16 = 2
    static let done: UInt16 = 3

    // nlmsghdr flags
    static let request: UInt16 = 0x1
    static let multi: UInt16 = 0x2
    static let ack: UInt16 = 0x4
    static let replace: UInt16 = 0x100
    static let excl: UInt16 = 0x200
    static let create: UInt16 = 0x400
    static let dump: UInt16 = 0x300
    /// In an NLMSG_ERROR: the echoed request was cut to its header (NETLINK_CAP_ACK).
    static let capped: UInt16 = 0x100
    /// In an NLMSG_ERROR/DONE: extended-ACK TLVs follow.
    static let ackTLVs: UInt16 = 0x200

    static let attrNested: UInt16 = 0x8000
    static let attrTypeMask: UInt16 = 0x3FFF

    // extended ACK attributes
    static let errAttrMsg: UInt16 = 1
    static let errAttrOffs: UInt16 = 2
    static let errAttrMissType: UInt16 = 5

    // rtnetlink message types
    static let newLink: UInt16 = 16
    static let delLink: UInt16 = 17
    static let getLink: UInt16 = 18
    static let newQdisc: UInt16 = 36
    static let delQdisc: UInt16 = 37
    static let getQdisc: UInt16 = 38
    static let newFilter: UInt16 = 44
    static let delFilter: UInt16 = 45
    static let getFilter: UInt16 = 46

    // link attributes
    static let iflaIfname: UInt16 = 3
    static let iflaLinkinfo: UInt16 = 18
    static let iflaExtMask: UInt16 = 29
    static let iflaInfoKind: UInt16 = 1
    static let rtextFilterSkipStats: UInt32 = 1 << 3
    static let iffUp: UInt32 = 0x1

    // tc top-level attributes
    static let tcaKind: UInt16 = 1
    static let tcaOptions: UInt16 = 2
    static let tcaStab: UInt16 = 8
    static let tcaIngressBlock: UInt16 = 13
    static let tcaEgressBlock: UInt16 = 14
}

/// Rounds `n` up to the netlink alignment (4).
@inline(__always) func nlAlign(_ n: Int) -> Int { (n + NL.alignTo - 1) & ~(NL.alignTo - 1) }

/// Builds one netlink message: header, fixed family header, attributes. Lengths are patched as nests close and when
/// the message is finished, so callers never compute them.
struct MessageBuilder {
    private(set) var bytes: [UInt8] = []

    /// Starts a message with a zero sequence number and port id; `finish(sequence:)` fills them in.
    init(type: UInt16, flags: UInt16) {
        bytes.reserveCapacity(256)
        append(UInt32(0))  // nlmsg_len, patched in finish
        append(type)
        append(flags)
        append(UInt32(0))  // nlmsg_seq
        append(UInt32(0))  // nlmsg_pid: 0 = let the kernel route the reply to this socket
    }

    /// A builder for a bare payload (no netlink header), for composing structs.
    init() {}

    /// Host-order integer.
    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value) { bytes.append(contentsOf: $0) }
    }

    /// Network-order (big-endian) integer.
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        append(value.bigEndian)
    }

    mutating func append(_ raw: [UInt8]) { bytes.append(contentsOf: raw) }

    mutating func pad() {
        bytes.append(contentsOf: repeatElement(0, count: nlAlign(bytes.count) - bytes.count))
    }

    /// One attribute with a raw payload, padded to 4 bytes (nla_len excludes the padding).
    mutating func attribute(_ type: UInt16, _ payload: [UInt8]) {
        append(UInt16(4 + payload.count))
        append(type)
        append(payload)
        pad()
    }

    mutating func attribute<T: FixedWidthInteger>(_ type: UInt16, integer value: T) {
        attribute(type, withUnsafeBytes(of: value) { Array($0) })
    }

    mutating func attribute<T: FixedWidthInteger>(_ type: UInt16, bigEndian value: T) {
        attribute(type, integer: value.bigEndian)
    }

    /// A NUL-terminated string attribute (NLA_NUL_STRING / NLA_STRING as tc sends them).
    mutating func attribute(_ type: UInt16, string: String) {
        attribute(type, Array(string.utf8) + [0])
    }

    /// An attribute whose payload is whatever `body` appends; its nla_len is patched to cover everything appended,
    /// padding included (as tc does). `type` is sent as given: pass `NL.attrNested` in it only where the tool we match
    /// does, since the kernel's tc parsers accept either.
    mutating func nest(_ type: UInt16, _ body: (inout MessageBuilder) throws -> Void) rethrows {
        let start = bytes.count
        append(UInt16(0))
        append(type)
        try body(&self)
        pad()
        patchUInt16(at: start, UInt16(bytes.count - start))
    }

    mutating func patchUInt16(at offset: Int, _ value: UInt16) {
        withUnsafeBytes(of: value) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    mutating func patchUInt32(at offset: Int, _ value: UInt32) {
        withUnsafeBytes(of: value) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    /// The finished message with its length, sequence number and port id written in.
    func finish(sequence: UInt32, portID: UInt32 = 0) -> [UInt8] {
        var out = self
        out.pad()
        out.patchUInt32(at: 0, UInt32(out.bytes.count))
        out.patchUInt32(at: 8, sequence)
        out.patchUInt32(at: 12, portID)
        return out.bytes
    }
}

/// Bounds-checked little readers over a byte slice (host order unless named otherwise).
extension Collection where Element == UInt8, Index == Int {
    func hostInteger<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        let start = startIndex + offset
        guard offset >= 0, start + MemoryLayout<T>.size <= endIndex else { return nil }
        var value = T.zero
        withUnsafeMutableBytes(of: &value) { dst in
            for i in 0..<MemoryLayout<T>.size { dst[i] = self[start + i] }
        }
        return value
    }

    func bigEndianInteger<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        hostInteger(T.self, at: offset).map { T(bigEndian: $0) }
    }
}

/// One attribute as read from a reply.
struct Attribute {
    /// Type with NLA_F_NESTED and NLA_F_NET_BYTEORDER masked off.
    var type: UInt16
    var payload: ArraySlice<UInt8>

    var u8: UInt8? { payload.hostInteger(UInt8.self, at: 0) }
    var u16: UInt16? { payload.hostInteger(UInt16.self, at: 0) }
    var u32: UInt32? { payload.hostInteger(UInt32.self, at: 0) }
    var u64: UInt64? { payload.hostInteger(UInt64.self, at: 0) }
    var string: String { String(decoding: payload.prefix { $0 != 0 }, as: UTF8.self) }
    var nested: [Attribute] { Attribute.parse(payload) }

    /// Attributes packed in `bytes`; a malformed tail is ignored (the kernel never sends one).
    static func parse(_ bytes: ArraySlice<UInt8>) -> [Attribute] {
        var out: [Attribute] = []
        var offset = bytes.startIndex
        while offset + 4 <= bytes.endIndex {
            guard let len = bytes.hostInteger(UInt16.self, at: offset - bytes.startIndex),
                let type = bytes.hostInteger(UInt16.self, at: offset - bytes.startIndex + 2),
                len >= 4, offset + Int(len) <= bytes.endIndex
            else { break }
            out.append(Attribute(type: type & NL.attrTypeMask, payload: bytes[(offset + 4)..<(offset + Int(len))]))
            offset += nlAlign(Int(len))
        }
        return out
    }
}

extension [Attribute] {
    subscript(type: UInt16) -> Attribute? { first { $0.type == type } }
}

/// One message as read from a reply datagram.
struct ReceivedMessage {
    var type: UInt16
    var flags: UInt16
    var sequence: UInt32
    var portID: UInt32
    /// Everything after the 16-byte header.
    var payload: ArraySlice<UInt8>

    /// Splits a datagram into messages.
    static func split(_ datagram: [UInt8]) -> [ReceivedMessage] {
        var out: [ReceivedMessage] = []
        var offset = 0
        while offset + NL.headerSize <= datagram.count {
            guard let len = datagram.hostInteger(UInt32.self, at: offset), Int(len) >= NL.headerSize,
                offset + Int(len) <= datagram.count
            else { break }
            out.append(
                ReceivedMessage(
                    type: datagram.hostInteger(UInt16.self, at: offset + 4)!,
                    flags: datagram.hostInteger(UInt16.self, at: offset + 6)!,
                    sequence: datagram.hostInteger(UInt32.self, at: offset + 8)!,
                    portID: datagram.hostInteger(UInt32.self, at: offset + 12)!,
                    payload: datagram[(offset + NL.headerSize)..<(offset + Int(len))]))
            offset += nlAlign(Int(len))
        }
        return out
    }
}
