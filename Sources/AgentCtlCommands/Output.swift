import AgentAPI
import Foundation

/// Writing to the terminal: stdout for results, stderr for messages and progress.
enum Terminal {
    static func stdout(_ line: String) {
        print(line)
    }

    static func stderr(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    /// Raw text on stderr (no newline), for `\r` redraws.
    static func stderrRaw(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    static var stderrIsTTY: Bool { isatty(STDERR_FILENO) == 1 }

    static func flush() { fflush(nil) }

    /// Pretty JSON (sorted keys) on stdout.
    static func printJSON(_ value: some Encodable) throws {
        let data = try WireCoding.encoder(pretty: true).encode(value)
        print(String(decoding: data, as: UTF8.self))
    }

    /// Compact JSON on one line of stdout, flushed (for streams consumed line by line).
    static func printJSONLine(_ value: some Encodable) throws {
        let data = try WireCoding.encoder().encode(value)
        print(String(decoding: data, as: UTF8.self))
        flush()
    }
}

/// How faults and times are shown to people.
enum Format {
    /// Time left as `4m12s`, `45s`, `1h2m`; never negative.
    static func timeLeft(_ seconds: Double) -> String {
        let s = max(0, Int(seconds.rounded(.up)))
        let h = s / 3600
        let m = (s % 3600) / 60
        let sec = s % 60
        if h > 0 { return m > 0 ? "\(h)h\(m)m" : "\(h)h" }
        if m > 0 { return "\(m)m\(sec)s" }
        return "\(sec)s"
    }

    /// A countdown clock: `00:27`, `04:12`, `1:02:03`.
    static func clock(_ seconds: Double) -> String {
        let s = max(0, Int(seconds.rounded(.up)))
        let h = s / 3600
        let m = (s % 3600) / 60
        let sec = s % 60
        if h > 0 { return String(format: "%d:%02d:%02d", h, m, sec) }
        return String(format: "%02d:%02d", m, sec)
    }

    /// `EXPIRES-IN` column: time left, or `-` once the fault has ended.
    static func expiresIn(_ fault: FaultObject, now: Date = Date()) -> String {
        if fault.state.isFinal { return "-" }
        return timeLeft(fault.expiresAt.timeIntervalSince(now))
    }

    static func labels(_ labels: [String: String]) -> String {
        if labels.isEmpty { return "-" }
        return labels.keys.sorted().map { "\($0)=\(labels[$0]!)" }.joined(separator: ",")
    }

    static func processes(_ value: JSONValue?) -> [JSONValue] {
        if case .array(let a)? = value { return a }
        return []
    }

    static func process(_ p: JSONValue) -> String {
        let pid = p["pid"]?.numberValue.map { String(Int64($0)) } ?? "?"
        if let comm = p["comm"]?.stringValue, !comm.isEmpty { return "pid \(pid) (\(comm))" }
        return "pid \(pid)"
    }

    /// `pid 4242 (sleep)`, `3 processes`, `3 processes, 1 skipped`, or the spec when the target says nothing.
    static func target(_ fault: FaultObject) -> String {
        let procs = processes(fault.target["processes"])
        let skipped = processes(fault.target["skipped"])
        if fault.target["processes"] != nil {
            var s: String
            switch procs.count {
            case 0: s = skipped.isEmpty ? spec(fault.spec) : "0 processes"
            case 1: s = process(procs[0])
            default: s = "\(procs.count) processes"
            }
            if !skipped.isEmpty { s += ", \(skipped.count) skipped" }
            return s
        }
        return spec(fault.spec)
    }

    /// A spec as short `key=value` words: `pid=4242`, `name=^nginx signal=TERM`.
    static func spec(_ spec: JSONValue) -> String {
        guard let object = spec.objectValue, !object.isEmpty else { return "-" }
        return object.keys.sorted().map { "\($0)=\(scalar(object[$0]!))" }.joined(separator: " ")
    }

    static func scalar(_ value: JSONValue) -> String {
        switch value {
        case .string(let s): return s
        case .number(let n): return n.rounded() == n && abs(n) < 9e15 ? String(Int64(n)) : String(n)
        case .bool(let b): return String(b)
        case .null: return "null"
        default: return compactJSON(value)
        }
    }

    static func compactJSON(_ value: some Encodable) -> String {
        guard let data = try? WireCoding.encoder().encode(value) else { return "?" }
        return String(decoding: data, as: UTF8.self)
    }

    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        return RFC3339.format(date)
    }

    /// A table with left-aligned columns separated by two spaces, no trailing blanks.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        func render(_ cells: [String]) -> String {
            var line = ""
            for (i, cell) in cells.enumerated() {
                if i == cells.count - 1 {
                    line += cell
                } else {
                    line += cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) + "  "
                }
            }
            return line.replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        return ([render(header)] + rows.map(render)).joined(separator: "\n")
    }

    /// `key: value` lines with the values aligned.
    static func keyValues(_ pairs: [(String, String)]) -> String {
        let width = (pairs.map(\.0.count).max() ?? 0) + 1
        return pairs.map { key, value in
            (key + ":").padding(toLength: width, withPad: " ", startingAt: 0) + " " + value
        }.joined(separator: "\n")
    }
}
