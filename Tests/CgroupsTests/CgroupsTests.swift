import Cgroups
import Foundation
import Testing

/// A temporary directory standing in for /sys/fs/cgroup, with a root offering some controllers.
func makeTree(controllers: String = "cpuset cpu io memory pids") throws -> CgroupFS {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cg-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let fs = CgroupFS(mount: dir)
    try fs.write("/", "cgroup.controllers", controllers + "\n")
    try fs.write("/", "cgroup.subtree_control", "")
    try fs.write("/", "cgroup.procs", "")
    return fs
}

@Suite struct ValueTests {
    @Test func cpuMax() throws {
        #expect(CPUMax(parsing: "max 100000\n") == CPUMax(quota: nil, period: 100_000))
        #expect(CPUMax(parsing: "50000 100000") == CPUMax(quota: 50_000, period: 100_000))
        #expect(CPUMax(parsing: "20000") == CPUMax(quota: 20_000))
        #expect(CPUMax(parsing: "max 100000 3") == nil)
        #expect(CPUMax(parsing: "-1 100000") == nil)
        #expect(CPUMax(parsing: "") == nil)
        #expect(CPUMax(quota: nil).description == "max 100000")
        #expect(CPUMax.forShare(1.2).description == "120000 100000")
        // The kernel's minimum quota is 1 ms.
        #expect(CPUMax.forShare(0.001).quota == 1000)
        #expect(CPUMax(parsing: "150000 100000")?.cpus == 1.5)
    }

    @Test func limits() {
        #expect(Limit(parsing: "max\n") == .max)
        #expect(Limit(parsing: "268435456\n") == .value(268_435_456))
        #expect(Limit(parsing: "lots") == nil)
        #expect(Limit.value(4096).description == "4096")
    }

    @Test func ioMax() throws {
        let l = try #require(IOMaxLine(parsing: "8:16 rbps=2097152 wbps=max riops=max wiops=120"))
        #expect(l.device == "8:16")
        #expect(l.limits == ["rbps": 2_097_152, "wiops": 120])
        #expect(l.description == "8:16 rbps=2097152 wbps=max riops=max wiops=120")
        #expect(IOMaxLine(device: "254:0").description == "254:0 rbps=max wbps=max riops=max wiops=max")
        #expect(IOMaxLine(parsing: "sda rbps=1") == nil)
        #expect(IOMaxLine(parsing: "8:0 xbps=1") == nil)
        #expect(IOMaxLine(parsing: "8:0 rbps=fast") == nil)
        let file = try #require(IOMaxLine.parseFile("8:0 rbps=1 wbps=max riops=max wiops=max\n259:0 wbps=5\n"))
        #expect(file.map(\.device) == ["8:0", "259:0"])
        #expect(IOMaxLine.parseFile("") == [])
    }

    @Test func ownCgroup() {
        #expect(CgroupFS.ownCgroup(procCgroup: "0::/system.slice/chaos-agent.service\n") == "/system.slice/chaos-agent.service")
        // Hybrid host: v1 lines first, then the v2 one.
        #expect(CgroupFS.ownCgroup(procCgroup: "9:name=systemd:/\n4:memory:/x\n0::/\n") == "/")
        #expect(CgroupFS.ownCgroup(procCgroup: "4:memory:/x\n") == nil)
    }
}

@Suite struct TreeTests {
    @Test func relativePaths() throws {
        let fs = CgroupFS(mount: "/sys/fs/cgroup")
        #expect(try fs.relative("/sys/fs/cgroup/system.slice/x.service") == "/system.slice/x.service")
        #expect(try fs.relative("system.slice/x.service/") == "/system.slice/x.service")
        #expect(try fs.relative("/sys/fs/cgroup") == "/")
        #expect(throws: CgroupError.self) { try fs.relative("/system.slice/../x") }
    }

    @Test func createEnableRemove() async throws {
        let fs = try makeTree()
        try fs.enable(["cpu", "memory"], in: "/")
        #expect(fs.subtreeControl("/") == ["cpu", "memory"])
        try fs.create("/a")
        #expect(fs.exists("/a"))
        #expect(fs.controllers("/a") == ["cpu", "memory"])
        // io is not enabled for /a's children because /a does not have it.
        #expect(throws: CgroupError.self) { try fs.enable(["io"], in: "/a") }
        try fs.enable(["cpu"], in: "/a")
        #expect(fs.subtreeControl("/a") == ["cpu"])
        try await fs.remove("/a")
        #expect(!fs.exists("/a"))
        try await fs.remove("/a")  // idempotent
    }

    @Test func keyedAndFreeze() async throws {
        let fs = try makeTree()
        try fs.create("/svc")
        try await fs.freeze("/svc", true)
        #expect(try fs.keyed("/svc", "cgroup.events")["frozen"] == 1)
        #expect(try fs.read("/svc", "cgroup.freeze") == "1")
        try await fs.freeze("/svc", false)
        #expect(try fs.keyed("/svc", "cgroup.events")["frozen"] == 0)
    }

    @Test func unitLookup() throws {
        let fs = try makeTree()
        for cg in ["/system.slice", "/system.slice/nginx.service", "/user.slice", "/user.slice/user-1000.slice",
            "/user.slice/user-1000.slice/user@1000.service", "/user.slice/user-1000.slice/user@1000.service/app.slice",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/x.service", "/other", "/other/hidden.service"]
        {
            try fs.create(cg)
        }
        #expect(fs.unitCgroup("nginx.service") == "/system.slice/nginx.service")
        #expect(fs.unitCgroup("x.service") == "/user.slice/user-1000.slice/user@1000.service/app.slice/x.service")
        // Only slices are searched: a directory that is not systemd's is never taken for a unit.
        #expect(fs.unitCgroup("hidden.service") == nil)
        #expect(fs.unitCgroup("absent.service") == nil)
    }
}

@Suite struct SubtreeTests {
    @Test func byHand() throws {
        let fs = try makeTree()
        let s = AgentSubtree.locate(ownCgroup: "/user.slice/session-1.scope", delegated: false, stateDir: "/run/chaos-agent")
        #expect(s.base == "/chaos-agent-" + AgentSubtree.hash("/run/chaos-agent"))
        #expect(!s.delegated)
        // Two state directories, two subtrees.
        #expect(AgentSubtree.locate(ownCgroup: "/", delegated: false, stateDir: "/tmp/b").base != s.base)
        try s.setUp(fs, selfPID: 4242)
        #expect(Set(fs.subtreeControl("/")) == ["cpu", "io", "memory", "pids"])
        #expect(Set(fs.subtreeControl(s.base)) == ["cpu", "io", "memory", "pids"])
        #expect(s.lease("abc") == s.base + "/lease-abc")
        try fs.create(s.lease("abc"))
        try fs.create(s.base + "/unrelated")
        #expect(s.leases(fs) == [s.base + "/lease-abc"])
        // The agent itself was not moved anywhere.
        #expect(fs.procs(s.base).isEmpty)
    }

    @Test func delegated() throws {
        let fs = try makeTree()
        try fs.enable(["cpu", "memory", "io", "pids"], in: "/")
        try fs.create("/system.slice")
        try fs.enable(["cpu", "memory", "io", "pids"], in: "/system.slice")
        try fs.create("/system.slice/chaos-agent.service")
        try fs.write("/system.slice/chaos-agent.service", "cgroup.procs", "4242\n")
        let s = AgentSubtree.locate(ownCgroup: "/system.slice/chaos-agent.service", delegated: true, stateDir: "/run/x")
        #expect(s.base == "/system.slice/chaos-agent.service")
        try s.setUp(fs, selfPID: 4242)
        #expect(fs.procs("/system.slice/chaos-agent.service/agent") == [4242])
        #expect(Set(fs.subtreeControl(s.base)) == ["cpu", "io", "memory", "pids"])
        #expect(s.lease("1") == "/system.slice/chaos-agent.service/lease-1")
        // After a restart inside the leaf, the base stays the unit's cgroup.
        #expect(AgentSubtree.locate(ownCgroup: s.base + "/agent", delegated: true, stateDir: "/run/x") == s)
        // Nothing was created outside the delegated cgroup.
        #expect(fs.children("/system.slice") == ["chaos-agent.service"])
    }
}
