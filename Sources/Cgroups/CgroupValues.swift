/// Values of cgroup v2 interface files, parsed and formatted exactly as the kernel writes and reads them
/// (Documentation/admin-guide/cgroup-v2.rst).

/// `cpu.max`: "$QUOTA $PERIOD" in microseconds; QUOTA may be "max" (no limit).
public struct CPUMax: Sendable, Equatable, Codable, CustomStringConvertible {
    /// nil = "max".
    public var quota: Int64?
    public var period: Int64

    public init(quota: Int64?, period: Int64 = 100_000) {
        self.quota = quota
        self.period = period
    }

    /// Parses "max 100000", "50000 100000" or a bare quota ("max", "20000": the kernel keeps the period).
    public init?(parsing text: String) {
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        guard (1...2).contains(parts.count) else { return nil }
        if parts[0] == "max" {
            quota = nil
        } else if let q = Int64(parts[0]), q > 0 {
            quota = q
        } else {
            return nil
        }
        if parts.count == 2 {
            guard let p = Int64(parts[1]), p > 0 else { return nil }
            period = p
        } else {
            period = 100_000
        }
    }

    /// As written to (and read from) cpu.max.
    public var description: String { "\(quota.map(String.init) ?? "max") \(period)" }

    /// quota = share x period, where share is in CPUs (0.5 = half of one CPU, 2 = two whole CPUs).
    /// The kernel wants a quota of at least 1 ms.
    public static func forShare(_ cpus: Double, period: Int64 = 100_000) -> CPUMax {
        CPUMax(quota: max(1000, Int64((cpus * Double(period)).rounded())), period: period)
    }

    /// The share of one CPU this allows (nil when unlimited).
    public var cpus: Double? { quota.map { Double($0) / Double(period) } }
}

/// A memory limit file (memory.max, memory.high, memory.swap.max) or pids.max: a number or "max".
public enum Limit: Sendable, Equatable, Codable, CustomStringConvertible {
    case max
    case value(UInt64)

    public init?(parsing text: String) {
        let t = text.trimmed(" \n\t")
        if t == "max" {
            self = .max
        } else if let n = UInt64(t) {
            self = .value(n)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .max: "max"
        case .value(let n): String(n)
        }
    }
}

/// One line of `io.max`: "MAJ:MIN rbps=N wbps=N riops=N wiops=N", each key a number or "max".
public struct IOMaxLine: Sendable, Equatable, Codable, CustomStringConvertible {
    public static let keys = ["rbps", "wbps", "riops", "wiops"]

    /// "8:0".
    public var device: String
    /// Key -> limit; a key not present means "max" (no limit).
    public var limits: [String: UInt64]

    public init(device: String, limits: [String: UInt64] = [:]) {
        self.device = device
        self.limits = limits
    }

    public init?(parsing line: String) {
        let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
        guard let dev = parts.first, Self.isDevice(String(dev)) else { return nil }
        device = String(dev)
        limits = [:]
        for p in parts.dropFirst() {
            let kv = p.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, Self.keys.contains(String(kv[0])) else { return nil }
            if kv[1] == "max" { continue }
            guard let n = UInt64(kv[1]) else { return nil }
            limits[String(kv[0])] = n
        }
    }

    /// All lines of an io.max file (devices with no limit are not listed by the kernel).
    public static func parseFile(_ text: String) -> [IOMaxLine]? {
        var out: [IOMaxLine] = []
        for line in text.split(separator: "\n") where !line.trimmed(" \t").isEmpty {
            guard let l = IOMaxLine(parsing: String(line)) else { return nil }
            out.append(l)
        }
        return out
    }

    /// "MAJ:MIN".
    public static func isDevice(_ s: String) -> Bool {
        let mm = s.split(separator: ":", omittingEmptySubsequences: false)
        return mm.count == 2 && UInt32(mm[0]) != nil && UInt32(mm[1]) != nil
    }

    /// Written to io.max: every key spelled out, absent ones as "max", so the write also clears what it must.
    public var description: String {
        ([device] + Self.keys.map { k in "\(k)=\(limits[k].map(String.init) ?? "max")" }).joined(separator: " ")
    }
}

extension StringProtocol {
    func trimmed(_ set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
