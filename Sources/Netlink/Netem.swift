/// A probability as the kernel stores it: a u32 where UINT32_MAX means 1 (100 %).
///
/// Keeping the scaled value (rather than a Double) makes a setting read back from a dump compare exactly equal to the
/// one that was sent.
public struct Probability: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    public var scaled: UInt32

    public static let zero = Probability(scaled: 0)
    public static let one = Probability(scaled: .max)

    public init(scaled: UInt32) { self.scaled = scaled }

    /// `fraction` in 0...1, rounded as tc does (`rint(fraction * UINT32_MAX)`); nil outside that range or NaN.
    public init?(fraction: Double) {
        guard fraction >= 0, fraction <= 1 else { return nil }
        scaled = UInt32((fraction * Double(UInt32.max)).rounded(.toNearestOrEven))
    }

    /// `percent` in 0...100; nil outside.
    public init?(percent: Double) { self.init(fraction: percent / 100) }

    public var fraction: Double { Double(scaled) / Double(UInt32.max) }
    public var isZero: Bool { scaled == 0 }
    public var description: String { "\(fraction * 100)%" }
    public static func < (a: Probability, b: Probability) -> Bool { a.scaled < b.scaled }

    public init(from decoder: any Decoder) throws { scaled = try decoder.singleValueContainer().decode(UInt32.self) }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(scaled)
    }
}

/// Every netem knob. Defaults are "no effect" with tc's default queue limit of 1000 packets.
///
/// Units: times in nanoseconds, rate in bytes per second, probabilities as `Probability`.
public struct Netem: Sendable, Equatable, Codable {
    /// Added delay (sent as TCA_NETEM_LATENCY64).
    public var latency: UInt64 = 0
    /// Delay variation (TCA_NETEM_JITTER64). The kernel caps it at INT_MAX ns (about 2.147 s).
    public var jitter: UInt64 = 0
    /// Correlation of successive delays.
    public var delayCorrelation: Probability = .zero
    /// Shape of the jitter; needs latency and jitter > 0 unless uniform.
    public var distribution: Distribution = .uniform
    public var loss: Loss = .none
    public var duplicate: Probability = .zero
    public var duplicateCorrelation: Probability = .zero
    public var corrupt: Probability = .zero
    public var corruptCorrelation: Probability = .zero
    /// Probability that a packet is sent immediately (ahead of delayed ones); needs latency > 0.
    public var reorder: Probability = .zero
    public var reorderCorrelation: Probability = .zero
    /// Reorder only every `gap`-th packet. 0 with a reorder probability is sent as 1 (as tc does): the kernel never
    /// reorders with gap 0.
    public var gap: UInt32 = 0
    /// Rate limit in bytes per second; 0 = none. At or above 2^32 it is sent as TCA_NETEM_RATE64.
    public var rate: UInt64 = 0
    /// Bytes added to (or, negative, removed from) each packet's length for the rate computation.
    public var packetOverhead: Int32 = 0
    /// Link-layer cell size for the rate computation (e.g. 53 for ATM); 0 = none.
    public var cellSize: UInt32 = 0
    public var cellOverhead: Int32 = 0
    /// Mark ECN-capable packets (CE) instead of dropping them on loss.
    public var ecn: Bool = false
    /// Queue limit in packets.
    public var limit: UInt32 = 1000

    public init() {}

    /// How jitter is distributed around the latency.
    public enum Distribution: Sendable, Equatable, Codable {
        /// No table: the kernel draws uniformly in latency ± jitter.
        case uniform
        /// Tables generated in-process (`NetemDistribution`), 4096 entries scaled by 8192.
        case normal, pareto, paretoNormal
        /// A caller-supplied inverse-CDF table (at most 16384 entries, scaled by 8192).
        case custom([Int16])

        /// The table sent as TCA_NETEM_DELAY_DIST; nil for `.uniform`.
        public var table: [Int16]? {
            switch self {
            case .uniform: return nil
            case .normal: return NetemDistribution.normal
            case .pareto: return NetemDistribution.pareto
            case .paretoNormal: return NetemDistribution.paretoNormal
            case .custom(let table): return table
            }
        }
    }

    /// Packet loss models.
    public enum Loss: Sendable, Equatable, Codable {
        case none
        /// Independent loss with correlation between successive decisions (qopt.loss + TCA_NETEM_CORR.loss_corr).
        case random(Probability, correlation: Probability = .zero)
        /// The Gilbert-Elliott model (TCA_NETEM_LOSS / NETEM_LOSS_GE).
        case gilbertElliott(GilbertElliott)
        /// The 4-state Markov model (TCA_NETEM_LOSS / NETEM_LOSS_GI).
        case fourState(FourState)
    }

    /// Gilbert-Elliott parameters as the kernel holds them (`struct tc_netem_gemodel`): `p` good->bad transition,
    /// `r` bad->good transition, `h` probability a packet is DELIVERED in the bad state, `k1` probability a packet is
    /// LOST in the good state.
    public struct GilbertElliott: Sendable, Equatable, Codable {
        public var p: Probability
        public var r: Probability
        public var h: Probability
        public var k1: Probability

        public init(p: Probability, r: Probability, h: Probability, k1: Probability) {
            (self.p, self.r, self.h, self.k1) = (p, r, h, k1)
        }

        /// tc's `loss gemodel p [r [1-h [1-k]]]`, fractions in 0...1: `r` defaults to 1 - p, `1-h` (loss in the bad
        /// state) to 1, `1-k` (loss in the good state) to 0. nil if any value is outside 0...1.
        public init?(p: Double, r: Double? = nil, oneMinusH: Double = 1, oneMinusK: Double = 0) {
            // Computed in Double as tc does, so the wire values match tc's bit for bit.
            guard let p1 = Probability(fraction: p), let r1 = Probability(fraction: r ?? 1 - p),
                let h1 = Probability(fraction: 1 - oneMinusH), let k1 = Probability(fraction: oneMinusK)
            else { return nil }
            self.init(p: p1, r: r1, h: h1, k1: k1)
        }
    }

    /// 4-state Markov loss (`struct tc_netem_gimodel`, field order p13, p31, p32, p14, p23; tc's command line takes
    /// them as `state p13 p31 p32 p23 p14`).
    public struct FourState: Sendable, Equatable, Codable {
        public var p13: Probability
        public var p31: Probability
        public var p32: Probability
        public var p14: Probability
        public var p23: Probability

        public init(p13: Probability, p31: Probability, p32: Probability = .zero, p14: Probability = .zero, p23: Probability = .one) {
            (self.p13, self.p31, self.p32, self.p14, self.p23) = (p13, p31, p32, p14, p23)
        }
    }

    /// Checks the combinations tc refuses (which the kernel would otherwise accept with a different meaning).
    public func validate() throws(NetlinkError) {
        let op = "netem options"
        if !reorder.isZero && latency == 0 { throw .invalid(op, "reorder needs a latency") }
        if gap > 0 && reorder.isZero { throw .invalid(op, "gap needs a reorder probability") }
        if distribution != .uniform && (latency == 0 || jitter == 0) {
            throw .invalid(op, "a distribution needs latency and jitter")
        }
        if jitter > UInt64(Int32.max) { throw .invalid(op, "jitter above 2147483647 ns") }
        if latency > UInt64(Int64.max) { throw .invalid(op, "latency too large") }
        if let table = distribution.table, table.isEmpty || table.count > 16384 {
            throw .invalid(op, "distribution table needs 1...16384 entries")
        }
    }
}

// MARK: - Encoding

/// TCA_NETEM_* attribute types (include/uapi/linux/pkt_sched.h).
enum NetemAttr {
    static let corr: UInt16 = 1
    static let delayDist: UInt16 = 2
    static let reorder: UInt16 = 3
    static let corrupt: UInt16 = 4
    static let loss: UInt16 = 5
    static let rate: UInt16 = 6
    static let ecn: UInt16 = 7
    static let rate64: UInt16 = 8
    static let latency64: UInt16 = 10
    static let jitter64: UInt16 = 11
    // NETEM_LOSS_* inside TCA_NETEM_LOSS
    static let lossGI: UInt16 = 1
    static let lossGE: UInt16 = 2
}

extension Netem {
    /// Appends TCA_OPTIONS for netem. Not a normal nest: the payload is `struct tc_netem_qopt` (24 B: latency ticks,
    /// limit, loss, gap, duplicate, jitter ticks) followed directly by TCA_NETEM_* attributes, and TCA_OPTIONS'
    /// length covers all of it; no NLA_F_NESTED.
    ///
    /// Attribute order follows tc (CORR, REORDER, ECN, CORRUPT, LOSS, RATE64, RATE, then LATENCY64, JITTER64,
    /// DELAY_DIST). `explicit` sends CORR, REORDER, ECN, CORRUPT, RATE, LATENCY64 and JITTER64 even when zero: the
    /// kernel's netem_change keeps the previous value of any of these that is absent, so a change or replace must
    /// name them all. A distribution table cannot be removed by a change (an absent DELAY_DIST keeps the old one).
    func encodeOptions(into m: inout MessageBuilder, explicit: Bool) {
        m.nest(NL.tcaOptions) { m in
            // Times go in LATENCY64/JITTER64 (ns); the qopt tick fields stay 0 so nothing is rounded to 64 ns.
            m.append(UInt32(0))
            m.append(limit)
            if case .random(let p, _) = loss { m.append(p.scaled) } else { m.append(UInt32(0)) }
            m.append(!reorder.isZero && gap == 0 ? 1 : gap)
            m.append(duplicate.scaled)
            m.append(UInt32(0))

            var lossCorrelation = Probability.zero
            if case .random(_, let c) = loss { lossCorrelation = c }
            if explicit || !delayCorrelation.isZero || !lossCorrelation.isZero || !duplicateCorrelation.isZero {
                // struct tc_netem_corr { delay_corr, loss_corr, dup_corr }
                m.attribute(NetemAttr.corr, words([delayCorrelation.scaled, lossCorrelation.scaled, duplicateCorrelation.scaled]))
            }
            if explicit || !reorder.isZero {
                m.attribute(NetemAttr.reorder, words([reorder.scaled, reorderCorrelation.scaled]))
            }
            if explicit || ecn { m.attribute(NetemAttr.ecn, integer: UInt32(ecn ? 1 : 0)) }
            if explicit || !corrupt.isZero {
                m.attribute(NetemAttr.corrupt, words([corrupt.scaled, corruptCorrelation.scaled]))
            }
            switch loss {
            case .none, .random: break
            case .gilbertElliott(let ge):
                m.nest(NetemAttr.loss | NL.attrNested) {
                    $0.attribute(NetemAttr.lossGE, words([ge.p.scaled, ge.r.scaled, ge.h.scaled, ge.k1.scaled]))
                }
            case .fourState(let gi):
                m.nest(NetemAttr.loss | NL.attrNested) {
                    $0.attribute(NetemAttr.lossGI, words([gi.p13.scaled, gi.p31.scaled, gi.p32.scaled, gi.p14.scaled, gi.p23.scaled]))
                }
            }
            if rate >= 1 << 32 { m.attribute(NetemAttr.rate64, integer: rate) }
            if explicit || rate > 0 {
                // struct tc_netem_rate { u32 rate; s32 packet_overhead; u32 cell_size; s32 cell_overhead }
                var r = MessageBuilder()
                r.append(rate >= 1 << 32 ? UInt32.max : UInt32(rate))
                r.append(packetOverhead)
                r.append(cellSize)
                r.append(cellOverhead)
                m.attribute(NetemAttr.rate, r.bytes)
            }
            if explicit || latency > 0 { m.attribute(NetemAttr.latency64, integer: Int64(latency)) }
            if explicit || jitter > 0 { m.attribute(NetemAttr.jitter64, integer: Int64(jitter)) }
            if let table = distribution.table {
                m.attribute(NetemAttr.delayDist, table.flatMap { v in withUnsafeBytes(of: v) { Array($0) } })
            }
        }
    }

    /// Decodes a dumped TCA_OPTIONS payload. The kernel does not dump the distribution table, so `distribution` is
    /// always `.uniform` here: compare with `matches(dumped:)`.
    init?(dumpedOptions payload: ArraySlice<UInt8>) {
        guard payload.count >= 24 else { return nil }
        let q = { (i: Int) in payload.hostInteger(UInt32.self, at: i * 4)! }
        self.init()
        latency = UInt64(q(0)) * 64
        limit = q(1)
        let lossScaled = q(2)
        gap = q(3)
        duplicate = Probability(scaled: q(4))
        jitter = UInt64(q(5)) * 64
        var lossCorrelation = Probability.zero
        var rate32: UInt32 = 0
        var rate64: UInt64?
        for a in Attribute.parse(payload.dropFirst(24)) {
            let w = { (i: Int) in Probability(scaled: a.payload.hostInteger(UInt32.self, at: i * 4) ?? 0) }
            switch a.type {
            case NetemAttr.latency64: latency = UInt64(bitPattern: Int64(truncatingIfNeeded: a.u64 ?? 0))
            case NetemAttr.jitter64: jitter = UInt64(bitPattern: Int64(truncatingIfNeeded: a.u64 ?? 0))
            case NetemAttr.corr: (delayCorrelation, lossCorrelation, duplicateCorrelation) = (w(0), w(1), w(2))
            case NetemAttr.reorder: (reorder, reorderCorrelation) = (w(0), w(1))
            case NetemAttr.corrupt: (corrupt, corruptCorrelation) = (w(0), w(1))
            case NetemAttr.ecn: ecn = (a.u32 ?? 0) != 0
            case NetemAttr.rate64: rate64 = a.u64
            case NetemAttr.rate:
                rate32 = a.u32 ?? 0
                packetOverhead = a.payload.hostInteger(Int32.self, at: 4) ?? 0
                cellSize = a.payload.hostInteger(UInt32.self, at: 8) ?? 0
                cellOverhead = a.payload.hostInteger(Int32.self, at: 12) ?? 0
            case NetemAttr.loss:
                for model in a.nested {
                    let m = { (i: Int) in Probability(scaled: model.payload.hostInteger(UInt32.self, at: i * 4) ?? 0) }
                    if model.type == NetemAttr.lossGE {
                        loss = .gilbertElliott(GilbertElliott(p: m(0), r: m(1), h: m(2), k1: m(3)))
                    } else if model.type == NetemAttr.lossGI {
                        loss = .fourState(FourState(p13: m(0), p31: m(1), p32: m(2), p14: m(3), p23: m(4)))
                    }
                }
            default: continue
            }
        }
        rate = rate64 ?? UInt64(rate32)
        if case .none = loss, lossScaled != 0 || !lossCorrelation.isZero {
            loss = .random(Probability(scaled: lossScaled), correlation: lossCorrelation)
        }
    }

    /// True when a dump (`dumped`) shows what `self` asked for: every field but the distribution, which the kernel
    /// does not report, and with the gap tc-style normalised.
    public func matches(dumped: Netem) -> Bool {
        var asked = self
        asked.distribution = .uniform
        if !asked.reorder.isZero && asked.gap == 0 { asked.gap = 1 }
        if case .random(let p, let c) = asked.loss, p.isZero, c.isZero { asked.loss = .none }
        return asked == dumped
    }
}

/// Host-order u32 words as bytes.
func words(_ values: [UInt32]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v) { Array($0) } }
}
