import AgentAPI
import AgentCore
import Foundation

/// Strict reading of a fault's `spec` object: every key must be known, every value of the right type; each error
/// names the field (`spec.pid`) so the caller knows what to fix.
struct SpecReader {
    let object: [String: JSONValue]
    let kind: String

    init(_ spec: JSONValue, kind: String, allowed: Set<String>) throws {
        guard case .object(let o) = spec else { throw AgentError.badRequest("spec must be a JSON object", field: "spec") }
        for key in o.keys.sorted() where !allowed.contains(key) {
            throw AgentError.badRequest(
                "unknown field '\(key)' for kind '\(kind)'; known: \(allowed.sorted().joined(separator: ", "))",
                field: "spec.\(key)")
        }
        object = o
        self.kind = kind
    }

    func has(_ key: String) -> Bool {
        if let v = object[key], v != .null { return true }
        return false
    }

    func string(_ key: String) throws -> String? {
        guard let v = object[key], v != .null else { return nil }
        guard case .string(let s) = v else { throw AgentError.badRequest("\(key) must be a string", field: "spec.\(key)") }
        // No spec field has a use for control characters, and a NUL would cut a path short in the kernel's eyes
        // while the agent journals the whole string (a fault that could then never be reverted).
        guard !s.hasControlCharacters else {
            throw AgentError.badRequest("\(key) must not hold NUL or other control characters", field: "spec.\(key)")
        }
        return s
    }

    /// The longest path-like field (PATH_MAX).
    static let maxPathLength = 4096

    /// A field naming something on the host: a path, a cgroup, a unit, an interface, a namespace. Like `string`
    /// (no NUL or control characters), and at most `maxLength` bytes. Every driver reads such fields through here.
    func path(_ key: String, maxLength: Int = SpecReader.maxPathLength) throws -> String? {
        guard let s = try string(key) else { return nil }
        guard s.utf8.count <= maxLength else {
            throw AgentError.badRequest("\(key) is \(s.utf8.count) bytes long; the limit is \(maxLength)", field: "spec.\(key)")
        }
        return s
    }

    /// A whole number, given as a JSON number or a numeric string.
    func integer(_ key: String, range: ClosedRange<Int64>) throws -> Int64? {
        guard let v = object[key], v != .null else { return nil }
        let n: Int64?
        switch v {
        // Checked: 9.5, 1e300, -1e300 and 1e19 are refused here, never converted (a plain Int64(d) traps).
        case .number(let d): n = d.isFinite && d.rounded() == d && abs(d) < 9e15 ? Int64(d) : nil
        case .string(let s): n = s.utf8.count <= 20 ? Int64(s) : nil
        default: n = nil
        }
        guard let n else { throw AgentError.badRequest("\(key) must be a whole number", field: "spec.\(key)") }
        guard range.contains(n) else {
            throw AgentError.badRequest("\(key) must be between \(range.lowerBound) and \(range.upperBound)", field: "spec.\(key)")
        }
        return n
    }

    func duration(_ key: String, atLeast minimum: Duration) throws -> Duration? {
        guard let s = try string(key) else { return nil }
        guard let d = Units.parseDuration(s) else {
            throw AgentError.badRequest("\(key) '\(s)' is not a duration (250ms, 5s, 1m)", field: "spec.\(key)")
        }
        guard d >= minimum else {
            throw AgentError.badRequest("\(key) must be at least \(Units.formatDuration(minimum))", field: "spec.\(key)")
        }
        return d
    }
}
