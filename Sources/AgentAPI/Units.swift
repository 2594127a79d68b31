import Foundation

/// Parsing of the units the CLI and the API accept: durations, sizes, percentages. One place, so both agree.
public enum Units {
    /// The longest duration (and the largest sum of parts) any field accepts: 10 years. Anything longer is refused
    /// as unparseable rather than converted (an unchecked conversion of `1e300s` would trap).
    public static let maxDuration = Duration.seconds(10 * 366 * 86400)
    /// The largest size any field accepts: 1 EiB.
    public static let maxSize: UInt64 = 1 << 60
    /// The largest rate any field accepts: 10 Tbit/s, in bytes per second.
    public static let maxRate: UInt64 = 1_250_000_000_000
    /// The largest percentage any field accepts (1,000,000 %, i.e. 10,000 CPUs); callers bound it further.
    public static let maxPercent: Double = 1_000_000

    /// The number at the start of `s`: ASCII digits with at most one '.', no sign, no exponent, at most 32
    /// characters (so `1e300`, `½`, `٣` and 10,000-digit numbers never reach a conversion).
    static func leadingNumber(_ s: Substring) -> (value: Double, length: Int)? {
        let part = s.prefix { ($0.isASCII && $0.isNumber) || $0 == "." }
        guard !part.isEmpty, part.count <= 32, part.filter({ $0 == "." }).count <= 1, part != ".",
            let value = Double(part), value.isFinite, value >= 0
        else { return nil }
        return (value, part.count)
    }

    /// `250ms`, `30s`, `5m`, `1h`, `1h30m`, `1.5s`, `100us`. No bare numbers: a unit is required. At most
    /// `maxDuration`.
    public static func parseDuration(_ text: String) -> Duration? {
        let s = text.trimmingCharacters(in: .whitespaces)
        guard !s.isEmpty, s.utf8.count <= 128 else { return nil }
        var total = Duration.zero
        var rest = Substring(s)
        while !rest.isEmpty {
            guard let (value, length) = leadingNumber(rest) else { return nil }
            let numberPart = rest.prefix(length)
            rest = rest.dropFirst(numberPart.count)
            let unitPart = rest.prefix { $0.isLetter || $0 == "µ" }
            rest = rest.dropFirst(unitPart.count)
            let nanosPerUnit: Double
            switch unitPart {
            case "ns": nanosPerUnit = 1
            case "us", "µs": nanosPerUnit = 1e3
            case "ms": nanosPerUnit = 1e6
            case "s": nanosPerUnit = 1e9
            case "m": nanosPerUnit = 60e9
            case "h": nanosPerUnit = 3600e9
            case "d": nanosPerUnit = 86400e9
            default: return nil
            }
            let nanos = value * nanosPerUnit
            guard nanos.isFinite, nanos < 1e18 else { return nil }
            total += .nanoseconds(Int64(nanos.rounded()))
            guard total <= maxDuration else { return nil }
        }
        return total
    }

    /// Human form of a duration: `1h2m3s`, `250ms`, `0s`.
    public static func formatDuration(_ d: Duration) -> String {
        let rawMs = (d.seconds * 1000).rounded()
        // Checked: any Duration formats, however long (durations from requests are bounded by maxDuration anyway).
        let totalMs = rawMs.isFinite && abs(rawMs) < 9e18 ? Int64(rawMs) : (rawMs < 0 ? 0 : Int64.max)
        if totalMs < 1000 { return "\(max(totalMs, 0))ms" }
        var secs = totalMs / 1000
        let ms = totalMs % 1000
        let h = secs / 3600
        secs %= 3600
        let m = secs / 60
        secs %= 60
        var out = ""
        if h > 0 { out += "\(h)h" }
        if m > 0 { out += "\(m)m" }
        if secs > 0 || ms > 0 || out.isEmpty {
            out += ms > 0 ? String(format: "%lld.%03llds", secs, ms) : "\(secs)s"
        }
        return out
    }

    /// `512KiB`, `256MiB`, `1GiB`, `10MB`, `4096` (bytes). Returns bytes.
    public static func parseSize(_ text: String) -> UInt64? {
        let s = text.trimmingCharacters(in: .whitespaces)
        guard s.utf8.count <= 64, let (value, length) = leadingNumber(Substring(s)) else { return nil }
        let unit = s.dropFirst(length).trimmingCharacters(in: .whitespaces)
        let multipliers: [String: Double] = [
            "": 1, "B": 1,
            "K": 1024, "KiB": 1024, "KB": 1e3, "kB": 1e3,
            "M": 1024 * 1024, "MiB": 1024 * 1024, "MB": 1e6,
            "G": 1024 * 1024 * 1024, "GiB": 1024 * 1024 * 1024, "GB": 1e9,
            "T": 1024 * 1024 * 1024 * 1024, "TiB": 1024 * 1024 * 1024 * 1024, "TB": 1e12,
        ]
        guard let mult = multipliers[unit] else { return nil }
        let bytes = (value * mult).rounded()
        guard bytes.isFinite, bytes <= Double(maxSize) else { return nil }
        return UInt64(bytes)
    }

    /// `5%`, `0.5%`, `100%`. Returns the fraction 0...1 (values above 100 % are returned too; callers refuse them).
    public static func parsePercent(_ text: String) -> Double? {
        let s = text.trimmingCharacters(in: .whitespaces)
        guard s.hasSuffix("%"), s.utf8.count <= 34, let (v, length) = leadingNumber(s.dropLast()), length == s.count - 1,
            v <= maxPercent
        else { return nil }
        return v / 100
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}

/// RFC 3339 timestamps in UTC with microseconds: `2026-11-23T03:47:46.123456Z`.
public enum RFC3339 {
    public static func format(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        var secs = time_t(t.rounded(.down))
        var micros = Int(((t - Double(secs)) * 1e6).rounded())
        if micros >= 1_000_000 {
            secs += 1
            micros -= 1_000_000
        }
        var tmv = tm()
        gmtime_r(&secs, &tmv)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday, tmv.tm_hour,
            tmv.tm_min, tmv.tm_sec, micros)
    }

    public static func parse(_ text: String) -> Date? {
        // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
        let chars = Array(text.utf8)
        guard chars.count >= 20 else { return nil }
        func num(_ from: Int, _ len: Int) -> Int? {
            guard from + len <= chars.count else { return nil }
            var v = 0
            for c in chars[from..<from + len] {
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            return v
        }
        guard let year = num(0, 4), chars[4] == UInt8(ascii: "-"), let month = num(5, 2), chars[7] == UInt8(ascii: "-"),
            let day = num(8, 2), chars[10] == UInt8(ascii: "T") || chars[10] == UInt8(ascii: "t"),
            let hour = num(11, 2), chars[13] == UInt8(ascii: ":"), let minute = num(14, 2),
            chars[16] == UInt8(ascii: ":"), let second = num(17, 2)
        else { return nil }
        var i = 19
        var fraction = 0.0
        if i < chars.count, chars[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            let start = i
            while i < chars.count, chars[i] >= 48, chars[i] <= 57 {
                fraction += Double(chars[i] - 48) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        guard i < chars.count else { return nil }
        var offset = 0
        if chars[i] == UInt8(ascii: "Z") || chars[i] == UInt8(ascii: "z") {
            guard i + 1 == chars.count else { return nil }
        } else if chars[i] == UInt8(ascii: "+") || chars[i] == UInt8(ascii: "-") {
            guard i + 6 == chars.count, let oh = num(i + 1, 2), chars[i + 3] == UInt8(ascii: ":"), let om = num(i + 4, 2)
            else { return nil }
            offset = (oh * 3600 + om * 60) * (chars[i] == UInt8(ascii: "+") ? 1 : -1)
        } else {
            return nil
        }
        guard (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var tmv = tm()
        tmv.tm_year = Int32(year - 1900)
        tmv.tm_mon = Int32(month - 1)
        tmv.tm_mday = Int32(day)
        tmv.tm_hour = Int32(hour)
        tmv.tm_min = Int32(minute)
        tmv.tm_sec = Int32(second)
        let epoch = timegm(&tmv)
        return Date(timeIntervalSince1970: Double(epoch - offset) + fraction)
    }
}
