/// Options of the qdisc kinds this layer builds (and decodes from dumps).
public enum QdiscOptions: Sendable, Equatable, Codable {
    case netem(Netem)
    case tbf(TBF)
    /// `bands` 2...16; `priomap` maps the 16 Linux priorities to bands (each < bands).
    case prio(bands: Int, priomap: [UInt8])
    /// The clsact hook qdisc: add it with parent `TCHandle.ingress` and handle `TCHandle.clsactHandle`.
    case clsact
    /// The ingress qdisc: same parent and handle as clsact.
    case ingress

    /// The kernel's default prio map ({1,2,2,2,1,2,0,0,1,1,1,1,1,1,1,1}); with more than 3 bands, bands 4 and up
    /// receive nothing unless a filter classifies traffic into them.
    public static let defaultPriomap: [UInt8] = [1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]

    /// TCA_KIND.
    public var kind: String {
        switch self {
        case .netem: return "netem"
        case .tbf: return "tbf"
        case .prio: return "prio"
        case .clsact: return "clsact"
        case .ingress: return "ingress"
        }
    }
}

/// How `addQdisc` treats an existing qdisc at the same place.
public enum QdiscMode: Sendable, Equatable {
    /// NLM_F_CREATE|NLM_F_EXCL: fail (EEXIST) if one exists (`tc qdisc add`).
    case exclusive
    /// NLM_F_CREATE|NLM_F_REPLACE: create, or replace what is there (`tc qdisc replace`). Replacing a qdisc of the
    /// same kind and handle is a change in the kernel.
    case replace
    /// No flags: modify the existing qdisc in place (`tc qdisc change`); fails if absent.
    case change

    var flags: UInt16 {
        switch self {
        case .exclusive: return NL.create | NL.excl
        case .replace: return NL.create | NL.replace
        case .change: return 0
        }
    }
}

/// A top-level TCA_* attribute kept as dumped.
public struct RawAttribute: Sendable, Equatable, Hashable, Codable {
    public var type: UInt16
    public var payload: [UInt8]
    public init(type: UInt16, payload: [UInt8]) { (self.type, self.payload) = (type, payload) }
}

/// A qdisc as dumped (RTM_GETQDISC), with enough raw data to re-create it (`RTNetlink.addQdisc(raw:mode:)`).
public struct Qdisc: Sendable, Equatable, Codable {
    public var ifindex: Int32
    public var handle: UInt32
    public var parent: UInt32
    /// TCA_KIND.
    public var kind: String
    /// Decoded options for netem, tbf, prio, clsact and ingress; nil for other kinds.
    public var options: QdiscOptions?
    /// The TCA_OPTIONS payload exactly as dumped (empty when `hasOptions` is false).
    public var rawOptions: [UInt8]
    /// Whether the dump carried TCA_OPTIONS at all.
    public var hasOptions: Bool
    /// Other top-level attributes needed to re-create the qdisc: TCA_STAB, TCA_INGRESS_BLOCK, TCA_EGRESS_BLOCK.
    public var rawAttributes: [RawAttribute]

    public init(
        ifindex: Int32, handle: UInt32, parent: UInt32, kind: String, options: QdiscOptions? = nil,
        rawOptions: [UInt8] = [], hasOptions: Bool = false, rawAttributes: [RawAttribute] = []
    ) {
        (self.ifindex, self.handle, self.parent, self.kind, self.options) = (ifindex, handle, parent, kind, options)
        (self.rawOptions, self.hasOptions, self.rawAttributes) = (rawOptions, hasOptions, rawAttributes)
    }

    public var isRoot: Bool { parent == TCHandle.root }

    /// Handle 0 marks a qdisc the kernel attached by itself (noqueue, pfifo_fast, mq and its per-queue children, or
    /// the default_qdisc sysctl's kind). Any qdisc created with tc gets a non-zero handle (assigned from 8000: up
    /// when none is given). The faithful "restore" of a default root is to delete the root that replaced it.
    public var isKernelDefault: Bool { handle == 0 }

    /// Why `RTNetlink.addQdisc(raw:)` could not re-create this qdisc faithfully from its dump, or nil when it can.
    /// Child qdiscs are separate dump entries (their `parent` has this qdisc's major): a root with children (e.g. a
    /// prio whose bands carry their own qdiscs) needs those re-created too, or refused.
    public var restoreLimitation: String? {
        if rawAttributes.contains(where: { $0.type == NL.tcaStab }) {
            return "\(kind) has a size table (stab) whose data the kernel does not dump"
        }
        switch kind {
        case "netem":
            return "netem's delay distribution table is not dumped"
        case "mq", "mqprio", "taprio":
            return "\(kind) depends on the device's hardware queues and its per-queue children"
        case "htb", "hfsc", "cbq", "drr", "qfq", "ets", "cake", "atm", "multiq":
            // Their classes (rates, children) are separate objects this layer does not dump; htb's dump also reports
            // its version as 0x30011 where creation requires 3.
            return "\(kind) is classful and its classes are not part of the snapshot"
        default:
            return nil
        }
    }
}

extension RTNetlink {
    /// Every qdisc of interface `ifindex` (a dump, filtered by ifindex here and, with strict checking, by the kernel).
    public func qdiscs(ifindex: Int32) throws(NetlinkError) -> [Qdisc] {
        try dump(Self.qdiscDumpRequest(ifindex: ifindex), "list qdiscs of ifindex \(ifindex)")
            .compactMap(Self.decodeQdisc).filter { $0.ifindex == ifindex }
    }

    /// Adds (or replaces, or changes) a qdisc built from `options`.
    public func addQdisc(ifindex: Int32, parent: UInt32, handle: UInt32, options: QdiscOptions, mode: QdiscMode) throws(NetlinkError) {
        let message = try Self.addQdiscRequest(ifindex: ifindex, parent: parent, handle: handle, options: options, mode: mode)
        _ = try request(message, "\(Self.verb(mode)) qdisc \(options.kind) on ifindex \(ifindex)")
    }

    /// Re-creates a dumped qdisc from its kind, raw TCA_OPTIONS and raw extra attributes (for restoring a snapshot).
    /// See `Qdisc.restoreLimitation` and `isKernelDefault` for what this cannot bring back.
    public func addQdisc(raw qdisc: Qdisc, mode: QdiscMode) throws(NetlinkError) {
        _ = try request(Self.addRawQdiscRequest(qdisc, mode: mode), "\(Self.verb(mode)) qdisc \(qdisc.kind) on ifindex \(qdisc.ifindex)")
    }

    /// Adds a clsact qdisc (parent ffff:fff1, handle ffff:).
    public func addClsact(ifindex: Int32) throws(NetlinkError) {
        try addQdisc(ifindex: ifindex, parent: TCHandle.ingress, handle: TCHandle.clsactHandle, options: .clsact, mode: .exclusive)
    }

    /// Deletes the qdisc at `parent` with `handle` (handle 0 = whatever is there). Deleting a root makes the kernel
    /// re-attach the device's default qdisc.
    public func deleteQdisc(ifindex: Int32, parent: UInt32, handle: UInt32) throws(NetlinkError) {
        _ = try request(Self.deleteQdiscRequest(ifindex: ifindex, parent: parent, handle: handle), "delete qdisc \(TCHandle.describe(handle)) (parent \(TCHandle.describe(parent))) on ifindex \(ifindex)")
    }

    static func verb(_ mode: QdiscMode) -> String {
        switch mode {
        case .exclusive: return "add"
        case .replace: return "replace"
        case .change: return "change"
        }
    }

    // MARK: - Messages

    static func deleteQdiscRequest(ifindex: Int32, parent: UInt32, handle: UInt32) -> MessageBuilder {
        var m = MessageBuilder(type: NL.delQdisc, flags: 0)
        m.tcmsg(ifindex: ifindex, handle: handle, parent: parent, info: 0)
        return m
    }

    static func qdiscDumpRequest(ifindex: Int32) -> MessageBuilder {
        var m = MessageBuilder(type: NL.getQdisc, flags: 0)
        m.tcmsg(ifindex: ifindex, handle: 0, parent: 0, info: 0)
        return m
    }

    static func addQdiscRequest(
        ifindex: Int32, parent: UInt32, handle: UInt32, options: QdiscOptions, mode: QdiscMode
    ) throws(NetlinkError) -> MessageBuilder {
        var m = MessageBuilder(type: NL.newQdisc, flags: mode.flags)
        m.tcmsg(ifindex: ifindex, handle: handle, parent: parent, info: 0)
        m.attribute(NL.tcaKind, string: options.kind)
        switch options {
        case .netem(let netem):
            try netem.validate()
            netem.encodeOptions(into: &m, explicit: mode != .exclusive)
        case .tbf(let tbf):
            try tbf.validate()
            tbf.encodeOptions(into: &m)
        case .prio(let bands, let priomap):
            guard (2...16).contains(bands), priomap.count == 16, priomap.allSatisfy({ Int($0) < bands }) else {
                throw .invalid("prio options", "bands must be 2...16 and the 16 priomap entries < bands")
            }
            // struct tc_prio_qopt { int bands; u8 priomap[16]; } as the raw TCA_OPTIONS payload (not a nest).
            var opt = MessageBuilder()
            opt.append(Int32(bands))
            opt.append(priomap)
            m.attribute(NL.tcaOptions, opt.bytes)
        case .clsact, .ingress:
            break
        }
        return m
    }

    static func addRawQdiscRequest(_ q: Qdisc, mode: QdiscMode) -> MessageBuilder {
        var m = MessageBuilder(type: NL.newQdisc, flags: mode.flags)
        m.tcmsg(ifindex: q.ifindex, handle: q.handle, parent: q.parent, info: 0)
        m.attribute(NL.tcaKind, string: q.kind)
        if q.hasOptions { m.attribute(NL.tcaOptions, q.rawOptions) }
        for a in q.rawAttributes { m.attribute(a.type, a.payload) }
        return m
    }

    static func decodeQdisc(_ message: ReceivedMessage) -> Qdisc? {
        guard message.type == NL.newQdisc, let header = TCMessageHeader(message.payload) else { return nil }
        let attributes = Attribute.parse(message.payload.dropFirst(TCMessageHeader.size))
        guard let kind = attributes[NL.tcaKind]?.string else { return nil }
        let rawOptions = attributes[NL.tcaOptions]?.payload
        var options: QdiscOptions?
        switch kind {
        case "netem": options = rawOptions.flatMap(Netem.init(dumpedOptions:)).map(QdiscOptions.netem)
        case "tbf": options = rawOptions.flatMap(TBF.init(dumpedOptions:)).map(QdiscOptions.tbf)
        case "prio":
            if let raw = rawOptions, raw.count >= 20, let bands = raw.hostInteger(Int32.self, at: 0) {
                options = .prio(bands: Int(bands), priomap: Array(raw.dropFirst(4).prefix(16)))
            }
        case "clsact": options = .clsact
        case "ingress": options = .ingress
        default: break
        }
        let kept: Set<UInt16> = [NL.tcaStab, NL.tcaIngressBlock, NL.tcaEgressBlock]
        return Qdisc(
            ifindex: header.ifindex, handle: header.handle, parent: header.parent, kind: kind, options: options,
            rawOptions: rawOptions.map(Array.init) ?? [], hasOptions: rawOptions != nil,
            rawAttributes: attributes.filter { kept.contains($0.type) }.map { RawAttribute(type: $0.type, payload: Array($0.payload)) })
    }
}
