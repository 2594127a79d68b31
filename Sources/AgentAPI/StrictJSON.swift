import Foundation

/// A strict RFC 8259 parser for request bodies, straight into `JSONValue`.
///
/// Hand-written on purpose: Foundation's `JSONSerialization` and `JSONDecoder` accept UTF-16/UTF-32 bodies and
/// silently keep one of two duplicate keys (`{"ttl": "1h", "ttl": "1s"}`), so a proxy or an auditor that reads the
/// other copy sees a different request than the agent acts on; no package in this project's dependency graph
/// (swift-nio, swift-foundation, ...) offers a parser that refuses them. This one refuses, naming the field:
/// - anything but UTF-8 (a UTF-8, UTF-16 or UTF-32 byte-order mark, invalid or overlong sequences, lone surrogates);
/// - a key that appears twice in one object, at any depth;
/// - numbers outside the finite Double range (`1e400`), and everything JSON itself does not allow (leading zeros,
///   `NaN`, trailing commas, comments, unescaped control characters in strings, trailing data);
/// - nesting deeper than `maxDepth`.
public enum StrictJSON {
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        /// The field the error is about (`ttl`, `spec.pid`, `labels.team`), when there is one.
        public var field: String?
        public var description: String { message }
    }

    public static let maxDepth = 64

    public static func parse(_ data: Data) throws(ParseError) -> JSONValue {
        let bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) {
            throw ParseError(message: "the body starts with a byte-order mark; send UTF-8 without one", field: nil)
        }
        if bytes.starts(with: [0xFE, 0xFF]) || bytes.starts(with: [0xFF, 0xFE]) || bytes.starts(with: [0, 0, 0xFE, 0xFF]) {
            throw ParseError(message: "the body is UTF-16 or UTF-32; send UTF-8", field: nil)
        }
        if bytes.count >= 2, bytes[0] == 0 || bytes[1] == 0 {
            throw ParseError(message: "the body is not UTF-8 (it looks like UTF-16 or UTF-32); send UTF-8", field: nil)
        }
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw ParseError(message: "the body is not valid UTF-8", field: nil)
        }
        var p = Parser(bytes: bytes)
        p.skipSpace()
        let value = try p.value(path: "", depth: 0)
        p.skipSpace()
        guard p.i == bytes.count else { throw p.fail("unexpected data after the JSON document") }
        return value
    }

    struct Parser {
        let bytes: [UInt8]
        var i = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        func fail(_ what: String, field: String? = nil) -> ParseError {
            ParseError(message: "malformed JSON at byte \(i): \(what)", field: field)
        }

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D { i += 1 }
        }

        mutating func expect(_ literal: String, _ value: JSONValue) throws(ParseError) -> JSONValue {
            for b in literal.utf8 {
                guard i < bytes.count, bytes[i] == b else { throw fail("expected \(literal)") }
                i += 1
            }
            return value
        }

        static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

        mutating func value(path: String, depth: Int) throws(ParseError) -> JSONValue {
            guard depth <= StrictJSON.maxDepth else {
                throw fail("nested deeper than \(StrictJSON.maxDepth) levels", field: path.isEmpty ? nil : path)
            }
            guard i < bytes.count else { throw fail("unexpected end of the body") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var object: [String: JSONValue] = [:]
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
                    i += 1
                    return .object(object)
                }
                while true {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a key in quotes") }
                    let key = try string()
                    let field = Self.join(path, key)
                    // Swift compares strings by canonical equivalence, so "é" and "e\u0301" are one key here, as
                    // they would be in every dictionary downstream: refused like any other duplicate.
                    guard object[key] == nil else {
                        throw ParseError(message: "duplicate key '\(field)': give each field once", field: field)
                    }
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':' after a key") }
                    i += 1
                    skipSpace()
                    object[key] = try value(path: field, depth: depth + 1)
                    skipSpace()
                    guard i < bytes.count else { throw fail("unexpected end of the body in an object") }
                    if bytes[i] == UInt8(ascii: ",") {
                        i += 1
                        continue
                    }
                    guard bytes[i] == UInt8(ascii: "}") else { throw fail("expected ',' or '}'") }
                    i += 1
                    return .object(object)
                }
            case UInt8(ascii: "["):
                i += 1
                var array: [JSONValue] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
                    i += 1
                    return .array(array)
                }
                while true {
                    skipSpace()
                    array.append(try value(path: "\(path)[\(array.count)]", depth: depth + 1))
                    skipSpace()
                    guard i < bytes.count else { throw fail("unexpected end of the body in an array") }
                    if bytes[i] == UInt8(ascii: ",") {
                        i += 1
                        continue
                    }
                    guard bytes[i] == UInt8(ascii: "]") else { throw fail("expected ',' or ']'") }
                    i += 1
                    return .array(array)
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number(path: path))
            default: throw fail("unexpected character")
            }
        }

        static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

        mutating func number(path: String) throws(ParseError) -> Double {
            let start = i
            if bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard i < bytes.count, Self.isDigit(bytes[i]) else { throw fail("a number needs digits") }
            if bytes[i] == UInt8(ascii: "0") {
                i += 1
                if i < bytes.count, Self.isDigit(bytes[i]) { throw fail("numbers have no leading zeros") }
            } else {
                while i < bytes.count, Self.isDigit(bytes[i]) { i += 1 }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                guard i < bytes.count, Self.isDigit(bytes[i]) else { throw fail("a decimal point needs digits after it") }
                while i < bytes.count, Self.isDigit(bytes[i]) { i += 1 }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard i < bytes.count, Self.isDigit(bytes[i]) else { throw fail("an exponent needs digits") }
                while i < bytes.count, Self.isDigit(bytes[i]) { i += 1 }
            }
            let text = String(decoding: bytes[start..<i], as: UTF8.self)
            guard let d = Double(text), d.isFinite else {
                throw ParseError(
                    message: "number \(text.prefix(40)) is out of range", field: path.isEmpty ? nil : path)
            }
            return d
        }

        static func hex(_ b: UInt8) -> UInt32? {
            switch b {
            case 0x30...0x39: return UInt32(b - 0x30)
            case 0x41...0x46: return UInt32(b - 0x41 + 10)
            case 0x61...0x66: return UInt32(b - 0x61 + 10)
            default: return nil
            }
        }

        mutating func hex4() throws(ParseError) -> UInt32 {
            guard i + 4 <= bytes.count else { throw fail("\\u needs four hex digits") }
            var v: UInt32 = 0
            for k in 0..<4 {
                guard let h = Self.hex(bytes[i + k]) else { throw fail("\\u needs four hex digits") }
                v = v << 4 | h
            }
            i += 4
            return v
        }

        /// A string starting at the opening quote. The body was validated as UTF-8 already.
        mutating func string() throws(ParseError) -> String {
            i += 1
            var out: [UInt8] = []
            while true {
                guard i < bytes.count else { throw fail("unterminated string") }
                let b = bytes[i]
                switch b {
                case UInt8(ascii: "\""):
                    i += 1
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    i += 1
                    guard i < bytes.count else { throw fail("unterminated escape") }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800...0xDBFF).contains(scalar) {
                            guard i + 2 <= bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u")
                            else { throw fail("a lone UTF-16 surrogate is not a character") }
                            i += 2
                            let low = try hex4()
                            guard (0xDC00...0xDFFF).contains(low) else { throw fail("a lone UTF-16 surrogate is not a character") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00...0xDFFF).contains(scalar) {
                            throw fail("a lone UTF-16 surrogate is not a character")
                        }
                        guard let u = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
                        out.append(contentsOf: Array(String(Character(u)).utf8))
                    default: throw fail("invalid escape \\\(Character(Unicode.Scalar(e)))")
                    }
                case 0x00..<0x20: throw fail("control characters in strings must be escaped")
                default:
                    out.append(b)
                    i += 1
                }
            }
        }
    }
}

extension String {
    /// Whether the string holds a C0 control character (U+0000-U+001F) or DEL (U+007F): never part of a path, a
    /// name, a label or a duration, and dangerous in logs and terminals.
    public var hasControlCharacters: Bool {
        unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }
}
