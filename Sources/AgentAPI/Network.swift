import Foundation

extension Units {
    /// Rates: `1mbit`, `100kbit`, `1gbit`, `500bit` (bits per second, SI); `10MB/s`, `1MiB/s`, `512KiB/s`, `100B/s`
    /// (bytes per second). Returns bytes per second.
    public static func parseRate(_ text: String) -> UInt64? {
        let s = text.trimmingCharacters(in: .whitespaces)
        guard s.utf8.count <= 64, let (value, length) = leadingNumber(Substring(s)), value > 0 else { return nil }
        let unit = s.dropFirst(length).trimmingCharacters(in: .whitespaces).lowercased()
        let bitUnits: [String: Double] = ["bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12]
        let byteUnits: [String: Double] = [
            "b/s": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "kib/s": 1024, "mib/s": 1024 * 1024,
            "gib/s": 1024 * 1024 * 1024,
        ]
        let bytes: Double
        if let m = bitUnits[unit] {
            bytes = value * m / 8
        } else if let m = byteUnits[unit] {
            bytes = value * m
        } else {
            return nil
        }
        let rounded = bytes.rounded()
        guard rounded.isFinite, rounded >= 1, rounded <= Double(maxRate) else { return nil }
        return UInt64(rounded)
    }
}

/// An IPv4 or IPv6 network in CIDR form (`10.1.0.0/16`, `2001:db8::/32`, or a single address).
public struct CIDR: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Family: String, Sendable, Codable { case ipv4, ipv6 }
    public var family: Family
    /// Network address bytes (4 or 16), with host bits cleared.
    public var address: [UInt8]
    public var prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let addrPart = parts.first, !addrPart.isEmpty else { return nil }
        var bytes: [UInt8]
        if addrPart.contains(":") {
            var a = in6_addr()
            guard inet_pton(AF_INET6, String(addrPart), &a) == 1 else { return nil }
            bytes = withUnsafeBytes(of: &a) { Array($0) }
            family = .ipv6
        } else {
            var a = in_addr()
            guard inet_pton(AF_INET, String(addrPart), &a) == 1 else { return nil }
            bytes = withUnsafeBytes(of: &a) { Array($0) }
            family = .ipv4
        }
        let maxPrefix = bytes.count * 8
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...maxPrefix).contains(p), !parts[1].hasPrefix("+") else { return nil }
            prefix = p
        } else {
            prefix = maxPrefix
        }
        for i in 0..<bytes.count {
            let bitsHere = max(0, min(8, prefix - i * 8))
            let mask: UInt8 = bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - bitsHere))
            bytes[i] &= mask
        }
        address = bytes
    }

    public var description: String {
        var buf = [CChar](repeating: 0, count: 64)
        var bytes = address
        let ok = bytes.withUnsafeMutableBytes { raw in
            inet_ntop(family == .ipv4 ? AF_INET : AF_INET6, raw.baseAddress, &buf, socklen_t(buf.count)) != nil
        }
        let host = ok ? String(cString: buf) : "?"
        return "\(host)/\(prefix)"
    }

    /// The netmask bytes for this prefix.
    public var mask: [UInt8] {
        (0..<address.count).map { i in
            let bitsHere = max(0, min(8, prefix - i * 8))
            return bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - bitsHere))
        }
    }

    /// Whether any address lies in both networks.
    public func overlaps(_ other: CIDR) -> Bool {
        guard family == other.family else { return false }
        let p = min(prefix, other.prefix)
        for i in 0..<address.count {
            let bitsHere = max(0, min(8, p - i * 8))
            let mask: UInt8 = bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - bitsHere))
            if address[i] & mask != other.address[i] & mask { return false }
        }
        return true
    }

    /// Whether `other` lies entirely inside this network.
    public func contains(_ other: CIDR) -> Bool { overlaps(other) && prefix <= other.prefix }

    public init(from decoder: any Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let c = CIDR(s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a CIDR: \(s)"))
        }
        self = c
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
