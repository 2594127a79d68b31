import AgentAPI
import AgentCore
import Foundation

/// The `network` fault's spec, validated. Every error names the field (`spec.loss`) and says what is allowed.
struct NetworkSpec: Codable, Sendable, Equatable {
    enum Direction: String, Codable, Sendable { case egress, ingress }
    enum Distribution: String, Codable, Sendable, CaseIterable { case uniform, normal, pareto, paretonormal }
    enum IPProtocol: String, Codable, Sendable, CaseIterable {
        case tcp, udp, icmp
        /// The IP protocol number; icmp is ICMPv6 (58) over IPv6.
        func number(ipv6: Bool) -> UInt8 {
            switch self {
            case .tcp: return 6
            case .udp: return 17
            case .icmp: return ipv6 ? 58 : 1
            }
        }
    }
    /// Gilbert-Elliott loss: p (good->bad), r (bad->good), 1-h (loss in bad), 1-k (loss in good), as fractions.
    struct GilbertElliott: Codable, Sendable, Equatable {
        var p: Double
        var r: Double
        var oneMinusH: Double
        var oneMinusK: Double
    }

    var interface: String
    var netns: String?
    var netnsPid: Int32?
    var direction: Direction = .egress
    var delayNanos: Int64?
    var jitterNanos: Int64?
    var correlation: Double?
    var distribution: Distribution?
    var loss: Double?
    var lossCorrelation: Double?
    var lossGemodel: GilbertElliott?
    var duplicate: Double?
    var duplicateCorrelation: Double?
    var corrupt: Double?
    var corruptCorrelation: Double?
    var reorder: Double?
    var reorderCorrelation: Double?
    var gap: UInt32?
    var rateBytesPerSecond: UInt64?
    var packetOverhead: Int32?
    var ecn = false
    var limit: UInt32?
    var to: CIDR?
    var from: CIDR?
    var port: UInt16?
    var ipProtocol: IPProtocol?
    var excludePorts: [UInt16] = []
    var excludeTo: [CIDR] = []
    var noDefaultExclusions = false

    static let keys: Set<String> = [
        "interface", "netns", "netnsPid", "direction", "delay", "jitter", "correlation", "distribution", "loss",
        "lossCorrelation", "lossGemodel", "duplicate", "duplicateCorrelation", "corrupt", "corruptCorrelation", "reorder",
        "reorderCorrelation", "gap", "rate", "packetOverhead", "ecn", "limit", "to", "from", "port", "protocol",
        "excludePort", "excludeTo", "noDefaultExclusions",
    ]

    /// Kernel cap on netem jitter (INT_MAX ns).
    static let maxJitterNanos: Int64 = Int64(Int32.max)

    /// Whether the fault only shapes bandwidth (then a tbf does it; otherwise netem carries every knob).
    var isRateOnly: Bool {
        rateBytesPerSecond != nil && delayNanos == nil && loss == nil && lossGemodel == nil && duplicate == nil
            && corrupt == nil && reorder == nil
    }

    /// Whether the fault applies to a subset of the traffic (then a prio tree with filters carries it).
    var isTargeted: Bool { to != nil || from != nil || port != nil || ipProtocol != nil }

    init(from spec: JSONValue) throws {
        let r = try SpecReader(spec, kind: "network", allowed: Self.keys)
        guard let iface = try r.path("interface"), !iface.isEmpty else {
            throw AgentError.badRequest("interface is required (for example eth0)", field: "spec.interface")
        }
        guard iface.utf8.count <= 15, !iface.contains("/"), !iface.contains(" ") else {
            throw AgentError.badRequest("'\(iface)' is not an interface name (at most 15 characters, no '/' or spaces)", field: "spec.interface")
        }
        interface = iface
        netns = try r.path("netns", maxLength: 255)
        if let n = netns, n.isEmpty || n.contains("/") || n == "." || n == ".." {
            throw AgentError.badRequest("netns must be a name under /run/netns", field: "spec.netns")
        }
        netnsPid = try r.integer("netnsPid", range: 1...Int64(Int32.max)).map(Int32.init)
        if netns != nil && netnsPid != nil {
            throw AgentError.badRequest("give netns or netnsPid, not both", field: "spec.netnsPid")
        }
        if let d = try r.string("direction") {
            guard let dir = Direction(rawValue: d) else {
                throw AgentError.badRequest("direction must be egress or ingress", field: "spec.direction")
            }
            direction = dir
        }

        delayNanos = try Self.nanos(r, "delay", max: .seconds(60))
        jitterNanos = try Self.nanos(r, "jitter", max: .nanoseconds(Self.maxJitterNanos))
        correlation = try Self.percent(r, "correlation")
        if let d = try r.string("distribution") {
            guard let dist = Distribution(rawValue: d) else {
                throw AgentError.badRequest(
                    "distribution must be one of \(Distribution.allCases.map(\.rawValue).joined(separator: ", "))",
                    field: "spec.distribution")
            }
            distribution = dist
        }
        if jitterNanos != nil && delayNanos == nil {
            throw AgentError.badRequest("jitter needs a delay", field: "spec.jitter")
        }
        if let dist = distribution, dist != .uniform, (jitterNanos ?? 0) == 0 {
            throw AgentError.badRequest("a \(dist.rawValue) distribution needs a jitter above 0", field: "spec.distribution")
        }
        if correlation != nil && delayNanos == nil {
            throw AgentError.badRequest("correlation (of the delay) needs a delay", field: "spec.correlation")
        }

        loss = try Self.percent(r, "loss")
        lossCorrelation = try Self.percent(r, "lossCorrelation")
        if let g = try r.string("lossGemodel") {
            lossGemodel = try Self.gemodel(g)
        }
        if loss != nil && lossGemodel != nil {
            throw AgentError.badRequest("give loss or lossGemodel, not both", field: "spec.lossGemodel")
        }
        duplicate = try Self.percent(r, "duplicate")
        duplicateCorrelation = try Self.percent(r, "duplicateCorrelation")
        corrupt = try Self.percent(r, "corrupt")
        corruptCorrelation = try Self.percent(r, "corruptCorrelation")
        reorder = try Self.percent(r, "reorder")
        reorderCorrelation = try Self.percent(r, "reorderCorrelation")
        gap = try r.integer("gap", range: 1...Int64(UInt32.max)).map(UInt32.init)
        if reorder != nil && delayNanos == nil {
            throw AgentError.badRequest("reorder needs a delay (reordered packets skip it)", field: "spec.reorder")
        }
        if gap != nil && reorder == nil {
            throw AgentError.badRequest("gap needs reorder", field: "spec.gap")
        }
        for (value, key, base) in [
            (lossCorrelation, "lossCorrelation", loss), (duplicateCorrelation, "duplicateCorrelation", duplicate),
            (corruptCorrelation, "corruptCorrelation", corrupt), (reorderCorrelation, "reorderCorrelation", reorder),
        ] where value != nil && base == nil {
            throw AgentError.badRequest("\(key) needs \(key.replacingOccurrences(of: "Correlation", with: ""))", field: "spec.\(key)")
        }

        if let rate = try r.string("rate") {
            guard let bytes = Units.parseRate(rate) else {
                throw AgentError.badRequest("rate '\(rate)' is not a rate (1mbit, 100kbit, 10MB/s)", field: "spec.rate")
            }
            rateBytesPerSecond = bytes
        }
        packetOverhead = try r.integer("packetOverhead", range: -1024...1024).map(Int32.init)
        if packetOverhead != nil && rateBytesPerSecond == nil {
            throw AgentError.badRequest("packetOverhead needs rate", field: "spec.packetOverhead")
        }
        if let e = r.object["ecn"], e != .null {
            guard case .bool(let b) = e else { throw AgentError.badRequest("ecn must be true or false", field: "spec.ecn") }
            ecn = b
        }
        if ecn && loss == nil && lossGemodel == nil {
            throw AgentError.badRequest("ecn marks instead of dropping, so it needs loss", field: "spec.ecn")
        }
        limit = try r.integer("limit", range: 1...1_000_000).map(UInt32.init)

        if delayNanos == nil && loss == nil && lossGemodel == nil && duplicate == nil && corrupt == nil && reorder == nil
            && rateBytesPerSecond == nil
        {
            throw AgentError.badRequest(
                "say what to do to the traffic: delay, loss, lossGemodel, duplicate, corrupt, reorder or rate", field: "spec")
        }

        to = try Self.cidr(r, "to")
        from = try Self.cidr(r, "from")
        if let t = to, let f = from, t.family != f.family {
            throw AgentError.badRequest("to and from must both be IPv4 or both IPv6", field: "spec.from")
        }
        port = try r.integer("port", range: 1...65535).map(UInt16.init)
        if let p = try r.string("protocol") {
            guard let proto = IPProtocol(rawValue: p.lowercased()) else {
                throw AgentError.badRequest("protocol must be tcp, udp or icmp", field: "spec.protocol")
            }
            ipProtocol = proto
        }
        if port != nil && ipProtocol == .icmp {
            throw AgentError.badRequest("icmp has no ports", field: "spec.port")
        }
        excludePorts = try Self.portList(r, "excludePort")
        excludeTo = try Self.cidrList(r, "excludeTo")
        for (key, n) in [("excludePort", excludePorts.count), ("excludeTo", excludeTo.count)] where n > 16 {
            throw AgentError.badRequest("at most 16 \(key) entries", field: "spec.\(key)")
        }
        if let n = r.object["noDefaultExclusions"], n != .null {
            guard case .bool(let b) = n else {
                throw AgentError.badRequest("noDefaultExclusions must be true or false", field: "spec.noDefaultExclusions")
            }
            noDefaultExclusions = b
        }
    }

    /// Which traffic the fault acts on.
    var selector: TrafficSelector { TrafficSelector(to: to, from: from, port: port, ipProtocol: ipProtocol) }

    /// Traffic two faults on the same interface and direction could both act on: then the second is a conflict.
    func overlaps(_ other: NetworkSpec) -> Bool { selector.overlaps(other.selector) }

    // MARK: - Field readers

    static func nanos(_ r: SpecReader, _ key: String, max: Duration) throws -> Int64? {
        guard let s = try r.string(key) else { return nil }
        guard let d = Units.parseDuration(s) else {
            throw AgentError.badRequest("\(key) '\(s)' is not a duration (100ms, 1.5s, 250us)", field: "spec.\(key)")
        }
        guard d <= max else {
            throw AgentError.badRequest("\(key) must be at most \(Units.formatDuration(max))", field: "spec.\(key)")
        }
        let c = d.components
        return c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000
    }

    static func percent(_ r: SpecReader, _ key: String) throws -> Double? {
        guard let s = try r.string(key) else { return nil }
        guard let f = Units.parsePercent(s) else {
            throw AgentError.badRequest("\(key) '\(s)' is not a percentage like 5% or 0.5%", field: "spec.\(key)")
        }
        guard f <= 1 else { throw AgentError.badRequest("\(key) must be at most 100%", field: "spec.\(key)") }
        return f
    }

    static func gemodel(_ text: String) throws -> GilbertElliott {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard (1...4).contains(parts.count) else {
            throw AgentError.badRequest("lossGemodel is p[,r[,1-h[,1-k]]] as percentages, e.g. 1%,30%", field: "spec.lossGemodel")
        }
        var v: [Double] = []
        for p in parts {
            guard let f = Units.parsePercent(p), f <= 1 else {
                throw AgentError.badRequest("lossGemodel value '\(p)' is not a percentage up to 100%", field: "spec.lossGemodel")
            }
            v.append(f)
        }
        // tc's defaults: r = 1 - p, 1-h = 100%, 1-k = 0%.
        return GilbertElliott(
            p: v[0], r: v.count > 1 ? v[1] : 1 - v[0], oneMinusH: v.count > 2 ? v[2] : 1, oneMinusK: v.count > 3 ? v[3] : 0)
    }

    static func cidr(_ r: SpecReader, _ key: String) throws -> CIDR? {
        guard let s = try r.string(key) else { return nil }
        guard let c = CIDR(s) else {
            throw AgentError.badRequest("\(key) '\(s)' is not an IPv4 or IPv6 network (10.1.0.0/16, 2001:db8::/32)", field: "spec.\(key)")
        }
        return c
    }

    static func cidrList(_ r: SpecReader, _ key: String) throws -> [CIDR] {
        try stringList(r, key).map { s in
            guard let c = CIDR(s) else {
                throw AgentError.badRequest("\(key) entry '\(s)' is not an IPv4 or IPv6 network", field: "spec.\(key)")
            }
            return c
        }
    }

    static func portList(_ r: SpecReader, _ key: String) throws -> [UInt16] {
        guard let v = r.object[key], v != .null else { return [] }
        let items: [JSONValue]
        if case .array(let a) = v { items = a } else { items = [v] }
        return try items.map { item in
            let n: Double?
            switch item {
            case .number(let d): n = d
            case .string(let s): n = s.utf8.count <= 5 ? Int(s).map(Double.init) : nil
            default: n = nil
            }
            guard let n, n.isFinite, n.rounded() == n, n >= 1, n <= 65535 else {
                throw AgentError.badRequest("\(key) entries must be ports 1-65535", field: "spec.\(key)")
            }
            return UInt16(n)
        }
    }

    static func stringList(_ r: SpecReader, _ key: String) throws -> [String] {
        guard let v = r.object[key], v != .null else { return [] }
        switch v {
        case .string: return [try r.string(key)!]
        case .array(let a):
            return try a.map {
                guard case .string(let s) = $0, !s.hasControlCharacters else {
                    throw AgentError.badRequest("\(key) must be strings without control characters", field: "spec.\(key)")
                }
                return s
            }
        default: throw AgentError.badRequest("\(key) must be a string or a list of strings", field: "spec.\(key)")
        }
    }
}

/// The part of an interface's traffic a network fault acts on (all of it when every field is nil). Journaled in the
/// fault's plan, so a second fault on the same interface can be checked against it.
struct TrafficSelector: Codable, Sendable, Equatable, CustomStringConvertible {
    var to: CIDR?
    var from: CIDR?
    /// Destination port.
    var port: UInt16?
    var ipProtocol: NetworkSpec.IPProtocol?

    var isAll: Bool { to == nil && from == nil && port == nil && ipProtocol == nil }

    /// The one address family the selector is limited to, if any.
    var family: CIDR.Family? { to?.family ?? from?.family }

    /// Whether some packet could match both selectors.
    func overlaps(_ other: TrafficSelector) -> Bool {
        func cidrsOverlap(_ a: CIDR?, _ b: CIDR?) -> Bool {
            guard let a, let b else { return true }
            return a.overlaps(b)
        }
        if let a = family, let b = other.family, a != b { return false }
        guard cidrsOverlap(to, other.to), cidrsOverlap(from, other.from) else { return false }
        if let a = ipProtocol, let b = other.ipProtocol, a != b { return false }
        if let a = port, let b = other.port, a != b { return false }
        // A port implies TCP or UDP: it never meets ICMP.
        if port != nil && other.ipProtocol == .icmp || other.port != nil && ipProtocol == .icmp { return false }
        return true
    }

    var description: String {
        if isAll { return "all IP traffic" }
        var parts: [String] = []
        if let ipProtocol { parts.append(ipProtocol.rawValue) }
        if let from { parts.append("from \(from)") }
        if let to { parts.append("to \(to)") }
        if let port { parts.append("port \(port)") }
        return parts.joined(separator: " ")
    }
}
