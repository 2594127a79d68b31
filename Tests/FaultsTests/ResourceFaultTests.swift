import AgentAPI
import AgentCore
import Cgroups
import Foundation
import Logging
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

/// Serialized: the refusal checks compute sizes from the free space of /tmp, which the fill test changes.
@Suite(.serialized) struct DiskFillTests {
    func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fill-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func fillsAndRemoves() async throws {
        let dir = try tempDir()
        let registryDir = try tempDir()
        let d = DiskFillDriver(reserve: 1 << 20, registryDir: registryDir, stateDir: dir)
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
        // The registry named only that file: it is gone with it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: registryDir).isEmpty)
        try await d.revert(plan: p.plan)
    }

    @Test func registryNamesOrphansAfterTheJournalIsLost() async throws {
        let dir = try tempDir()
        let registryDir = try tempDir() + "/lib"
        let d = DiskFillDriver(reserve: 1 << 20, registryDir: registryDir, stateDir: dir)
        let ctx = FaultContext(owner: "t")
        let kept = try d.prepare(spec: spec(["path": .string(dir), "size": "1MiB"]), context: ctx)
        let lost = try d.prepare(spec: spec(["path": .string(dir), "size": "1MiB"]), context: ctx)
        _ = try await d.apply(plan: kept.plan)
        _ = try await d.apply(plan: lost.plan)
        let keptFile = try kept.plan.decode(DiskFillDriver.Plan.self).file
        let lostFile = try lost.plan.decode(DiskFillDriver.Plan.self).file
        // A stranger's file with our prefix that the registry does not name is never touched.
        let stranger = dir + "/.chaos-agent-fill-not-ours"
        _ = FileManager.default.createFile(atPath: stranger, contents: Data())
        // Another agent (another state directory) has its own registry and sees nothing to remove.
        let other = DiskFillDriver(reserve: 1 << 20, registryDir: registryDir, stateDir: dir + "/other")
        #expect(await other.reconcileOrphans(livePlans: []) == [])
        // Only `kept` is still journaled: `lost` goes.
        let removed = await d.reconcileOrphans(livePlans: [kept.plan])
        #expect(removed == ["removed orphan disk-fill file \(lostFile)"])
        #expect(FileManager.default.fileExists(atPath: keptFile))
        #expect(!FileManager.default.fileExists(atPath: lostFile))
        #expect(FileManager.default.fileExists(atPath: stranger))
        // The registry now names only the live one: a second pass removes nothing.
        #expect(await d.reconcileOrphans(livePlans: [kept.plan]) == [])
        try await d.revert(plan: kept.plan)
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

@Suite struct StressTests {
    func driver(_ kind: String, controllers: [String] = ["cpu", "memory", "io", "pids"]) throws -> (StressDriver, CgroupFS) {
        let (fs, _) = try serviceTree()
        let subtree = AgentSubtree.locate(ownCgroup: "/", delegated: false, stateDir: "/run/x")
        return (StressDriver(kind: kind, fs: fs, controllers: controllers, subtree: subtree, reserve: 64 << 20), fs)
    }

    @Test func workerArguments() {
        let a = WorkerArguments(kind: .io, threads: 2, bytes: 64 << 20, path: "/srv", mode: "write", cgroup: "/sys/fs/cgroup/x/lease-1",
            tag: "lease-1", deadline: 1_790_000_000.25)
        #expect(a.argv == [
            "worker", "io", "--threads", "2", "--deadline", "1790000000.250", "--bytes", "67108864", "--path", "/srv",
            "--mode", "write", "--cgroup", "/sys/fs/cgroup/x/lease-1", "--tag", "lease-1",
        ])
        #expect(WorkerArguments(kind: .cpu, threads: 3, deadline: 5).argv == ["worker", "cpu", "--threads", "3", "--deadline", "5.000"])
    }

    @Test func cpuPlan() throws {
        let (d, _) = try driver("cpu")
        let p = try d.prepare(spec: spec(["load": "60%", "cpus": 1]), context: FaultContext(owner: "t", ttl: .seconds(30)))
        let plan = try p.plan.decode(StressDriver.Plan.self)
        // quota = load x cpus x period.
        #expect(plan.cpuMax == "60000 100000")
        #expect(plan.worker.threads == 1)
        #expect(plan.cgroup.hasPrefix("/chaos-agent-\(AgentSubtree.hash("/run/x"))/lease-"))
        // The worker's own deadline: the TTL plus a grace period.
        #expect(abs(plan.deadline - (Date().timeIntervalSince1970 + 35)) < 2)
        let all = try d.prepare(spec: spec(["load": "100%"]), context: FaultContext(owner: "t"))
        #expect(try all.plan.decode(StressDriver.Plan.self).cpuMax == CPUMax.forShare(Double(StressDriver.onlineCPUs)).description)
    }

    @Test func refusals() throws {
        let ctx = FaultContext(owner: "t", ttl: .seconds(10))
        let cases: [(String, [String: JSONValue], Int, String?)] = [
            ("cpu", [:], 400, "spec.load"),
            ("cpu", ["load": "lots"], 400, "spec.load"),
            ("cpu", ["load": "0%"], 400, "spec.load"),
            ("cpu", ["load": "150%"], 422, "spec.load"),
            ("cpu", ["load": "50%", "cpus": 100_000], 400, "spec.cpus"),
            ("cpu", ["load": "50%", "cpus": .number(Double(StressDriver.onlineCPUs + 1))], 422, "spec.cpus"),
            ("cpu", ["load": "50%", "size": "1GiB"], 400, "spec.size"),
            ("memory", [:], 400, "spec.size"),
            ("memory", ["size": "12"], 400, "spec.size"),
            ("memory", ["size": "64TiB"], 422, "spec.size"),
            ("io", ["writeRate": "1MB/s"], 400, "spec.path"),
            ("io", ["path": "/tmp"], 400, "spec.writeRate"),
            ("io", ["path": "/tmp", "writeRate": "fast"], 400, "spec.writeRate"),
            ("io", ["path": "/tmp", "writeRate": "1MB/s", "readRate": "1MB/s"], 400, "spec.readRate"),
            ("io", ["path": "/nonexistent", "writeRate": "1MB/s"], 422, "spec.path"),
            ("io", ["path": "/dev/shm", "writeRate": "1MB/s"], 422, "spec.path"),  // tmpfs: no disk to pace
        ]
        for (kind, s, want, field) in cases {
            let (d, _) = try driver(kind)
            let got = status { _ = try d.prepare(spec: spec(s), context: ctx) }
            #expect(got?.0 == want, "\(kind) \(s)")
            #expect(got?.1 == field, "\(kind) \(s)")
        }
        // Without the controller in cgroup v2 (a hybrid host): unavailable, saying why.
        let (bare, _) = try driver("memory", controllers: ["hugetlb"])
        #expect(!bare.availability().available)
        #expect(bare.availability().reason?.contains("no memory controller") == true)
    }

    @Test func orphanLeaseCgroupsAreRemoved() async throws {
        let (d, fs) = try driver("cpu")
        let subtree = AgentSubtree.locate(ownCgroup: "/", delegated: false, stateDir: "/run/x")
        try subtree.setUp(fs, selfPID: 1)
        try fs.create(subtree.lease("live"))
        try fs.create(subtree.lease("orphan"))
        try fs.create(subtree.base + "/not-ours")
        let live = StressDriver.Plan(
            mount: fs.mount, cgroup: subtree.lease("live"), deadline: 0, worker: .init(threads: 1, bytes: 0))
        let removed = await d.reconcileOrphans(livePlans: [try JSONValue.from(live)])
        #expect(removed == ["removed orphan cgroup \(fs.directory(subtree.lease("orphan")))"])
        #expect(fs.exists(subtree.lease("live")))
        #expect(fs.exists(subtree.base + "/not-ours"))
    }

    @Test func orphanIOFilesAreRemovedThroughTheRegistry() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("io-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let d = StressDriver(
            kind: "io", mount: nil, controllers: [], stateDir: dir, reserve: 0, logger: Logger(label: "t"),
            registryDir: dir + "/lib")
        var live = StressDriver.Plan(
            mount: "/x", cgroup: "/x/lease-live", deadline: 0,
            worker: .init(threads: 2, bytes: 1, path: dir, mode: "write", tag: "lease-live"))
        var lost = live
        lost.worker.tag = "lease-lost"
        for plan in [live, lost] {
            try d.registry.append(plan.ioFilePrefix!)
            for i in 0..<2 { _ = FileManager.default.createFile(atPath: plan.ioFilePrefix! + "\(i)", contents: Data()) }
        }
        let removed = await d.reconcileOrphans(livePlans: [try JSONValue.from(live)])
        #expect(removed == ["removed orphan io file \(lost.ioFilePrefix!)0", "removed orphan io file \(lost.ioFilePrefix!)1"])
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".chaos-agent-io-") }.sorted()
        #expect(left == [".chaos-agent-io-lease-live-0", ".chaos-agent-io-lease-live-1"])
        live.worker.tag = "lease-live"
        #expect(await d.reconcileOrphans(livePlans: []).count == 2)
        #expect(!FileManager.default.fileExists(atPath: d.registry.path!))
    }

    @Test func registryKeepsEveryEntryUnderConcurrentAppendsAndRemovals() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reg-\(UUID().uuidString)").path
        let r = LeftoverRegistry(directory: dir, name: "t", stateDir: dir)
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    try? r.append("/x/\(i)")
                    if i % 2 == 0 { r.remove("/x/\(i)") }
                }
            }
        }
        let text = try String(contentsOfFile: r.path!, encoding: .utf8)
        #expect(Set(text.split(separator: "\n").map(String.init)) == Set((0..<200).filter { $0 % 2 == 1 }.map { "/x/\($0)" }))
        for i in 0..<200 where i % 2 == 1 { r.remove("/x/\(i)") }
        #expect(!FileManager.default.fileExists(atPath: r.path!))
    }

    @Test func diskOfPartition() throws {
        // A fake /sys/dev/block: 8:1 is a partition of the disk 8:0.
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("sys-\(UUID().uuidString)").path
        let disk = root + "/devices/sda"
        try FileManager.default.createDirectory(atPath: disk + "/sda1", withIntermediateDirectories: true)
        try "8:0\n".write(toFile: disk + "/dev", atomically: true, encoding: .utf8)
        try "1\n".write(toFile: disk + "/sda1/partition", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: root + "/dev/block", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: disk + "/../sdb", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: root + "/dev/block/8:1", withDestinationPath: disk + "/sda1")
        try FileManager.default.createSymbolicLink(atPath: root + "/dev/block/8:16", withDestinationPath: root + "/devices/sdb")
        #expect(BlockDevice.disk(ofFileSystemDevice: 8 << 8 | 1, sys: root + "/dev/block") == "8:0")
        #expect(BlockDevice.disk(ofFileSystemDevice: 8 << 8 | 16, sys: root + "/dev/block") == "8:16")
        #expect(BlockDevice.disk(ofFileSystemDevice: 0 << 8 | 45, sys: root + "/dev/block") == nil)
    }
}

/// The real spawner on this host: a worker born inside a cgroup of the v2 hierarchy (controllers are not needed for
/// cgroup.procs), with no capability, oom_score_adj 1000, ending by itself at its deadline. In the serialized process
/// suite: between clone and exec the child carries the test runner's name, which a concurrent name-selector test
/// would match.
enum SpawnTests {
    static let agentd = FileManager.default.currentDirectoryPath + "/.build/debug/chaos-agentd"
    static var mount: String? { HostProbe.probe().cgroup2Mount }
}

extension ProcessFaultTests {
    @Test(
        .enabled(
            if: geteuid() == 0 && SpawnTests.mount != nil && FileManager.default.isExecutableFile(atPath: SpawnTests.agentd)))
    func workerIsBornInItsCgroupWithoutCapabilities() async throws {
        let fs = CgroupFS(mount: SpawnTests.mount!)
        let cg = "/chaos-spawn-test-\(getpid())"
        try fs.create(cg)
        // An fd someone forgot to mark close-on-exec must not reach the worker.
        let leaky = open("/tmp/chaos-spawn-test-\(getpid()).leak", O_RDWR | O_CREAT, 0o600)
        defer {
            close(leaky)
            unlink("/tmp/chaos-spawn-test-\(getpid()).leak")
        }
        let args = WorkerArguments(kind: .cpu, threads: 1, deadline: Date().timeIntervalSince1970 + 1.5)
        let w = try await WorkerSpawner.shared.spawn(executable: SpawnTests.agentd, argv: args.argv, cgroupDir: fs.directory(cg))
        #expect(fs.procs(cg) == [w.pid])
        #expect(CgroupFS.cgroup(ofPID: w.pid) == cg)
        // Give exec and the runtime a moment, then read the kernel's view of the worker.
        var status = ""
        for _ in 0..<100 {
            status = (try? String(contentsOfFile: "/proc/\(w.pid)/status", encoding: .utf8)) ?? ""
            if status.contains("Name:\tchaos-agentd"), (try? String(contentsOfFile: "/proc/\(w.pid)/oom_score_adj", encoding: .utf8)) == "1000\n" { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        for key in ["CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "CapInh:"] {
            let line = status.split(separator: "\n").first { $0.hasPrefix(key) }
            #expect(line?.hasSuffix("0000000000000000") == true, "\(line ?? "no \(key)")")
        }
        #expect(status.contains("NoNewPrivs:\t1"))
        // Only stdin, stdout and stderr (plus what the runtime opened itself, e.g. an eventfd) - none of ours.
        // A leaked fd stays; one the worker opened itself for a moment (writing its oom_score_adj) goes: look a few times.
        var targets: [String] = []
        for _ in 0..<25 {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(w.pid)/fd")) ?? []
            targets = fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(w.pid)/fd/\($0)") }
            if !targets.contains(where: { $0.hasPrefix("/") && !$0.hasPrefix("/dev/") }) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!targets.contains { $0.hasPrefix("/") && !$0.hasPrefix("/dev/") }, "\(targets)")
        #expect(try String(contentsOfFile: "/proc/\(w.pid)/oom_score_adj", encoding: .utf8) == "1000\n")
        // It ends by itself at its deadline.
        var exited = false
        for _ in 0..<200 {
            var st: Int32 = 0
            if waitpid(w.pid, &st, WNOHANG) == w.pid { exited = true; break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(exited)
        #expect(fs.procs(cg).isEmpty)
        try await fs.remove(cg)
        #expect(!fs.exists(cg))
    }
}

/// Renew reaches a running worker through its deadline file: later deadlines are taken, earlier ones and garbage not.
@Suite("worker deadlines")
struct WorkerDeadlineTests {
    @Test func onlyLaterDeadlinesAreTaken() throws {
        let file = NSTemporaryDirectory() + "chaos-deadline-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(file) }
        let d = WorkerDeadline(1000, file: nil)
        try StressDriver.writeDeadline(2000.5, to: file)
        d.refresh(from: file)
        #expect(d.value == 2000.5)
        try StressDriver.writeDeadline(1500, to: file)
        d.refresh(from: file)
        #expect(d.value == 2000.5)
        try "garbage".write(toFile: file, atomically: true, encoding: .utf8)
        d.refresh(from: file)
        #expect(d.value == 2000.5)
    }
}

extension ProcessFaultTests {
    @Test(
        .enabled(
            if: geteuid() == 0 && SpawnTests.mount != nil && FileManager.default.isExecutableFile(atPath: SpawnTests.agentd)))
    func aRenewedWorkerOutlivesItsFirstDeadline() async throws {
        let fs = CgroupFS(mount: SpawnTests.mount!)
        let cg = "/chaos-renew-test-\(getpid())"
        try fs.create(cg)
        let file = NSTemporaryDirectory() + "chaos-renew-test-\(getpid()).deadline"
        defer { unlink(file) }
        let start = Date().timeIntervalSince1970
        try StressDriver.writeDeadline(start + 1.0, to: file)
        let args = WorkerArguments(kind: .cpu, threads: 1, deadline: start + 1.0, deadlineFile: file)
        let w = try await WorkerSpawner.shared.spawn(executable: SpawnTests.agentd, argv: args.argv, cgroupDir: fs.directory(cg))
        try StressDriver.writeDeadline(start + 3.0, to: file)  // the renew
        func exited() -> Bool {
            var st: Int32 = 0
            return waitpid(w.pid, &st, WNOHANG) == w.pid
        }
        while Date().timeIntervalSince1970 < start + 2.0 {
            #expect(!exited(), "the worker ended at its first deadline despite the renew")
            try await Task.sleep(for: .milliseconds(100))
        }
        var gone = false
        while Date().timeIntervalSince1970 < start + 6.0 {
            if exited() { gone = true; break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(gone, "the worker outlived its renewed deadline")
        try await fs.remove(cg)
    }
}
