import AgentAPI
import AgentCore
import Cgroups
import Foundation
import Testing

@testable import Faults

/// A small deterministic generator (SplitMix64), so a failing case can be replayed from its seed.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Issue 10: a property run over spec decoding. Random specs, half plausible and half hostile, go through every
/// driver's `prepare` (which only plans: nothing is applied) and through the JSON and unit parsers. None may trap,
/// and every refusal must be a client error (400, 409, 422), never an internal one.
@Suite("spec decoding under random input")
struct SpecFuzzTests {
    static let units = ["ns", "us", "ms", "s", "m", "h", "d", "%", "KiB", "MiB", "GiB", "B", "mbit", "kbit", "MB/s", "e300", ""]

    static func number(_ r: inout SeededRandom) -> Double {
        switch Int.random(in: 0..<6, using: &r) {
        case 0: return Double(Int.random(in: -3...100, using: &r))
        case 1: return Double.random(in: -1e6...1e6, using: &r)
        case 2: return [1e300, -1e300, 1e19, -1e19, 9.5, 0.5, 4_294_967_296, 2_147_483_648, 65536, 4096, 64, 65][Int.random(in: 0..<12, using: &r)]
        case 3: return Double(sign: .plus, exponent: Int.random(in: -1000...1000, using: &r), significand: 1)
        case 4: return Double(Int64.random(in: Int64.min...Int64.max, using: &r))
        default: return Double(Int.random(in: 1...65535, using: &r))
        }
    }

    static func string(_ r: inout SeededRandom) -> String {
        switch Int.random(in: 0..<6, using: &r) {
        case 0:
            let n = number(&r)
            let text = Bool.random(using: &r) ? String(format: "%.0f", n) : "\(n)"
            return text + units.randomElement(using: &r)!
        case 1: return String((0..<Int.random(in: 0...12, using: &r)).map { _ in Character(Unicode.Scalar(UInt8.random(in: 0...127, using: &r))) })
        case 2: return ["/tmp", "/", "/tmp/\u{0}x", "eth0", "lo", "KILL", "TERM", "9", "db.service", "/system.slice", "-1", "1e300", "٣", "½s"]
            .randomElement(using: &r)!
        case 3: return String(repeating: "9", count: Int.random(in: 1...400, using: &r)) + units.randomElement(using: &r)!
        case 4: return "\(Int.random(in: 0...999, using: &r)).\(Int.random(in: 0...999, using: &r))\(units.randomElement(using: &r)!)"
        default: return String(repeating: "a", count: Int.random(in: 0...5000, using: &r))
        }
    }

    static func value(_ r: inout SeededRandom, depth: Int = 0) -> JSONValue {
        switch Int.random(in: 0..<10, using: &r) {
        case 0...3: return .number(number(&r))
        case 4...7: return .string(string(&r))
        case 8: return Bool.random(using: &r) ? .bool(Bool.random(using: &r)) : .null
        default:
            if depth > 2 { return .null }
            return Bool.random(using: &r) ? .array([value(&r, depth: depth + 1)]) : .object(["k": value(&r, depth: depth + 1)])
        }
    }

    static let fields: [String: [String]] = [
        "kill": ["pid", "signal", "repeat", "cgroup", "unit"], "pause": ["pid", "cgroup", "unit"],
        "network": ["interface", "netns", "netnsPid", "direction", "delay", "jitter", "correlation", "distribution", "loss",
            "lossCorrelation", "lossGemodel", "duplicate", "corrupt", "reorder", "gap", "rate", "packetOverhead", "ecn", "limit",
            "to", "from", "port", "protocol", "excludePort", "excludeTo"],
        "squeeze": ["cgroup", "unit", "cpuMax", "memoryHigh", "memoryMax", "pidsMax", "ioMax"],
        "cpu": ["load", "cpus"], "memory": ["size"], "io": ["path", "readRate", "writeRate", "workers"],
        "disk-fill": ["path", "size", "leaveFree"],
    ]

    @Test func everyDriverRefusesRandomSpecsCleanly() throws {
        let (fs, _) = try serviceTree()
        let subtree = AgentSubtree.locate(ownCgroup: "/", delegated: false, stateDir: "/run/x")
        let drivers: [String: (JSONValue) throws -> Void] = [
            "kill": { _ = try killer.prepare(spec: $0, context: context) },
            "pause": { _ = try pause.prepare(spec: $0, context: context) },
            "network": { _ = try NetworkSpec(from: $0) },
            "squeeze": { _ = try SqueezeDriver(mount: fs.mount, controllers: ["cpu", "memory", "io", "pids"], ownCgroup: "/user.slice/x").prepare(spec: $0, context: context) },
            "cpu": { _ = try StressDriver(kind: "cpu", fs: fs, controllers: ["cpu"], subtree: subtree, reserve: 64 << 20).prepare(spec: $0, context: context) },
            "memory": { _ = try StressDriver(kind: "memory", fs: fs, controllers: ["memory"], subtree: subtree, reserve: 64 << 20).prepare(spec: $0, context: context) },
            "io": { _ = try StressDriver(kind: "io", fs: fs, controllers: ["io"], subtree: subtree, reserve: 64 << 20).prepare(spec: $0, context: context) },
            "disk-fill": { _ = try DiskFillDriver(reserve: 1 << 20).prepare(spec: $0, context: context) },
        ]
        var r = SeededRandom(state: 0x10)
        var outcomes: [Int: Int] = [:]
        for i in 0..<3000 {
            let kind = Self.fields.keys.sorted()[i % Self.fields.count]
            var spec: [String: JSONValue] = [:]
            for _ in 0..<Int.random(in: 1...4, using: &r) {
                // Plausible bases (a selector, a unit) make more cases reach the number parsing.
                spec[Self.fields[kind]!.randomElement(using: &r)!] = Self.value(&r)
            }
            if kind == "network", Bool.random(using: &r) { spec["interface"] = "eth0" }
            if kind == "squeeze", Bool.random(using: &r) { spec["unit"] = "db.service"; spec["cgroup"] = nil }
            if ["kill", "pause"].contains(kind), spec["name"] == nil, Bool.random(using: &r) { spec["pid"] = .number(Double(getpid())) }
            let status: Int
            do {
                try drivers[kind]!(.object(spec))
                status = 200
            } catch let e as AgentError {
                status = e.status
            } catch {
                status = -1
            }
            outcomes[status, default: 0] += 1
            #expect([200, 400, 409, 422].contains(status), "seed case \(i): \(kind) \(spec) -> \(status)")
        }
        #expect(outcomes[400, default: 0] > 1000)
    }

    @Test func parsersNeverTrapOnRandomText() {
        var r = SeededRandom(state: 0x20)
        for _ in 0..<20000 {
            let s = Self.string(&r)
            _ = Units.parseDuration(s)
            _ = Units.parseSize(s)
            _ = Units.parseRate(s)
            _ = Units.parsePercent(s)
            if let d = Units.parseDuration(s) { #expect(d <= Units.maxDuration) }
            if let n = Units.parseSize(s) { #expect(n <= Units.maxSize) }
        }
    }

    func isContainer(_ v: JSONValue) -> Bool {
        switch v {
        case .object, .array: return true
        default: return false
        }
    }

    @Test func strictJSONAgreesWithFoundationOrRefuses() throws {
        var r = SeededRandom(state: 0x30)
        let seeds = [
            #"{"kind":"kill","ttl":"5s","spec":{"pid":42,"signal":"TERM"},"labels":{"a":"b"}}"#,
            #"[1,2.5,-3e2,true,false,null,"x\u00e9\n",{"a":{"b":[]}}]"#,
        ]
        for i in 0..<20000 {
            var bytes = Array(seeds[i % seeds.count].utf8)
            for _ in 0..<Int.random(in: 1...3, using: &r) {
                let at = Int.random(in: 0..<bytes.count, using: &r)
                switch Int.random(in: 0..<3, using: &r) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &r)
                case 1: bytes.insert(UInt8.random(in: 0...255, using: &r), at: at)
                default: if bytes.count > 1 { bytes.remove(at: at) }
                }
            }
            let data = Data(bytes)
            guard let strict = try? StrictJSON.parse(data), isContainer(strict) else { continue }
            // Whatever the strict parser accepts, Foundation reads the same way.
            let loose = try? JSONDecoder().decode(JSONValue.self, from: data)
            #expect(loose == strict, "\(String(decoding: bytes, as: UTF8.self))")
        }
    }
}
