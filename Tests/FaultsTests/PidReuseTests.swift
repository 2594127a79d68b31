import AgentAPI
import AgentCore
import Foundation
import Logging
@testable import Processes
import Testing

@testable import Faults

/// A simulated kernel: a process table whose PIDs can be handed to a new process at a scripted moment, and pidfds
/// that pin the process (the incarnation) holding the PID when they were opened, as the real ones do. The agent reads
/// /proc and opens pidfds through it, so a test decides exactly when a PID is recycled.
final class SimulatedKernel: ProcessSource, PidfdCalls, @unchecked Sendable {
    struct Incarnation {
        var process: HostProcess
        var alive = true
        var signals: [Int32] = []
    }
    private let lock = NSLock()
    private var incarnations: [Incarnation] = []
    /// pid -> index of the incarnation holding it now.
    private var holders: [Int32: Int] = [:]
    private var fds: [Int32: Int] = [:]
    private var nextFD: Int32 = 1000
    private var reads: [Int32: Int] = [:]
    /// pid -> (after this many reads of it, it is recycled to this process).
    private var recycles: [Int32: (Int, HostProcess)] = [:]
    /// When set, pidfd_open fails with this errno (an agent out of descriptors: EMFILE).
    var openError: Int32? {
        get { lock.withLock { _openError } }
        set { lock.withLock { _openError = newValue } }
    }
    private var _openError: Int32?
    private(set) var opens = 0

    static func process(_ pid: Int32, _ name: String, start: UInt64 = 4242, ppid: Int32 = 1) -> HostProcess {
        HostProcess(
            pid: pid, ppid: ppid, startTime: start, comm: name, cmdline: ["/usr/bin/\(name)", "--serve"], state: "S",
            flags: 0, uid: 0)
    }

    /// Adds a running process; returns its incarnation number.
    @discardableResult func spawn(_ p: HostProcess) -> Int {
        lock.withLock {
            if let old = holders[p.pid] { incarnations[old].alive = false }
            incarnations.append(Incarnation(process: p))
            holders[p.pid] = incarnations.count - 1
            return incarnations.count - 1
        }
    }

    /// After `reads` more reads of `pid`'s /proc entry, its process exits and `successor` gets the PID.
    func recycle(_ pid: Int32, afterReads reads: Int, to successor: HostProcess) {
        lock.withLock { recycles[pid] = ((self.reads[pid] ?? 0) + reads, successor) }
    }

    func signals(_ incarnation: Int) -> [Int32] { lock.withLock { incarnations[incarnation].signals } }

    // ProcessSource
    func pids() -> [Int32] { lock.withLock { holders.keys.sorted() } }

    func process(_ pid: Int32) -> HostProcess? {
        let (answer, successor): (HostProcess?, HostProcess?) = lock.withLock {
            let answer = holders[pid].map { incarnations[$0].process }
            reads[pid, default: 0] += 1
            if let (after, next) = recycles[pid], reads[pid]! >= after {
                recycles[pid] = nil
                return (answer, next)
            }
            return (answer, nil)
        }
        if let successor { spawn(successor) }
        return answer
    }

    // PidfdCalls
    func open(_ pid: Int32) -> Int32 {
        lock.withLock {
            opens += 1
            if let e = _openError {
                errno = e
                return -1
            }
            guard let holder = holders[pid], incarnations[holder].alive else {
                errno = ESRCH
                return -1
            }
            nextFD += 1
            fds[nextFD] = holder
            return nextFD
        }
    }

    func sendSignal(_ fd: Int32, _ signal: Int32) -> Int32 {
        lock.withLock {
            guard let i = fds[fd] else {
                errno = EBADF
                return -1
            }
            guard incarnations[i].alive else {
                errno = ESRCH
                return -1
            }
            incarnations[i].signals.append(signal)
            switch signal {
            case SIGKILL: incarnations[i].alive = false
            case SIGSTOP: incarnations[i].process.state = "T"
            case SIGCONT: incarnations[i].process.state = "S"
            default: break
            }
            return 0
        }
    }

    func close(_ fd: Int32) { _ = lock.withLock { fds.removeValue(forKey: fd) } }
    var openDescriptors: Int { lock.withLock { fds.count } }
}

private let simulatedHost = HostFacts(
    kernel: "test", euid: 0, capabilities: [], pidfd: true, cgroup2Mount: nil, cgroupControllers: [], netlink: false)

@Suite("PID reuse within one start-time tick (simulated kernel)", .serialized)
struct PidReuseTests {
    let kernel = SimulatedKernel()
    var procfs: ProcFS { ProcFS(source: kernel) }
    var guardian: ProcessGuard { ProcessGuard(procfs: procfs, protectedNames: [], agentPID: 999_999) }

    func killer() -> KillDriver {
        KillDriver(procfs: procfs, processGuard: guardian, host: simulatedHost, logger: Logger(label: "test"), pidfds: kernel)
    }

    /// The case: the victim was read (and matched), then exited; a non-matching process got its PID with the
    /// same start time before the signal. The old code re-checked only the start time and killed the newcomer.
    @Test func killApplySkipsANewcomerWithTheSameStartTime() async throws {
        let victim = kernel.spawn(SimulatedKernel.process(500, "victim"))
        kernel.recycle(500, afterReads: 1, to: SimulatedKernel.process(500, "bystander"))
        let driver = killer()
        let prepared = try driver.prepare(spec: .object(["name": .string("^victim$")]), context: FaultContext(owner: "t"))
        #expect(try prepared.plan.decode(KillDriver.Plan.self).processes.map(\.pid) == [500])
        // By now PID 500 belongs to the bystander, started in the same clock tick.
        let bystander = 1
        let outcome = await statusOf { _ = try await driver.apply(plan: prepared.plan) }
        #expect(kernel.signals(bystander).isEmpty, "the newcomer on the recycled PID was signalled")
        #expect(kernel.signals(victim).isEmpty)
        #expect(outcome == 422)
    }

    /// The same for `kill --pid`: the recorded name must still be the one read while the pidfd is held.
    @Test func killByPidSkipsANewcomerWithTheSameStartTime() async throws {
        kernel.spawn(SimulatedKernel.process(501, "victim"))
        kernel.recycle(501, afterReads: 1, to: SimulatedKernel.process(501, "bystander"))
        let driver = killer()
        let prepared = try driver.prepare(spec: .object(["pid": .number(501)]), context: FaultContext(owner: "t"))
        #expect(await statusOf { _ = try await driver.apply(plan: prepared.plan) } == 422)
        #expect(kernel.signals(1).isEmpty, "the newcomer on the recycled PID was signalled")
    }

    /// `--repeat` scans: each candidate's pidfd is opened before its /proc entry is read, so a victim that exits right
    /// after it was read takes the signal with it (ESRCH), and the newcomer is untouched.
    @Test func repeatScanPinsBeforeReading() throws {
        let victim = kernel.spawn(SimulatedKernel.process(600, "victim"))
        let other = kernel.spawn(SimulatedKernel.process(601, "victim", start: 7))
        kernel.recycle(600, afterReads: 1, to: SimulatedKernel.process(600, "bystander"))
        let signaller = ProcessSignaller(procfs: procfs, calls: kernel)
        var budget = MatchBudget()
        let hit = try signaller.signalMatching(
            .name(try NamePattern("^victim$")), signal: SIGKILL, guard: guardian, callerLineage: [], budget: &budget)
        #expect(kernel.signals(2).isEmpty, "the newcomer on the recycled PID was signalled")
        #expect(kernel.signals(victim).isEmpty)  // it had exited: the pidfd names it, so nothing is delivered
        #expect(kernel.signals(other) == [SIGKILL])
        #expect(hit.map(\.pid) == [601])
        #expect(kernel.openDescriptors == 0)
    }

    /// `kill --pid X --repeat`: the same process identity is signalled every interval while it lives (the old code
    /// signalled once); a process that later gets its PID is not.
    @Test func repeatByPidSignalsTheSameProcessEveryInterval() async throws {
        let target = kernel.spawn(SimulatedKernel.process(700, "worker"))
        let driver = killer()
        let prepared = try driver.prepare(
            spec: .object(["pid": .number(700), "signal": .string("USR1"), "repeat": .string("100ms")]),
            context: FaultContext(owner: "t"))
        _ = try await driver.apply(plan: prepared.plan)
        let task = Task { await driver.sustain(plan: prepared.plan) }
        // Polled, not timed: a loaded machine may be slow, but the old code never sent more than the first.
        let start = ContinuousClock.now
        while kernel.signals(target).count < 4 && ContinuousClock.now - start < .seconds(10) {
            try await Task.sleep(for: .milliseconds(20))
        }
        let during = kernel.signals(target).count
        #expect(during >= 4, "only \(during) signals in 10 s at a 100 ms interval")
        // The worker exits and a newcomer takes PID 700: the repeat stops at the old identity.
        let newcomer = kernel.spawn(SimulatedKernel.process(700, "worker"))
        try await Task.sleep(for: .milliseconds(350))
        task.cancel()
        await task.value
        #expect(kernel.signals(newcomer).isEmpty)
        #expect(kernel.openDescriptors == 0, "the held pidfd was not closed")
    }

    /// The caller's lineage is (pid, start time): a new process on a caller's old PID is not spared.
    @Test func lineageIsIdentitiesNotBarePIDs() throws {
        kernel.spawn(SimulatedKernel.process(800, "shell", start: 100))
        kernel.spawn(SimulatedKernel.process(801, "ctl", start: 101, ppid: 800))
        let lineage = guardian.lineage(of: 801)
        #expect(lineage == [ProcessIdentity(pid: 801, startTime: 101), ProcessIdentity(pid: 800, startTime: 100)])
        let successor = SimulatedKernel.process(800, "victim", start: 900)
        #expect(guardian.protection(for: successor, callerLineage: lineage) == nil)
        #expect(guardian.protection(for: SimulatedKernel.process(800, "shell", start: 100), callerLineage: lineage) == .caller)
        // Journaled as identities; a plan from an older agent (bare pids) still decodes and spares by pid.
        let plan = KillDriver.Plan(
            signal: SIGKILL, signalName: "SIGKILL", callerLineage: Array(lineage), processes: [], skipped: [])
        let json = try JSONValue.from(plan)
        #expect(try json.decode(KillDriver.Plan.self).callerLineage.contains(ProcessIdentity(pid: 800, startTime: 100)))
        let old = try JSONDecoder().decode([ProcessIdentity].self, from: Data("[800, 801]".utf8))
        #expect(guardian.protection(for: successor, callerLineage: Set(old)) == .caller)
    }

    /// A pause keeps the pidfds it opened at apply: an agent that can open no descriptor at revert (a connection
    /// flood exhausted them: EMFILE) still resumes the process, and the pidfds are closed afterwards.
    @Test func pauseRevertNeedsNoNewDescriptor() async throws {
        let target = kernel.spawn(SimulatedKernel.process(900, "db"))
        let driver = PauseDriver(procfs: procfs, processGuard: guardian, host: simulatedHost, ownCgroup: "/x", pidfds: kernel)
        let prepared = try driver.prepare(spec: .object(["pid": .number(900)]), context: FaultContext(owner: "t"))
        _ = try await driver.apply(plan: prepared.plan)
        #expect(kernel.signals(target) == [SIGSTOP])
        #expect(kernel.openDescriptors == 1 && driver.held.count == 1)
        kernel.openError = EMFILE
        let opensBefore = kernel.opens
        try await driver.revert(plan: prepared.plan)
        #expect(kernel.signals(target) == [SIGSTOP, SIGCONT])
        #expect(kernel.opens == opensBefore, "revert opened a new pidfd")
        #expect(kernel.openDescriptors == 0 && driver.held.count == 0)
        // After a restart (a new driver, nothing held) the revert opens a pidfd, and says so when it cannot.
        kernel.openError = nil
        let again = try driver.prepare(spec: .object(["pid": .number(900)]), context: FaultContext(owner: "t"))
        _ = try await driver.apply(plan: again.plan)
        let restarted = PauseDriver(procfs: procfs, processGuard: guardian, host: simulatedHost, ownCgroup: "/x", pidfds: kernel)
        kernel.openError = EMFILE
        await #expect(throws: AgentError.self) { try await restarted.revert(plan: again.plan) }
        kernel.openError = nil
        try await restarted.revert(plan: again.plan)
        #expect(kernel.signals(target) == [SIGSTOP, SIGCONT, SIGSTOP, SIGCONT])
    }

    /// Past the limit of held pidfds, a paused process is resumed through a pidfd opened at revert.
    @Test func heldPidfdsAreCapped() async throws {
        let a = kernel.spawn(SimulatedKernel.process(950, "db"))
        let b = kernel.spawn(SimulatedKernel.process(951, "db", start: 9))
        let driver = PauseDriver(
            procfs: procfs, processGuard: guardian, host: simulatedHost, ownCgroup: "/x", pidfds: kernel, heldPidfdLimit: 1)
        let prepared = try driver.prepare(spec: .object(["name": .string("^db$")]), context: FaultContext(owner: "t"))
        _ = try await driver.apply(plan: prepared.plan)
        #expect(driver.held.count == 1 && kernel.openDescriptors == 1)
        try await driver.revert(plan: prepared.plan)
        #expect(kernel.signals(a) == [SIGSTOP, SIGCONT] && kernel.signals(b) == [SIGSTOP, SIGCONT])
        #expect(driver.held.count == 0 && kernel.openDescriptors == 0)
    }

    /// Nested quantifiers against the name: answered at once (the old Regex took 32 s per such process).
    @Test func pathologicalNameIsCheap() throws {
        let name = "x" + String(repeating: "a", count: 20) + "b"
        kernel.spawn(HostProcess(pid: 1000, ppid: 1, startTime: 1, comm: "sleep", cmdline: [name, "600"],
                                 state: "S", flags: 0, uid: 0))
        var budget = MatchBudget()
        let result = try procfs.select(.name(try NamePattern("^x(a+)+$")), guard: guardian, callerLineage: [], budget: &budget)
        #expect(result.selected.isEmpty)
        #expect(budget.used < 2_000)
    }

    /// A request whose matching runs out of its step budget is refused with 422 naming spec.name.
    @Test func exhaustedBudgetIs422() throws {
        for pid in Int32(2000)..<2100 { kernel.spawn(SimulatedKernel.process(pid, "svc\(pid)")) }
        var targeting = ProcessTargeting(procfs: procfs, processGuard: guardian)
        targeting.matchBudget = 500
        let selector = ProcessSelector.name(try NamePattern("(a|b|c|d)*z"))
        #expect {
            _ = try targeting.resolve(selector, callerLineage: [])
        } throws: { error in
            let e = error as? AgentError
            return e?.status == 422 && e?.field == "spec.name" && e?.message.contains("steps") == true
        }
    }
}

/// The HTTP status an async driver call failed with (nil when it succeeded).
func statusOf(_ body: () async throws -> Void) async -> Int? {
    do {
        try await body()
        return nil
    } catch let e as AgentError { return e.status } catch { return -1 }
}
