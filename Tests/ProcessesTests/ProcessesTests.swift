import Foundation
import Testing

@testable import Processes

/// Starts `sleep 600` as a child and kills it at the end.
final class Child {
    let process = Process()
    var pid: Int32 { process.processIdentifier }

    init(_ args: [String] = ["600"], executable: String = "/bin/sleep", comm: String = "sleep") throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = args
        try process.run()
        // Wait until the final exec has happened and the process sleeps.
        for _ in 0..<400 {
            if let p = ProcFS().process(pid), p.comm == comm, p.state == "S" { break }
            usleep(5000)
        }
    }

    var state: Character? { ProcFS().process(pid)?.state }

    deinit {
        kill(pid, SIGCONT)
        kill(pid, SIGKILL)
        process.waitUntilExit()
    }
}

@Suite("procfs parsing")
struct ProcStatTests {
    @Test func commWithSpacesAndParentheses() {
        let line =
            "4242 (evil) (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
        let p = ProcFS.parseStat(line)!
        #expect(p.pid == 4242)
        #expect(p.comm == "evil) (name")
        #expect(p.state == "S")
        #expect(p.ppid == 1)
        #expect(p.startTime == 987654)
        #expect(p.flags == 4194560)
        #expect(!p.isKernelThread)
    }

    @Test func kernelThreadFlag() {
        let line = "57 (kworker/0:1) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0 30 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 0 0 0 0 0 0"
        #expect(ProcFS.parseStat(line)!.isKernelThread)
    }

    @Test func garbageIsRejected() {
        #expect(ProcFS.parseStat("") == nil)
        #expect(ProcFS.parseStat("12 (x) S 1") == nil)
        #expect(ProcFS.parseStat("abc (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20") == nil)
    }

    @Test func readsItself() {
        let me = ProcFS().process(getpid())!
        #expect(me.pid == getpid())
        #expect(me.ppid == getppid())
        #expect(me.state == "R" || me.state == "S")
        #expect(ProcFS().ancestors(of: getpid()).first == getppid())
        #expect(ProcFS().ancestors(of: getpid()).last == 1 || ProcFS().ancestors(of: getpid()).last == 0)
    }
}

@Suite("Signals through pidfds", .serialized)
struct SignalTests {
    let signaller = ProcessSignaller()

    @Test func stopAndContinueARealProcess() async throws {
        let child = try Child()
        let identity = ProcFS().process(child.pid)!.identity
        #expect(try signaller.send(SIGSTOP, to: identity) == .delivered)
        for _ in 0..<100 where child.state != "T" { usleep(2000) }
        #expect(child.state == "T")
        #expect(try signaller.send(SIGCONT, to: identity) == .delivered)
        #expect(child.state != "T")
    }

    @Test func aRecycledPIDIsNeverSignalled() throws {
        let child = try Child()
        let real = ProcFS().process(child.pid)!.identity
        // The same PID with another start time stands for a process that has since exited and whose PID was reused.
        let stale = ProcessIdentity(pid: real.pid, startTime: real.startTime &+ 1)
        #expect(try signaller.send(SIGKILL, to: stale) == .gone)
        usleep(20000)
        #expect(child.state == "S")
    }

    @Test func anExitedProcessIsGone() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        let identity = ProcessIdentity(pid: p.processIdentifier, startTime: 1)
        p.waitUntilExit()
        #expect(try signaller.send(SIGKILL, to: identity) == .gone)
    }

    @Test func signalNames() {
        #expect(ProcessSignaller.number(for: "KILL") == SIGKILL)
        #expect(ProcessSignaller.number(for: "sigterm") == SIGTERM)
        #expect(ProcessSignaller.number(for: "9") == 9)
        #expect(ProcessSignaller.number(for: "NOPE") == nil)
        #expect(ProcessSignaller.number(for: "0") == nil)
        #expect(ProcessSignaller.name(of: SIGHUP) == "SIGHUP")
    }
}

@Suite("Selection and protection", .serialized)
struct SelectionTests {
    @Test func protectedTargets() throws {
        let g = ProcessGuard(protectedNames: ["sleep"])
        let procfs = ProcFS()
        #expect(g.protection(for: procfs.process(1)!, callerLineage: []) == .init1)
        #expect(g.protection(for: procfs.process(getpid())!, callerLineage: []) == .agent)
        #expect(g.protection(for: procfs.process(getppid())!, callerLineage: []) == .agent)
        if let kthreadd = procfs.process(2), kthreadd.comm == "kthreadd" {
            #expect(g.protection(for: kthreadd, callerLineage: []) == .kernelThread)
        }
        let child = try Child()
        #expect(g.protection(for: procfs.process(child.pid)!, callerLineage: []) == .protectedName("sleep"))
        let open = ProcessGuard(protectedNames: [])
        #expect(open.protection(for: procfs.process(child.pid)!, callerLineage: []) == nil)
        #expect(open.protection(for: procfs.process(child.pid)!, callerLineage: [ProcFS().process(child.pid)!.identity]) == .caller)
    }

    @Test func nameRegexMatchesCommAndCmdline() throws {
        let marker = "chaosmarker\(UInt32.random(in: 0...UInt32.max))"
        let a = try Child(["-c", "exec -a \(marker) sleep 600"], executable: "/bin/bash")  // marker only in argv[0]
        let b = try Child(["600"])
        let g = ProcessGuard(protectedNames: [])
        let byCmdline = try ProcFS().select(.name(try NamePattern(marker)), guard: g, callerLineage: [])
        #expect(byCmdline.selected.map(\.pid) == [a.pid])
        let byComm = try ProcFS().select(.name(try NamePattern("^sleep$")), guard: g, callerLineage: [])
        #expect(byComm.selected.map(\.pid).contains(b.pid))
        #expect(throws: PatternError.self) { try NamePattern("(unclosed") }
    }
}
