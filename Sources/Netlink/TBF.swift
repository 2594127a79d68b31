/// Token bucket filter settings (`tc qdisc ... tbf rate R burst B limit L|latency T [peakrate P mtu M]`).
///
/// Sent with `linklayer = ethernet` in the rate specs, so the kernel computes transmit times itself and no rate table
/// (TCA_TBF_RTAB) is needed; TCA_TBF_BURST (and TCA_TBF_PBURST) carry the bucket sizes in bytes.
public struct TBF: Sendable, Equatable, Codable {
    /// Rate in bytes per second (TCA_TBF_RATE64 is added at or above 2^32).
    public var rate: UInt64
    /// Bucket size in bytes.
    public var burst: UInt32
    public var limit: Limit
    /// Peak rate in bytes per second (requires `mtu`).
    public var peakRate: UInt64?
    /// Peak bucket size in bytes (the "mtu" of tc's syntax).
    public var mtu: UInt32?

    public enum Limit: Sendable, Equatable, Codable {
        /// Queue limit in bytes.
        case bytes(UInt32)
        /// Maximum time a packet may wait, in nanoseconds; converted to bytes as tc does.
        case latency(UInt64)
    }

    public init(rate: UInt64, burst: UInt32, limit: Limit, peakRate: UInt64? = nil, mtu: UInt32? = nil) {
        (self.rate, self.burst, self.limit, self.peakRate, self.mtu) = (rate, burst, limit, peakRate, mtu)
    }

    /// The queue limit in bytes: as given, or `rate × latency + burst` (the smaller of that and the peak-rate
    /// equivalent when a peak rate is set), as tc computes it.
    public var limitBytes: UInt32 {
        switch limit {
        case .bytes(let b): return b
        case .latency(let ns):
            var bytes = Double(rate) * Double(ns) / 1e9 + Double(burst)
            if let peakRate, let mtu {
                bytes = min(bytes, Double(peakRate) * Double(ns) / 1e9 + Double(mtu))
            }
            return UInt32(min(bytes, Double(UInt32.max)))
        }
    }

    public func validate() throws(NetlinkError) {
        if rate == 0 { throw .invalid("tbf options", "rate must be > 0") }
        if burst == 0 { throw .invalid("tbf options", "burst must be > 0") }
        if (peakRate == nil) != (mtu == nil) { throw .invalid("tbf options", "peak rate and mtu go together") }
        if let peakRate, peakRate <= rate { throw .invalid("tbf options", "peak rate must exceed rate") }
    }

    /// True when a dump shows what `self` asked for. The kernel keeps the bucket as a transmit time (64 ns ticks in
    /// the dump), so bursts are compared as the tick counts the kernel derives from them, and limits in bytes.
    public func matches(dumped: TBF) -> Bool {
        rate == dumped.rate && limitBytes == dumped.limitBytes && peakRate == dumped.peakRate
            && TBF.kernelTicks(bytes: burst, rate: rate) == TBF.kernelTicks(bytes: dumped.burst, rate: dumped.rate)
            && (peakRate == nil
                || TBF.kernelTicks(bytes: mtu ?? 0, rate: peakRate ?? 0)
                    == TBF.kernelTicks(bytes: dumped.mtu ?? 0, rate: dumped.peakRate ?? 0))
    }
}

/// TCA_TBF_* attribute types.
enum TBFAttr {
    static let parms: UInt16 = 1
    static let rate64: UInt16 = 4
    static let prate64: UInt16 = 5
    static let burst: UInt16 = 6
    static let pburst: UInt16 = 7
}

extension TBF {
    /// TCA_OPTIONS { TCA_TBF_PARMS (struct tc_tbf_qopt, 36 B), TCA_TBF_BURST, [RATE64], [PRATE64, PBURST] }, a
    /// nest without NLA_F_NESTED as tc sends it.
    func encodeOptions(into m: inout MessageBuilder) {
        m.nest(NL.tcaOptions) { m in
            var parms = MessageBuilder()
            parms.rateSpec(rate)
            if let peakRate { parms.rateSpec(peakRate) } else { parms.append([UInt8](repeating: 0, count: 12)) }
            parms.append(limitBytes)
            parms.append(TBF.transmitTicks(bytes: burst, rate: rate))
            parms.append(peakRate.map { TBF.transmitTicks(bytes: mtu ?? 0, rate: $0) } ?? 0)
            m.attribute(TBFAttr.parms, parms.bytes)
            m.attribute(TBFAttr.burst, integer: burst)
            if rate >= 1 << 32 { m.attribute(TBFAttr.rate64, integer: rate) }
            if let peakRate, let mtu {
                if peakRate >= 1 << 32 { m.attribute(TBFAttr.prate64, integer: peakRate) }
                m.attribute(TBFAttr.pburst, integer: mtu)
            }
        }
    }

    /// Decodes a dumped TCA_OPTIONS payload. The dump has no byte sizes, only transmit times in ticks: `burst` and
    /// `mtu` are the smallest byte counts the kernel maps to the dumped times (exactly the configured values whenever
    /// one tick carries less than one byte, i.e. at rates below 15.6 MB/s).
    init?(dumpedOptions payload: ArraySlice<UInt8>) {
        let attributes = Attribute.parse(payload)
        guard let parms = attributes[TBFAttr.parms]?.payload, parms.count >= 36 else { return nil }
        let rate32 = parms.hostInteger(UInt32.self, at: 8)!
        let peak32 = parms.hostInteger(UInt32.self, at: 20)!
        let limit = parms.hostInteger(UInt32.self, at: 24)!
        let buffer = parms.hostInteger(UInt32.self, at: 28)!
        let mtuTicks = parms.hostInteger(UInt32.self, at: 32)!
        let rate = attributes[TBFAttr.rate64]?.u64 ?? UInt64(rate32)
        let peak = attributes[TBFAttr.prate64]?.u64 ?? UInt64(peak32)
        self.init(
            rate: rate, burst: TBF.bytes(forTicks: buffer, rate: rate), limit: .bytes(limit),
            peakRate: peak == 0 ? nil : peak, mtu: peak == 0 ? nil : TBF.bytes(forTicks: mtuTicks, rate: peak))
    }

    /// What tc sends in tc_tbf_qopt.buffer/mtu: the time to send `bytes` at `rate`, in 64 ns ticks.
    static func transmitTicks(bytes: UInt32, rate: UInt64) -> UInt32 {
        guard rate > 0 else { return 0 }
        let ticks = UInt64(bytes) * 15_625_000 / rate  // 1e9 ns / 64 ns per tick
        return UInt32(min(ticks, UInt64(UInt32.max)))
    }

    /// The ticks the kernel reports for a bucket of `bytes` at `rate`: it converts bytes to nanoseconds with a
    /// fixed-point multiplier (`ns = bytes × mult >> shift`, mult = 2^shift·1e9/rate kept below 2^31) and dumps
    /// ns >> 6.
    static func kernelTicks(bytes: UInt32, rate: UInt64) -> UInt64 {
        guard rate > 0 else { return 0 }
        var factor: UInt64 = 1_000_000_000
        var shift: UInt64 = 0
        var mult: UInt64 = 1
        while true {
            mult = factor / rate
            if mult & (1 << 31) != 0 || factor & (1 << 63) != 0 { break }
            factor <<= 1
            shift += 1
        }
        let ns = (UInt64(bytes) * mult) >> shift  // both factors < 2^32
        return UInt64(UInt32(truncatingIfNeeded: ns >> 6))
    }

    /// Smallest byte count whose `kernelTicks` reaches `ticks`.
    static func bytes(forTicks ticks: UInt32, rate: UInt64) -> UInt32 {
        var (lo, hi): (UInt64, UInt64) = (0, UInt64(UInt32.max))
        while lo < hi {
            let mid = (lo + hi) / 2
            if kernelTicks(bytes: UInt32(mid), rate: rate) < UInt64(ticks) { lo = mid + 1 } else { hi = mid }
        }
        return UInt32(lo)
    }
}

extension MessageBuilder {
    /// struct tc_ratespec (12 B): u8 cell_log, u8 linklayer (1 = ethernet), u16 overhead, s16 cell_align, u16 mpu,
    /// u32 rate (bytes/s, saturated at 2^32-1; the full value goes in a RATE64 attribute).
    mutating func rateSpec(_ rate: UInt64) {
        append(UInt8(0))
        append(UInt8(1))
        append(UInt16(0))
        append(Int16(-1))  // cell_align -1 as tc sends; unused with linklayer ethernet
        append(UInt16(0))
        append(UInt32(min(rate, UInt64(UInt32.max))))
    }
}
