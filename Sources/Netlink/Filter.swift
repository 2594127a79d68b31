import Glibc

/// An IPv4 or IPv6 network: address bytes (network order) and prefix length. Host bits are cleared.
public struct IPPrefix: Sendable, Hashable, Codable, CustomStringConvertible {
    /// 4 or 16 bytes.
    public private(set) var address: [UInt8]
    public private(set) var length: Int

    public var isIPv6: Bool { address.count == 16 }

    /// Parses `10.1.0.0/16`, `2001:db8::/32`, or a bare address (a host prefix). nil if malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let host = String(parts[0])
        var v4 = in_addr()
        var v6 = in6_addr()
        let bytes: [UInt8]
        if inet_pton(AF_INET, host, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, host, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return nil
        }
        var length = bytes.count * 8
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...bytes.count * 8).contains(n), !parts[1].hasPrefix("+") else { return nil }
            length = n
        }
        self.init(address: bytes, length: length)
    }

    public init?(address: [UInt8], length: Int) {
        guard address.count == 4 || address.count == 16, (0...address.count * 8).contains(length) else { return nil }
        self.length = length
        self.address = address.enumerated().map { i, b in b & IPPrefix.maskByte(i, length) }
    }

    /// Network-order mask bytes for the prefix length.
    public var mask: [UInt8] { (0..<address.count).map { IPPrefix.maskByte($0, length) } }

    static func maskByte(_ index: Int, _ length: Int) -> UInt8 {
        let bits = min(max(length - index * 8, 0), 8)
        return bits == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = isIPv6 ? AF_INET6 : AF_INET
        _ = address.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/\(length)"
    }
}

/// Which packets a filter selects. Empty = every packet of the filter's protocol (match-all).
///
/// As a u32 selector this assumes fixed header layouts: IPv4 without options (IHL = 5, so the transport header is
/// at offset 20) and IPv6 without extension headers (transport header at offset 40, next-header field taken as the
/// protocol). Packets with IPv4 options or IPv6 extension headers are then not matched by port or protocol keys
/// (flower parses headers properly and has no such limits). Ports match TCP and UDP alike unless `ipProtocol` is set.
public struct U32Match: Sendable, Hashable, Codable {
    public var source: IPPrefix?
    public var destination: IPPrefix?
    /// IPPROTO_* (6 TCP, 17 UDP, ...).
    public var ipProtocol: UInt8?
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?

    public init(
        source: IPPrefix? = nil, destination: IPPrefix? = nil, ipProtocol: UInt8? = nil, sourcePort: UInt16? = nil,
        destinationPort: UInt16? = nil
    ) {
        (self.source, self.destination, self.ipProtocol) = (source, destination, ipProtocol)
        (self.sourcePort, self.destinationPort) = (sourcePort, destinationPort)
    }

    /// Matches every packet.
    public static let all = U32Match()

    public var isEmpty: Bool { self == .all }
}

/// What a filter does to a matching packet besides classifying it.
public enum FilterAction: Sendable, Hashable, Codable {
    /// mirred egress redirect (`action mirred egress redirect dev X`): the packet is stolen (TC_ACT_STOLEN) and
    /// transmitted out of interface `toIfindex` (TCA_EGRESS_REDIR), e.g. into an ifb.
    case mirredRedirectEgress(toIfindex: Int32)
}

/// A filter as dumped (RTM_GETTFILTER).
public struct Filter: Sendable, Equatable {
    public var ifindex: Int32
    public var parent: UInt32
    /// Kernel-assigned (u32: `800::800`-style; 0 for a u32 hash-table entry without a selector).
    public var handle: UInt32
    public var priority: UInt16
    /// Host order (EtherType.ipv4/.ipv6/.all).
    public var `protocol`: UInt16
    public var kind: String
    public var classID: UInt32?
    public var actions: [FilterAction]
    /// Names of all actions attached, decoded or not (`mirred`, `gact`, ...).
    public var actionKinds: [String]
    /// For u32: the selector's keys as dumped (mask, value, offset), in network order values. Empty for the hash
    /// table entries the kernel lists alongside real filters.
    public var u32Keys: [U32Key]
}

/// One u32 key: `(packet word at offset & mask) == value`, mask and value as big-endian words read as integers.
public struct U32Key: Sendable, Hashable, Codable {
    public var mask: UInt32
    public var value: UInt32
    public var offset: Int32
    public init(mask: UInt32, value: UInt32, offset: Int32) { (self.mask, self.value, self.offset) = (mask, value, offset) }
}

/// TCA_U32_* / TCA_FLOWER_* / action attribute types.
enum FilterAttr {
    static let u32ClassID: UInt16 = 1
    static let u32Sel: UInt16 = 5
    static let u32Act: UInt16 = 7
    static let u32TerminalFlag: UInt8 = 1

    static let flowerClassID: UInt16 = 1
    static let flowerAct: UInt16 = 3
    static let flowerEthType: UInt16 = 8
    static let flowerIPProto: UInt16 = 9
    static let flowerIPv4Src: UInt16 = 10
    static let flowerIPv6Src: UInt16 = 14
    static let flowerTCPSrc: UInt16 = 18
    static let flowerTCPDst: UInt16 = 19
    static let flowerUDPSrc: UInt16 = 20
    static let flowerUDPDst: UInt16 = 21
    static let flowerFlags: UInt16 = 22

    static let actKind: UInt16 = 1
    static let actOptions: UInt16 = 2
    static let mirredParms: UInt16 = 2
    static let actStolen: Int32 = 4
    static let egressRedirect: Int32 = 1
}

extension U32Match {
    /// The address family the match needs (from its prefixes, else from the filter protocol); nil = no L3 keys.
    func family(filterProtocol: UInt16, operation: String) throws(NetlinkError) -> Bool? /* isIPv6 */ {
        let families = Set([source, destination].compactMap { $0?.isIPv6 })
        if families.count > 1 { throw .invalid(operation, "source and destination are of different IP versions") }
        let needsL3 = source != nil || destination != nil || ipProtocol != nil || sourcePort != nil || destinationPort != nil
        guard needsL3 else { return nil }
        let fromProtocol: Bool? =
            filterProtocol == EtherType.ipv4 ? false : filterProtocol == EtherType.ipv6 ? true : nil
        guard let isIPv6 = families.first ?? fromProtocol else {
            throw .invalid(operation, "protocol or port keys need the filter protocol to be IPv4 or IPv6")
        }
        if let fromProtocol, fromProtocol != isIPv6 {
            throw .invalid(operation, "addresses do not match the filter protocol")
        }
        if sourcePort == 0 || destinationPort == 0 { throw .invalid(operation, "port 0") }
        return isIPv6
    }

    /// The u32 keys (offsets into the network header), merged as tc merges keys sharing a word.
    func u32Keys(filterProtocol: UInt16, operation: String) throws(NetlinkError) -> [U32Key] {
        guard let isIPv6 = try family(filterProtocol: filterProtocol, operation: operation) else {
            return [U32Key(mask: 0, value: 0, offset: 0)]  // match-all: one zero key, like `match u32 0 0`
        }
        var keys: [U32Key] = []
        func add(mask: UInt32, value: UInt32, offset: Int32) {
            if let i = keys.firstIndex(where: { $0.offset == offset }) {
                keys[i].mask |= mask
                keys[i].value |= value & mask
            } else {
                keys.append(U32Key(mask: mask, value: value & mask, offset: offset))
            }
        }
        func addPrefix(_ prefix: IPPrefix, at base: Int32) {
            let mask = prefix.mask
            for word in 0..<(prefix.address.count / 4) {
                let m = mask[(word * 4)..<(word * 4 + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                guard m != 0 else { continue }
                let v = prefix.address[(word * 4)..<(word * 4 + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                add(mask: m, value: v, offset: base + Int32(word * 4))
            }
        }
        if let source { addPrefix(source, at: isIPv6 ? 8 : 12) }
        if let destination { addPrefix(destination, at: isIPv6 ? 24 : 16) }
        if let ipProtocol {
            // IPv4 protocol is byte 9 (word 8, second byte); IPv6 next header is byte 6 (word 4, third byte).
            if isIPv6 { add(mask: 0x0000_FF00, value: UInt32(ipProtocol) << 8, offset: 4) }
            else { add(mask: 0x00FF_0000, value: UInt32(ipProtocol) << 16, offset: 8) }
        }
        let transport: Int32 = isIPv6 ? 40 : 20
        if let sourcePort { add(mask: 0xFFFF_0000, value: UInt32(sourcePort) << 16, offset: transport) }
        if let destinationPort { add(mask: 0x0000_FFFF, value: UInt32(destinationPort), offset: transport) }
        return keys
    }
}

extension RTNetlink {
    /// Adds a u32 filter (`tc filter add dev X parent P prio N protocol PROTO u32 match ... [flowid C] [action]`).
    public func addU32Filter(
        ifindex: Int32, parent: UInt32, priority: UInt16, protocol: UInt16, match: U32Match, classID: UInt32?,
        action: FilterAction?
    ) throws(NetlinkError) {
        var batch = NetlinkBatch()
        try batch.addU32Filter(
            ifindex: ifindex, parent: parent, priority: priority, protocol: `protocol`, match: match, classID: classID,
            action: action)
        try perform(batch)
    }

    /// Adds a flower filter with the same logical match (kernels with cls_flower only). Port keys need `ipProtocol`
    /// 6 (TCP) or 17 (UDP).
    public func addFlowerFilter(
        ifindex: Int32, parent: UInt32, priority: UInt16, protocol: UInt16, match: U32Match, classID: UInt32?,
        action: FilterAction?
    ) throws(NetlinkError) {
        var batch = NetlinkBatch()
        try batch.addFlowerFilter(
            ifindex: ifindex, parent: parent, priority: priority, protocol: `protocol`, match: match, classID: classID,
            action: action)
        try perform(batch)
    }

    /// Every filter at `parent` of interface `ifindex`.
    public func filters(ifindex: Int32, parent: UInt32) throws(NetlinkError) -> [Filter] {
        var m = MessageBuilder(type: NL.getFilter, flags: 0)
        m.tcmsg(ifindex: ifindex, handle: 0, parent: parent, info: 0)
        return try dump(m, "list filters of ifindex \(ifindex) parent \(TCHandle.describe(parent))").compactMap(Self.decodeFilter)
    }

    /// Deletes every filter with `priority` and `protocol` at `parent` (`tc filter del ... prio N protocol P`).
    public func deleteFilter(ifindex: Int32, parent: UInt32, priority: UInt16, protocol: UInt16) throws(NetlinkError) {
        _ = try request(
            Self.deleteFilterRequest(ifindex: ifindex, parent: parent, priority: priority, protocol: `protocol`),
            "delete filter prio \(priority) on ifindex \(ifindex)")
    }

    // MARK: - Messages

    /// tcm_info of a filter: priority in the upper 16 bits, protocol in network order in the lower.
    static func filterInfo(priority: UInt16, protocol: UInt16) -> UInt32 {
        UInt32(priority) << 16 | UInt32(`protocol`.bigEndian)
    }

    static func deleteFilterRequest(ifindex: Int32, parent: UInt32, priority: UInt16, protocol: UInt16) -> MessageBuilder {
        var m = MessageBuilder(type: NL.delFilter, flags: 0)
        m.tcmsg(ifindex: ifindex, handle: 0, parent: parent, info: filterInfo(priority: priority, protocol: `protocol`))
        return m
    }

    /// KIND "u32", OPTIONS { [CLASSID], [ACT], SEL } (nests without NLA_F_NESTED, order as tc sends them).
    /// struct tc_u32_sel (16 B): u8 flags (TERMINAL), u8 offshift, u8 nkeys, u8 pad, be16 offmask, u16 off,
    /// s16 offoff, s16 hoff, be32 hmask; then per key (16 B): be32 mask, be32 val, s32 off, s32 offmask.
    static func u32FilterRequest(
        ifindex: Int32, parent: UInt32, priority: UInt16, protocol: UInt16, match: U32Match, classID: UInt32?,
        action: FilterAction?, operation: String
    ) throws(NetlinkError) -> MessageBuilder {
        let keys = try match.u32Keys(filterProtocol: `protocol`, operation: operation)
        var m = MessageBuilder(type: NL.newFilter, flags: NL.create | NL.excl)
        m.tcmsg(ifindex: ifindex, handle: 0, parent: parent, info: filterInfo(priority: priority, protocol: `protocol`))
        m.attribute(NL.tcaKind, string: "u32")
        m.nest(NL.tcaOptions) { m in
            if let classID { m.attribute(FilterAttr.u32ClassID, integer: classID) }
            if let action { m.action(FilterAttr.u32Act, action) }
            var sel = MessageBuilder()
            sel.append(classID != nil || action != nil ? FilterAttr.u32TerminalFlag : 0)
            sel.append(UInt8(0))
            sel.append(UInt8(keys.count))
            sel.append([UInt8](repeating: 0, count: 13))
            for key in keys {
                sel.appendBigEndian(key.mask)
                sel.appendBigEndian(key.value)
                sel.append(key.offset)
                sel.append(Int32(0))
            }
            m.attribute(FilterAttr.u32Sel, sel.bytes)
        }
        return m
    }

    /// KIND "flower", OPTIONS { IP_PROTO, IPv4/IPv6 SRC+MASK, DST+MASK, TCP/UDP ports, CLASSID, ACT, FLAGS 0,
    /// ETH_TYPE } (ETH_TYPE omitted for ETH_P_ALL), in tc's order for the equivalent command line.
    static func flowerFilterRequest(
        ifindex: Int32, parent: UInt32, priority: UInt16, protocol: UInt16, match: U32Match, classID: UInt32?,
        action: FilterAction?, operation: String
    ) throws(NetlinkError) -> MessageBuilder {
        let isIPv6 = try match.family(filterProtocol: `protocol`, operation: operation)
        if match.sourcePort != nil || match.destinationPort != nil, match.ipProtocol != 6 && match.ipProtocol != 17 {
            throw .invalid(operation, "flower port keys need ipProtocol 6 (TCP) or 17 (UDP)")
        }
        var m = MessageBuilder(type: NL.newFilter, flags: NL.create | NL.excl)
        m.tcmsg(ifindex: ifindex, handle: 0, parent: parent, info: filterInfo(priority: priority, protocol: `protocol`))
        m.attribute(NL.tcaKind, string: "flower")
        m.nest(NL.tcaOptions) { m in
            if let proto = match.ipProtocol { m.attribute(FilterAttr.flowerIPProto, integer: proto) }
            let base = isIPv6 == true ? FilterAttr.flowerIPv6Src : FilterAttr.flowerIPv4Src
            // SRC, SRC_MASK, DST, DST_MASK are consecutive types from `base`.
            for (i, prefix) in [match.source, match.destination].enumerated() {
                guard let prefix else { continue }
                m.attribute(base + UInt16(i * 2), prefix.address)
                m.attribute(base + UInt16(i * 2 + 1), prefix.mask)
            }
            let tcp = match.ipProtocol == 6
            if let port = match.sourcePort {
                m.attribute(tcp ? FilterAttr.flowerTCPSrc : FilterAttr.flowerUDPSrc, bigEndian: port)
            }
            if let port = match.destinationPort {
                m.attribute(tcp ? FilterAttr.flowerTCPDst : FilterAttr.flowerUDPDst, bigEndian: port)
            }
            if let classID { m.attribute(FilterAttr.flowerClassID, integer: classID) }
            if let action { m.action(FilterAttr.flowerAct, action) }
            m.attribute(FilterAttr.flowerFlags, integer: UInt32(0))
            if `protocol` != EtherType.all { m.attribute(FilterAttr.flowerEthType, bigEndian: `protocol`) }
        }
        return m
    }

    static func decodeFilter(_ message: ReceivedMessage) -> Filter? {
        guard message.type == NL.newFilter, let header = TCMessageHeader(message.payload) else { return nil }
        let attributes = Attribute.parse(message.payload.dropFirst(TCMessageHeader.size))
        guard let kind = attributes[NL.tcaKind]?.string else { return nil }
        var filter = Filter(
            ifindex: header.ifindex, parent: header.parent, handle: header.handle, priority: UInt16(header.info >> 16),
            protocol: UInt16(bigEndian: UInt16(header.info & 0xFFFF)), kind: kind, classID: nil, actions: [],
            actionKinds: [], u32Keys: [])
        let options = attributes[NL.tcaOptions]?.nested ?? []
        let actType: UInt16
        switch kind {
        case "u32":
            filter.classID = options[FilterAttr.u32ClassID]?.u32
            actType = FilterAttr.u32Act
            if let sel = options[FilterAttr.u32Sel]?.payload, let n = sel.hostInteger(UInt8.self, at: 2) {
                for i in 0..<Int(n) {
                    let o = 16 + i * 16
                    guard let mask = sel.bigEndianInteger(UInt32.self, at: o),
                        let value = sel.bigEndianInteger(UInt32.self, at: o + 4),
                        let off = sel.hostInteger(Int32.self, at: o + 8)
                    else { break }
                    filter.u32Keys.append(U32Key(mask: mask, value: value, offset: off))
                }
            }
        case "flower":
            filter.classID = options[FilterAttr.flowerClassID]?.u32
            actType = FilterAttr.flowerAct
        default:
            actType = 0
        }
        for slot in options[actType]?.nested ?? [] where actType != 0 {
            let act = slot.nested
            let actKind = act[FilterAttr.actKind]?.string ?? "?"
            filter.actionKinds.append(actKind)
            if actKind == "mirred", let parms = act[FilterAttr.actOptions]?.nested[FilterAttr.mirredParms]?.payload,
                parms.hostInteger(Int32.self, at: 8) == FilterAttr.actStolen,
                parms.hostInteger(Int32.self, at: 20) == FilterAttr.egressRedirect,
                let target = parms.hostInteger(Int32.self, at: 24)
            {
                filter.actions.append(.mirredRedirectEgress(toIfindex: target))
            }
        }
        return filter
    }
}

extension MessageBuilder {
    /// An action list attribute: `type` { 1 { TCA_ACT_KIND, TCA_ACT_OPTIONS|NESTED { PARMS } } }, as tc sends it.
    /// struct tc_mirred (28 B): tc_gen (u32 index, u32 capab, int action, int refcnt, int bindcnt), int eaction,
    /// u32 ifindex.
    mutating func action(_ type: UInt16, _ action: FilterAction) {
        nest(type) { m in
            m.nest(1) { m in
                switch action {
                case .mirredRedirectEgress(let target):
                    m.attribute(FilterAttr.actKind, string: "mirred")
                    m.nest(FilterAttr.actOptions | NL.attrNested) { m in
                        var parms = MessageBuilder()
                        parms.append(UInt32(0))
                        parms.append(UInt32(0))
                        parms.append(FilterAttr.actStolen)
                        parms.append(Int32(0))
                        parms.append(Int32(0))
                        parms.append(FilterAttr.egressRedirect)
                        parms.append(UInt32(bitPattern: target))
                        m.attribute(FilterAttr.mirredParms, parms.bytes)
                    }
                }
            }
        }
    }
}
