import AgentAPI
import AgentCore
import Foundation
import Netlink
import Testing

@testable import Faults

/// Each agent instance marks what it installs; reconciling removes only its own marks.
@Suite struct InstanceMarksTests {
    func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("inst-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func theDefaultStateDirKeepsTheHistoricalMarks() {
        let i = AgentInstance.derive(stateDir: "/run/chaos-agent")
        #expect(i.isLegacy && i.tcMajor == 0x4341)
        #expect(i.ifbName(7) == "ca-ifb7")
        #expect(i.ifindex(ofIFB: "ca-ifb7") == 7)
        let m = NetworkDriver.TreeMarks(i)
        #expect(m == .legacy)
        #expect(m.rootHandle == 0x4341_0000 && m.faultHandle(slot: 0) == 0x4342_0000)
    }

    @Test func otherStateDirsGetTheirOwnBlockAndIfbNamesWithinIFNAMSIZ() {
        var majors = Set<UInt16>()
        for n in 0..<200 {
            let i = AgentInstance.derive(stateDir: "/tmp/agent-\(n)/state")
            #expect(!i.isLegacy)
            #expect(i.tcMajor >= 0x4400 && i.tcMajor + 13 < 0x8000)  // below the kernel's auto-assigned majors
            #expect(AgentInstance.isAgentRootMajor(i.tcMajor))
            #expect(!(i.tcMajor...(i.tcMajor + 15)).contains(0x504d))
            majors.insert(i.tcMajor)
            for ifindex: Int32 in [1, 42, 99999, Int32.max] {
                let name = i.ifbName(ifindex)
                #expect(name.utf8.count <= 15, "\(name)")
                #expect(i.ifindex(ofIFB: name) == ifindex)
                // Never mistaken for the legacy names, nor for another instance's.
                #expect(!name.hasPrefix("ca-ifb"))
                #expect(AgentInstance.derive(stateDir: "/run/chaos-agent").ifindex(ofIFB: name) == nil)
            }
            // Stable: the same state dir always derives the same marks.
            #expect(AgentInstance.derive(stateDir: "/tmp/agent-\(n)/state") == i)
        }
        #expect(majors.count > 150)  // spread over the range
        let a = AgentInstance(id: "a", tcMajor: 0x4400, stateDir: "/a"), b = AgentInstance(id: "b", tcMajor: 0x4410, stateDir: "/b")
        #expect(b.ifindex(ofIFB: a.ifbName(5)) == nil && a.ifindex(ofIFB: b.ifbName(5)) == nil)
        #expect(a.ifindex(ofIFB: "ca-ifb5") == nil)
    }

    @Test func treeHandlesFollowTheInstance() throws {
        let m = NetworkDriver.TreeMarks(AgentInstance(id: "x", tcMajor: 0x5a30, stateDir: "/x"))
        #expect(m.rootHandle == 0x5a30_0000 && m.passClass == 0x5a30_0001)
        #expect(m.faultClass(slot: 0) == 0x5a30_0004 && m.faultHandle(slot: 12) == 0x5a3d_0000)
        #expect((0..<13).allSatisfy { m.slot(ofHandle: m.faultHandle(slot: $0)) == $0 })
        // Another instance's (or the legacy) fault qdisc is not one of this instance's slots.
        #expect(m.slot(ofHandle: NetworkDriver.faultHandle(slot: 0)) == nil)
        #expect(NetworkDriver.TreeMarks.legacy.slot(ofHandle: m.faultHandle(slot: 0)) == nil)
        // Filters built for this instance point into its own tree.
        let rules = try NetworkDriver.rules(
            TrafficSelector(), excludedPorts: [22], excludeTo: [], slot: 2, flower: false, marks: m)
        #expect(rules.allSatisfy { TCHandle.major($0.classID) == 0x5a30 })
        // A plan journaled before instances existed decodes with the legacy marks.
        let old: JSONValue = try JSONValue.from(
            NetworkDriver.Plan(
                namespace: .current, namespaceInode: 1, interface: "eth0", ifindex: 2, ingress: false, slot: 0,
                selector: TrafficSelector(), snapshot: nil, netem: nil, tbf: nil, rules: [], excludedPorts: []))
        #expect(try old.decode(NetworkDriver.Plan.self).treeMarks == .legacy)
    }

    @Test func loadPersistsTheInstanceAndClaimsAFreeBlock() throws {
        let claims = try tempDir()
        let a = try tempDir(), b = try tempDir()
        let first = AgentInstance.load(stateDir: a, claimsDir: claims)
        #expect(FileManager.default.fileExists(atPath: a + "/instance.json"))
        #expect(AgentInstance.load(stateDir: a, claimsDir: claims) == first)  // stable across restarts
        // b's preferred block is taken by a (as if the hashes collided): b gets the next free one.
        let claimFile = claims + "/" + String(format: "%04x", AgentInstance.derive(stateDir: b).tcMajor)
        try? FileManager.default.removeItem(atPath: claimFile)
        try a.write(toFile: claimFile, atomically: true, encoding: .utf8)
        let second = AgentInstance.load(stateDir: b, claimsDir: claims)
        #expect(second.tcMajor != AgentInstance.derive(stateDir: b).tcMajor)
        #expect(second.tcMajor != first.tcMajor)
        #expect(AgentInstance.isAgentRootMajor(second.tcMajor))
        // A claim whose state dir is gone is stale: taken over.
        let c = try tempDir()
        let gone = "/nonexistent/state-\(UUID().uuidString)"
        let cFile = claims + "/" + String(format: "%04x", AgentInstance.derive(stateDir: c).tcMajor)
        try? FileManager.default.removeItem(atPath: cFile)
        try gone.write(toFile: cFile, atomically: true, encoding: .utf8)
        #expect(AgentInstance.load(stateDir: c, claimsDir: claims).tcMajor == AgentInstance.derive(stateDir: c).tcMajor)
    }
}

/// A revert whose last step the kernel refuses for good (the previous root's kind is unknown to it) ends as a
/// permanent failure once the fault's own tree is proven gone, instead of failing the same way for ever.
@Suite(.serialized, .enabled(if: geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip"), "needs root and ip"))
struct PermanentNetworkRevertTests {
    @Test func aPreviousRootTheKernelRefusesEndsAsAPermanentFailureWithNothingOfOursLeft() throws {
        let name = "catest\(UInt32.random(in: 0...UInt32.max))"
        func run(_ args: [String]) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            p.arguments = args
            try p.run()
            p.waitUntilExit()
        }
        try run(["netns", "add", name])
        defer { try? run(["netns", "del", name]) }
        try run(["-n", name, "link", "add", "a0", "type", "veth", "peer", "name", "a1"])
        try run(["-n", name, "link", "set", "a0", "up"])
        let nl = try RTNetlink(namespace: .named(name))
        let a0 = try #require(try nl.linkIndex(named: "a0"))
        // Our (legacy-marked) root stands for the fault's tree (this kernel has no prio).
        try nl.addQdisc(
            ifindex: a0, parent: TCHandle.root, handle: NetworkDriver.rootHandle,
            options: .tbf(TBF(rate: 1_000_000, burst: 10_000, limit: .bytes(100_000))), mode: .exclusive)
        let gone = Qdisc(ifindex: a0, handle: 0x10_0000, parent: TCHandle.root, kind: "no-such-qdisc")
        let plan = NetworkDriver.Plan(
            namespace: .named(name), namespaceInode: 0, interface: "a0", ifindex: a0, ingress: false, slot: 0,
            selector: TrafficSelector(), snapshot: gone, netem: nil, tbf: nil, rules: [], excludedPorts: [])
        #expect(throws: PermanentRevertFailure.self) { try NetworkDriver.restoreRoot(plan, nl) }
        let root = try nl.qdiscs(ifindex: a0).first { $0.isRoot }
        #expect(root.map { TCHandle.major($0.handle) } != NetworkDriver.rootMajor)
    }
}
