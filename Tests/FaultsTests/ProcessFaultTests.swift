import AgentAPI
import AgentCore
import Foundation
import Logging
import Processes
import Testing

@testable import Faults

/// Runs `sleep 600` under a unique argv[0], with a clean signal mask: Foundation's Process spawns from a Swift
/// concurrency thread whose mask blocks most signals, and posix_spawn hands that mask to the child.
func spawnVictim(_ marker: String) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = [
        "-c",
        "import os, signal; signal.pthread_sigmask(signal.SIG_SETMASK, []); "
            + "[signal.signal(s, signal.SIG_DFL) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)]; "
            + "os.execvp('bash', ['bash', '-c', 'exec -a \(marker) sleep 600'])",
    ]
    try p.run()
    return p
}

/// A `sleep 600` child with a unique argv[0], killed at the end.
final class Victim {
    let process: Process
    let marker = "chaosvictim\(UInt32.random(in: 0...UInt32.max))"
    var pid: Int32 { process.processIdentifier }

    init() throws {
        process = try spawnVictim(marker)
        for _ in 0..<400 {
            if let p = ProcFS().process(pid), p.comm == "sleep", p.state == "S" { break }
            usleep(5000)
        }
    }

    var state: Character? { ProcFS().process(pid)?.state }

    /// Waits up to `seconds` for the process to exit; false if it is still running (so a regression fails, not hangs).
    func exited(within seconds: Double = 5) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < end { usleep(5000) }
        return !process.isRunning
    }

    var startTime: UInt64 { ProcFS().process(pid)!.startTime }

    deinit {
        kill(pid, SIGCONT)
        kill(pid, SIGKILL)
        process.waitUntilExit()
    }
}

let host = HostProbe.probe()
let pause = PauseDriver(processGuard: ProcessGuard(protectedNames: ["sshd"]), host: host)
let killer = KillDriver(processGuard: ProcessGuard(protectedNames: ["sshd"]), host: host, logger: Logger(label: "test"))
let context = FaultContext(owner: "unix:test", callerPID: getpid())

func refusal(_ body: () throws -> Void) -> (Int, String?)? {
    do {
        try body()
        return nil
    } catch let e as AgentError { return (e.status, e.field) } catch { return (-1, nil) }
}

@Suite("pause and kill drivers on real processes", .serialized)
struct ProcessFaultTests {
    @Test func pauseStopsAndRevertResumesExactlyThose() async throws {
        let v = try Victim()
        let already = try Victim()
        kill(already.pid, SIGSTOP)
        for _ in 0..<100 where already.state != "T" { usleep(2000) }
        // Both share the marker prefix: select them by a regex matching both argv[0]s.
        let regex = "^(\(v.marker)|\(already.marker))"
        let prepared = try pause.prepare(spec: .object(["name": .string(regex)]), context: context)
        let plan = try prepared.plan.decode(PauseDriver.Plan.self)
        #expect(plan.processes.map(\.pid) == [v.pid])
        #expect(plan.skipped.map(\.pid) == [already.pid])
        #expect(prepared.claims == ["process:\(v.pid):\(v.startTime)"])
        _ = try await pause.apply(plan: prepared.plan)
        #expect(v.state == "T")
        try await pause.revert(plan: prepared.plan)
        #expect(v.state == "S" || v.state == "R")
        #expect(already.state == "T")  // left as it was
        try await pause.revert(plan: prepared.plan)  // idempotent
    }

    @Test func revertAfterTheProcessExitedSucceeds() async throws {
        var v: Victim? = try Victim()
        let prepared = try pause.prepare(spec: .object(["pid": .number(Double(v!.pid))]), context: context)
        _ = try await pause.apply(plan: prepared.plan)
        v = nil  // killed and reaped
        try await pause.revert(plan: prepared.plan)
    }

    @Test func alreadyPausedByAnotherFaultIsAConflict() throws {
        let v = try Victim()
        let claim = "process:\(v.pid):\(v.startTime)"
        kill(v.pid, SIGSTOP)
        for _ in 0..<100 where v.state != "T" { usleep(2000) }
        let held = FaultContext(owner: "unix:test", callerPID: getpid(), heldClaims: [claim: "f-other"])
        #expect(refusal { _ = try pause.prepare(spec: .object(["pid": .number(Double(v.pid))]), context: held) }?.0 == 409)
    }

    @Test func pauseRefusals() throws {
        let v = try Victim()
        let cases: [(JSONValue, Int, String?)] = [
            (.object([:]), 400, "spec"),
            (.object(["pid": .number(Double(v.pid)), "name": .string("x")]), 400, "spec.pid"),
            (.object(["pid": .string("abc")]), 400, "spec.pid"),
            (.object(["pid": .number(0)]), 400, "spec.pid"),
            (.object(["pid": .number(1.5)]), 400, "spec.pid"),
            (.object(["pid": .number(1)]), 422, "spec.pid"),
            (.object(["pid": .number(2)]), 422, "spec.pid"),
            (.object(["pid": .number(Double(getpid()))]), 422, "spec.pid"),
            (.object(["pid": .number(Double(getppid()))]), 422, "spec.pid"),
            (.object(["pid": .number(4_000_000)]), 422, "spec.pid"),
            (.object(["name": .string("(unclosed")]), 400, "spec.name"),
            (.object(["name": .string("")]), 400, "spec.name"),
            (.object(["name": .string("^no-such-process-anywhere$")]), 422, "spec.name"),
            (.object(["pid": .number(Double(v.pid)), "colour": .string("red")]), 400, "spec.colour"),
            (.object(["unit": .string("no-such-unit-anywhere.service")]), 422, "spec.unit"),
            (.object(["cgroup": .string("/no-such-cgroup")]), 422, "spec.cgroup"),
            (.object(["cgroup": .string("/")]), 422, "spec.cgroup"),
        ]
        for (spec, status, field) in cases {
            let r = refusal { _ = try pause.prepare(spec: spec, context: context) }
            #expect(r?.0 == status, "\(spec)")
            #expect(r?.1 == field, "\(spec)")
        }
        // The caller itself is excluded from a name match (like `pkill -f` must not kill itself).
        let me = ProcFS().process(getpid())!
        #expect(refusal { _ = try pause.prepare(spec: .object(["name": .string("^\(me.comm)$")]), context: context) }?.0 == 422)
        #expect(v.state == "S")  // nothing was applied by any refusal
    }

    @Test func protectedNamesAreRefused() throws {
        let v = try Victim()
        let guarded = PauseDriver(processGuard: ProcessGuard(protectedNames: ["sleep"]), host: host)
        let r = refusal { _ = try guarded.prepare(spec: .object(["pid": .number(Double(v.pid))]), context: context) }
        #expect(r?.0 == 422)
    }

    @Test func killDeliversAndVerifies() async throws {
        let v = try Victim()
        let prepared = try killer.prepare(spec: .object(["pid": .number(Double(v.pid))]), context: context)
        _ = try await killer.apply(plan: prepared.plan)
        try #require(v.exited())
        #expect(v.process.terminationReason == .uncaughtSignal)
        #expect(v.process.terminationStatus == SIGKILL)
    }

    @Test func killWithAnotherSignal() async throws {
        // USR1, not TERM: the test runner ignores SIGTERM and an ignored disposition survives exec into the victim.
        let v = try Victim()
        let prepared = try killer.prepare(spec: .object(["pid": .number(Double(v.pid)), "signal": .string("USR1")]), context: context)
        _ = try await killer.apply(plan: prepared.plan)
        try #require(v.exited())
        #expect(v.process.terminationStatus == SIGUSR1)
    }

    @Test func killRefusals() throws {
        let v = try Victim()
        for (signal, status) in [("STOP", 400), ("CONT", 400), ("NOPE", 400), ("TSTP", 400)] {
            let r = refusal { _ = try killer.prepare(spec: .object(["pid": .number(Double(v.pid)), "signal": .string(signal)]), context: context) }
            #expect(r?.0 == status, "\(signal)")
            #expect(r?.1 == "spec.signal")
        }
        let r = refusal { _ = try killer.prepare(spec: .object(["pid": .number(Double(v.pid)), "repeat": .string("1ms")]), context: context) }
        #expect(r?.1 == "spec.repeat")
        #expect(refusal { _ = try killer.prepare(spec: .object(["pid": .number(1)]), context: context) }?.0 == 422)
        #expect(v.state == "S")
    }

    @Test func repeatKillKeepsKillingNewMatchesUntilCancelled() async throws {
        let first = try Victim()
        let marker = first.marker
        let prepared = try killer.prepare(spec: .object(["name": .string(marker), "repeat": .string("100ms")]), context: context)
        _ = try await killer.apply(plan: prepared.plan)
        try #require(first.exited())
        let sustain = Task { await killer.sustain(plan: prepared.plan) }
        // A new process with the same name appears: the repeat kills it.
        let second = try spawnVictim(marker)
        let end = Date().addingTimeInterval(5)
        while second.isRunning && Date() < end { try await Task.sleep(for: .milliseconds(20)) }
        if second.isRunning { kill(second.processIdentifier, SIGKILL) }
        second.waitUntilExit()
        #expect(second.terminationStatus == SIGKILL)
        sustain.cancel()
        _ = await sustain.value
        // After the fault ends, a third one survives.
        let third = try spawnVictim(marker)
        try await Task.sleep(for: .milliseconds(400))
        #expect(third.isRunning)
        third.terminate()
        third.waitUntilExit()
    }

    @Test func availabilityReflectsTheHost() {
        #expect(pause.availability().available == host.pidfd)
        var noPidfd = host
        noPidfd.pidfd = false
        let p = PauseDriver(processGuard: ProcessGuard(protectedNames: []), host: noPidfd)
        #expect(p.availability().available == false)
        #expect(p.availability().reason?.contains("pidfd") == true)
        #expect(FaultCatalog.standard(protectedProcesses: [], host: host, logger: Logger(label: "t")).first { $0.kind == "network" }?.availability().available == false)
    }
}
