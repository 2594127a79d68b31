import AgentAPI
import AgentCore
import Cgroups
import Foundation
import Processes
import Testing

@testable import Faults

/// A temporary directory tree standing in for /sys/fs/cgroup with a service cgroup holding limit files.
func serviceTree() throws -> (CgroupFS, String) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cg-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let fs = CgroupFS(mount: dir)
    try fs.write("/", "cgroup.controllers", "cpu io memory pids\n")
    try fs.write("/", "cgroup.subtree_control", "cpu io memory pids\n")
    try fs.create("/system.slice")
    try fs.create("/system.slice/db.service")
    let svc = "/system.slice/db.service"
    try fs.write(svc, "cpu.max", "max 100000\n")
    try fs.write(svc, "memory.high", "max\n")
    try fs.write(svc, "memory.max", "1073741824\n")
    try fs.write(svc, "pids.max", "max\n")
    try fs.write(svc, "io.max", "8:16 rbps=2097152 wbps=max riops=max wiops=max\n")
    return (fs, svc)
}


func status(_ body: () throws -> Void) -> (Int, String?)? {
    do {
        try body()
        return nil
    } catch let e as AgentError { return (e.status, e.field) } catch { return (-1, nil) }
}

@Suite struct SqueezeTests {
    @Test func squeezeWritesReadsBackAndRestoresExactly() async throws {
        let (fs, svc) = try serviceTree()
        let d = SqueezeDriver(mount: fs.mount, controllers: ["cpu", "memory", "io", "pids"], ownCgroup: "/user.slice/x")
        let prepared = try d.prepare(
            spec: spec([
                "unit": "db.service", "cpuMax": "20%", "memoryHigh": "256MiB", "memoryMax": "300000001",
                "pidsMax": 50, "ioMax": "8:16 wbps=10MiB",
            ]), context: FaultContext(owner: "t"))
        // prepare changes nothing.
        #expect(try fs.read(svc, "cpu.max") == "max 100000\n")
        #expect(
            Set(prepared.claims) == Set(["cpu.max", "memory.high", "memory.max", "pids.max", "io.max"].map { "cgroup:\(fs.directory(svc)):\($0)" }))
        _ = try await d.apply(plan: prepared.plan)
        #expect(try fs.read(svc, "cpu.max") == "20000 100000")
        #expect(try fs.read(svc, "memory.high") == "268435456")
        // Rounded down to whole pages, as the kernel would show it.
        #expect(try fs.read(svc, "memory.max") == String(300_000_001 / 4096 * 4096))
        #expect(try fs.read(svc, "pids.max") == "50")
        // The other keys of the device's io.max line are kept.
        #expect(try fs.read(svc, "io.max") == "8:16 rbps=2097152 wbps=10485760 riops=max wiops=max")
        try await d.revert(plan: prepared.plan)
        #expect(try fs.read(svc, "cpu.max") == "max 100000")
        #expect(try fs.read(svc, "memory.high") == "max")
        #expect(try fs.read(svc, "memory.max") == "1073741824")
        #expect(try fs.read(svc, "pids.max") == "max")
        #expect(try fs.read(svc, "io.max") == "8:16 rbps=2097152 wbps=max riops=max wiops=max")
        // Idempotent, and fine once the cgroup is gone.
        try await d.revert(plan: prepared.plan)
        try await fs.remove(svc)
        try await d.revert(plan: prepared.plan)
    }

    @Test func refusals() throws {
        let (fs, svc) = try serviceTree()
        let d = SqueezeDriver(mount: fs.mount, controllers: ["cpu", "memory"], ownCgroup: "/system.slice/agent.service")
        let ctx = FaultContext(owner: "t")
        func check(_ s: [String: JSONValue], _ want: Int, _ field: String?) {
            let got = status { _ = try d.prepare(spec: spec(s), context: ctx) }
            #expect(got?.0 == want, "\(s)")
            #expect(got?.1 == field, "\(s)")
        }
        check(["cgroup": .string(svc)], 400, "spec")
        check(["cgroup": .string(svc), "unit": "db.service", "cpuMax": "1%"], 400, "spec.unit")
        check(["cgroup": .string(svc), "cpuMax": "fast"], 400, "spec.cpuMax")
        check(["cgroup": .string(svc), "cpuMax": "0%"], 400, "spec.cpuMax")
        check(["cgroup": .string(svc), "memoryHigh": "1"], 400, "spec.memoryHigh")
        check(["cgroup": .string(svc), "ioMax": "sda wbps=1"], 400, "spec.ioMax")
        check(["cgroup": .string(svc), "ioMax": "8:0 bps=1"], 400, "spec.ioMax")
        check(["cgroup": .string(svc), "pidsMax": 0], 400, "spec.pidsMax")
        check(["cgroup": .string(svc), "bogus": 1], 400, "spec.bogus")
        check(["cgroup": "/nope", "cpuMax": "10%"], 422, "spec.cgroup")
        check(["cgroup": "/system.slice/../x", "cpuMax": "10%"], 400, "spec.cgroup")
        check(["unit": "nope.service", "cpuMax": "10%"], 422, "spec.unit")
        check(["unit": "no/unit", "cpuMax": "10%"], 400, "spec.unit")
        check(["cgroup": "/", "cpuMax": "10%"], 422, "spec.cgroup")
        // The agent's own cgroup and its ancestors are off limits.
        check(["cgroup": "/system.slice", "cpuMax": "10%"], 422, "spec.cgroup")
        // A controller not enabled for the cgroup: its file is missing.
        try FileManager.default.removeItem(atPath: fs.directory(svc) + "/cpu.max")
        check(["cgroup": .string(svc), "cpuMax": "10%"], 422, "spec.cpuMax")
        // 409 when another fault holds the file.
        let held = FaultContext(owner: "t", heldClaims: ["cgroup:\(fs.directory(svc)):pids.max": "f-1"])
        #expect(status { _ = try d.prepare(spec: spec(["cgroup": .string(svc), "pidsMax": 5]), context: held) }?.0 == 409)
        // No controllers at all (a hybrid host): unsupported with a sentence.
        let bare = SqueezeDriver(mount: fs.mount, controllers: ["hugetlb"])
        #expect(!bare.availability().available)
        #expect(bare.availability().reason?.contains("none of the cpu, memory, io and pids controllers") == true)
        #expect(status { _ = try bare.prepare(spec: spec(["cgroup": .string(svc), "pidsMax": 5]), context: ctx) }?.0 == 422)
    }

    @Test func ioMaxParsing() throws {
        #expect(try SqueezeDriver.parseIOMax("8:0 wbps=10MiB riops=100").description == "8:0 rbps=max wbps=10485760 riops=100 wiops=max")
        #expect(try SqueezeDriver.parseIOMax("8:0 rbps=1MB/s").limits == ["rbps": 1_000_000])
        #expect(BlockDevice.format(UInt64(8 << 8 | 16)) == "8:16")
        #expect(BlockDevice.format(UInt64(259) << 8 | 3) == "259:3")
    }
}

@Suite struct FreezeTests {
    @Test func pauseByCgroupFreezesAndThaws() async throws {
        let (fs, svc) = try serviceTree()
        let facts = HostFacts(
            kernel: "k", euid: 0, capabilities: [], pidfd: true, cgroup2Mount: fs.mount, cgroupControllers: ["cpu"], netlink: true)
        let d = PauseDriver(processGuard: ProcessGuard(protectedNames: []), host: facts, ownCgroup: "/user.slice/x")
        let p = try d.prepare(spec: spec(["cgroup": .string(svc)]), context: FaultContext(owner: "t"))
        #expect(p.claims == ["cgroup:\(fs.directory(svc)):freeze"])
        _ = try await d.apply(plan: p.plan)
        #expect(try fs.read(svc, "cgroup.freeze") == "1")
        // Already frozen: refused, not stacked.
        #expect(status { _ = try d.prepare(spec: spec(["cgroup": .string(svc)]), context: FaultContext(owner: "t")) }?.0 == 422)
        try await d.revert(plan: p.plan)
        #expect(try fs.read(svc, "cgroup.freeze") == "0")
        #expect(try fs.keyed(svc, "cgroup.events")["frozen"] == 0)
        // Held by another fault: 409.
        let held = FaultContext(owner: "t", heldClaims: [p.claims[0]: "f-1"])
        #expect(status { _ = try d.prepare(spec: spec(["unit": "db.service"]), context: held) }?.0 == 409)
    }
}

@Suite struct DiskFillTests {
    func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fill-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func fillsAndRemoves() async throws {
        let dir = try tempDir()
        let d = DiskFillDriver(reserve: 1 << 20)
        let p = try d.prepare(spec: spec(["path": .string(dir), "size": "8MiB"]), context: FaultContext(owner: "t"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)  // prepare changes nothing
        let applied = try await d.apply(plan: p.plan)
        let target = try #require(applied).target
        guard case .object(let t) = target, case .string(let file) = t["file"]! else { Issue.record("no file"); return }
        var st = stat()
        #expect(stat(file, &st) == 0)
        #expect(UInt64(st.st_blocks) * 512 >= 8 << 20)
        #expect(file.hasPrefix(dir + "/.chaos-agent-fill-"))
        try await d.revert(plan: p.plan)
        #expect(!FileManager.default.fileExists(atPath: file))
        try await d.revert(plan: p.plan)
    }

    @Test func refusals() throws {
        let dir = try tempDir()
        let d = DiskFillDriver(reserve: 1 << 20)
        let ctx = FaultContext(owner: "t")
        let free = try DiskFillDriver.space(dir).available
        _ = FileManager.default.createFile(atPath: dir + "/plain", contents: Data())
        let cases: [([String: JSONValue], Int, String)] = [
            (["size": "1MiB"], 400, "spec.path"),
            (["path": "relative", "size": "1MiB"], 400, "spec.path"),
            (["path": .string(dir)], 400, "spec.size"),
            (["path": .string(dir), "size": "1MiB", "leaveFree": "1GiB"], 400, "spec.leaveFree"),
            (["path": .string(dir), "size": "lots"], 400, "spec.size"),
            (["path": "/nonexistent/dir", "size": "1MiB"], 422, "spec.path"),
            (["path": .string(dir + "/plain"), "size": "1MiB"], 422, "spec.path"),
            (["path": .string(dir), "size": .string("\(free)")], 422, "spec.size"),  // leaves less than the reserve
            (["path": .string(dir), "leaveFree": "4KiB"], 422, "spec.leaveFree"),  // below the reserve
            (["path": .string(dir), "leaveFree": .string("\(free * 2)")], 422, "spec.leaveFree"),
        ]
        for (s, want, field) in cases {
            let got = status { _ = try d.prepare(spec: spec(s), context: ctx) }
            #expect(got?.0 == want, "\(s)")
            #expect(got?.1 == field, "\(s)")
        }
        // leaveFree computes the size from what is free now.
        let p = try d.prepare(spec: spec(["path": .string(dir), "leaveFree": .string("\(free - (4 << 20))")]), context: ctx)
        guard case .object(let plan) = p.plan, case .number(let bytes) = plan["bytes"]! else { Issue.record("no bytes"); return }
        #expect(abs(bytes - Double(4 << 20)) < Double(1 << 20))
        #expect(p.claims.count == 1 && p.claims[0].hasPrefix("disk-fill:dev:"))
    }
}
