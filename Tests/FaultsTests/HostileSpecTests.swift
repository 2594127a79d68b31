import AgentAPI
import AgentCore
import Cgroups
import Foundation
import Logging
import Processes
import Testing

@testable import Faults

/// Numbers no field can hold: out of every range, or fractional where a whole number is expected.
let hugeNumbers: [JSONValue] = [1e300, -1e300, 1e19, -1e19, 9.5, -0.5, 9.000001, 4.2e9, 1.8446744073709552e19]
/// NUL, other C0 controls and DEL.
let controlCharacters = ["\u{0}", "\u{1}", "\n", "\r", "\t", "\u{1B}", "\u{1F}", "\u{7F}"]

/// Issue 10, items 1, 4 and 9: every user-supplied number is a checked conversion with a bound, and every path-like
/// field refuses NUL and control bytes. Each case is a 400 naming the field; none may trap (a trap kills the test
/// process, so a regression fails loudly).
@Suite("hostile spec values")
struct HostileSpecTests {
    /// The 400 and field `body` throws, or nil when it does not throw.
    func refusal(_ body: () throws -> Void) -> (Int, String?)? { status(body) }

    @Test("kill signal: 1e300, -1e300, 1e19, 9.5 and friends are 400 spec.signal", arguments: hugeNumbers + [0, 65, -9])
    func killSignalNumbers(_ signal: JSONValue) {
        let r = refusal { _ = try killer.prepare(spec: spec(["pid": .number(Double(getpid())), "signal": signal]), context: context) }
        #expect(r?.0 == 400, "\(signal)")
        #expect(r?.1 == "spec.signal", "\(signal)")
    }

    @Test func killSignalStrings() {
        for s in ["9.5", "1e300", "99999999999999999999999", "-9", "KILL\u{0}", String(repeating: "9", count: 5000), "SIG"] {
            let r = refusal { _ = try killer.prepare(spec: spec(["pid": .number(Double(getpid())), "signal": .string(s)]), context: context) }
            #expect(r?.0 == 400, "\(s.prefix(20))")
            #expect(r?.1 == "spec.signal", "\(s.prefix(20))")
        }
        // A whole number as a JSON number still works.
        let ok = refusal { _ = try killer.prepare(spec: spec(["pid": 999_999_999, "signal": 15]), context: context) }
        #expect(ok?.1 == "spec.pid")  // got past the signal: refused only because there is no such process
    }

    @Test("pid and repeat of pause and kill", arguments: hugeNumbers + [0, -1, 2_147_483_648])
    func pids(_ pid: JSONValue) {
        for driver in [pause as any FaultDriver, killer] {
            let r = refusal { _ = try driver.prepare(spec: spec(["pid": pid]), context: context) }
            #expect(r?.0 == 400, "\(driver.kind) \(pid)")
            #expect(r?.1 == "spec.pid", "\(driver.kind) \(pid)")
        }
        let r = refusal { _ = try killer.prepare(spec: spec(["pid": .number(Double(getpid())), "repeat": "1e300s"]), context: context) }
        #expect(r?.0 == 400 && r?.1 == "spec.repeat")
    }

    @Test func unitsRefuseWhatTheyCannotHold() {
        for d in ["1e300s", "99999999999999999999h", "1e19ns", "3661d", "9999999999d", "١s", "½s", "1..5s", ".s", "NaNs", "infs",
            String(repeating: "9", count: 400) + "s", "5000000000000000000000000000000000000s"]
        {
            #expect(Units.parseDuration(d) == nil, "\(d.prefix(20))")
        }
        #expect(Units.parseDuration("3650d") != nil)  // 10 years is the cap
        #expect(Units.parseDuration("1.5s") == .milliseconds(1500))
        for s in ["99999999999999999999GiB", "1e300", "2EiB", "17179869184GiB", "١KiB", "-1KiB", "1e3KiB"] {
            #expect(Units.parseSize(s) == nil, "\(s)")
        }
        #expect(Units.parseSize("1073741824GiB") == 1 << 60)
        for p in ["1e300%", "1e2%", "-5%", "nan%", "inf%", "10000001%", "5 %", "٥%"] { #expect(Units.parsePercent(p) == nil, "\(p)") }
        #expect(Units.parsePercent("0.5%") == 0.005)
        for r in ["1e300mbit", "99999999999999999999gbit", "100tbit", "1e3kbit"] { #expect(Units.parseRate(r) == nil, "\(r)") }
        #expect(Units.parseRate("10tbit") == 1_250_000_000_000)
        // Formatting never traps either.
        #expect(Units.formatDuration(.seconds(Int64.max)).hasSuffix("s"))
    }

    @Test func networkNumbers() {
        let base: [String: JSONValue] = ["interface": "eth0", "delay": "10ms"]
        let cases: [(String, JSONValue)] = [
            ("port", 1e300), ("port", 9.5), ("port", 65536), ("port", -1e300), ("port", "80.5"),
            ("netnsPid", 1e19), ("netnsPid", 9.5), ("netnsPid", -1),
            ("limit", 1e300), ("limit", 0.5), ("packetOverhead", 1e300),
            ("excludePort", [1e300]), ("excludePort", [22.5]), ("excludePort", ["1e3"]), ("excludePort", 70000),
            ("delay", "1e300s"), ("delay", "99999999999999999999h"), ("jitter", "1e19ns"),
            ("loss", "1e300%"), ("rate", "1e300mbit"), ("rate", "99999999999999999999gbit"),
        ]
        for (key, value) in cases {
            var fields = base
            fields[key] = value
            if key == "packetOverhead" { fields["rate"] = "1mbit" }
            let r = refusal { _ = try NetworkSpec(from: spec(fields)) }
            #expect(r?.0 == 400, "\(key)=\(value)")
            #expect(r?.1 == "spec.\(key)", "\(key)=\(value)")
        }
        let gap = refusal { _ = try NetworkSpec(from: spec(base.merging(["reorder": "5%", "gap": 9.5]) { a, _ in a })) }
        #expect(gap?.0 == 400 && gap?.1 == "spec.gap")
    }

    @Test func stressAndSqueezeNumbers() throws {
        let (fs, _) = try serviceTree()
        let subtree = AgentSubtree.locate(ownCgroup: "/", delegated: false, stateDir: "/run/x")
        let cpu = StressDriver(kind: "cpu", fs: fs, controllers: ["cpu", "memory", "io", "pids"], subtree: subtree, reserve: 64 << 20)
        for (k, v) in [("cpus", 1e300), ("cpus", 9.5), ("cpus", -1e300), ("load", "1e300%")] as [(String, JSONValue)] {
            var f: [String: JSONValue] = ["load": "50%"]
            f[k] = v
            let r = refusal { _ = try cpu.prepare(spec: spec(f), context: FaultContext(owner: "t")) }
            #expect(r?.0 == 400 && r?.1 == "spec.\(k)", "\(k)=\(v)")
        }
        let memory = StressDriver(kind: "memory", fs: fs, controllers: ["cpu", "memory", "io", "pids"], subtree: subtree, reserve: 64 << 20)
        let big = refusal { _ = try memory.prepare(spec: spec(["size": "99999999999999999999GiB"]), context: FaultContext(owner: "t")) }
        #expect(big?.0 == 400 && big?.1 == "spec.size")
        let io = StressDriver(kind: "io", fs: fs, controllers: ["cpu", "memory", "io", "pids"], subtree: subtree, reserve: 64 << 20)
        for (k, v) in [("workers", 1e300), ("workers", 2.5), ("writeRate", "1e300MB/s")] as [(String, JSONValue)] {
            let r = refusal { _ = try io.prepare(spec: spec(["path": "/tmp", k: v]), context: FaultContext(owner: "t")) }
            #expect(r?.0 == 400 && r?.1 == "spec.\(k)", "\(k)=\(v)")
        }
        let squeeze = SqueezeDriver(mount: fs.mount, controllers: ["cpu", "memory", "io", "pids"], ownCgroup: "/user.slice/x")
        for (k, v) in [
            ("cpuMax", "1e300%"), ("cpuMax", "999999%"), ("pidsMax", 1e300), ("pidsMax", 9.5), ("memoryHigh", "99999999999999999999GiB"),
        ] as [(String, JSONValue)] {
            let r = refusal { _ = try squeeze.prepare(spec: spec(["unit": "db.service", k: v]), context: FaultContext(owner: "t")) }
            #expect(r?.0 == 400 && r?.1 == "spec.\(k)", "\(k)=\(v)")
        }
    }

    @Test("path fields refuse NUL and control bytes", arguments: controlCharacters)
    func pathFieldsRefuseControlBytes(_ c: String) throws {
        let (fs, _) = try serviceTree()
        let ctx = FaultContext(owner: "t")
        let diskFill = DiskFillDriver(reserve: 1 << 20)
        for path in ["/tmp/a\(c)b", "/tmp\(c)", "\(c)"] {
            let r = refusal { _ = try diskFill.prepare(spec: spec(["path": .string(path), "size": "1MiB"]), context: ctx) }
            #expect(r?.0 == 400 && r?.1 == "spec.path", "disk-fill \(path.debugDescription)")
        }
        let subtree = AgentSubtree.locate(ownCgroup: "/", delegated: false, stateDir: "/run/x")
        let io = StressDriver(kind: "io", fs: fs, controllers: ["io"], subtree: subtree, reserve: 64 << 20)
        var r = refusal { _ = try io.prepare(spec: spec(["path": .string("/tmp\(c)"), "writeRate": "1MB/s"]), context: ctx) }
        #expect(r?.0 == 400 && r?.1 == "spec.path")
        let squeeze = SqueezeDriver(mount: fs.mount, controllers: ["cpu", "memory", "io", "pids"], ownCgroup: "/user.slice/x")
        for (key, value) in [("cgroup", "/system.slice\(c)"), ("unit", "db\(c).service")] {
            r = refusal { _ = try squeeze.prepare(spec: spec([key: .string(value), "pidsMax": 5]), context: ctx) }
            #expect(r?.0 == 400 && r?.1 == "spec.\(key)", "squeeze \(key)")
            for driver in [pause as any FaultDriver, killer] {
                r = refusal { _ = try driver.prepare(spec: spec([key: .string(value)]), context: ctx) }
                #expect(r?.0 == 400 && r?.1 == "spec.\(key)", "\(driver.kind) \(key)")
            }
        }
        for (key, value) in [("interface", "eth\(c)0"), ("netns", "ns\(c)")] {
            var f: [String: JSONValue] = ["interface": "eth0", "delay": "10ms"]
            f[key] = .string(value)
            r = refusal { _ = try NetworkSpec(from: spec(f)) }
            #expect(r?.0 == 400 && r?.1 == "spec.\(key)", "network \(key)")
        }
        r = refusal { _ = try pause.prepare(spec: spec(["name": .string("sleep\(c)")]), context: ctx) }
        #expect(r?.0 == 400 && r?.1 == "spec.name")
    }

    @Test func pathFieldsHaveALengthCap() throws {
        let long = "/" + String(repeating: "a", count: 5000)
        let r = refusal { _ = try DiskFillDriver(reserve: 1 << 20).prepare(spec: spec(["path": .string(long), "size": "1MiB"]), context: context) }
        #expect(r?.0 == 400 && r?.1 == "spec.path")
        let unit = refusal { _ = try pause.prepare(spec: spec(["unit": .string(String(repeating: "u", count: 300) + ".service")]), context: context) }
        #expect(unit?.0 == 400 && unit?.1 == "spec.unit")
    }
}
