import AgentAPI
import AgentCore
import Cgroups
import Foundation
import Logging
import Processes

/// `pause`: SIGSTOP the selected processes; SIGCONT exactly those at revert. A process that was already stopped is
/// left as it was (listed under `skipped`). Every signal goes through a pidfd after a start-time check.
/// With `cgroup`/`unit`: the whole cgroup is frozen with cgroup.freeze (waiting for "frozen 1" in cgroup.events) and
/// thawed at revert, which also catches processes forked while it runs.
public struct PauseDriver: FaultDriver {
    public let kind = "pause"
    let targeting: ProcessTargeting
    let cgroups: CgroupTargeting
    let signaller: ProcessSignaller
    let host: HostFacts
    /// The pidfds each pause opened at apply, kept until its revert has resumed the processes: a revert needs no new
    /// file descriptor, so an agent out of descriptors (a connection flood) still resumes what it stopped.
    let held: HeldPidfds

    struct Plan: Codable, Sendable, Equatable {
        var processes: [ProcessRef]
        var skipped: [SkippedProcess]
        /// Set when the fault freezes a cgroup instead of stopping processes.
        var freeze: FrozenCgroup?
        /// The name pattern that selected the processes (re-checked under the pidfd before SIGSTOP).
        var name: String? = nil
    }

    struct FrozenCgroup: Codable, Sendable, Equatable {
        var mount: String
        var cgroup: String
        /// The processes in it when it was frozen (for the user; the freeze covers later ones too).
        var pids: [Int32]
    }

    public init(
        procfs: ProcFS = ProcFS(), processGuard: ProcessGuard, host: HostFacts, ownCgroup: String? = nil,
        pidfds: any PidfdCalls = KernelPidfds(), heldPidfdLimit: Int = 512
    ) {
        held = HeldPidfds(limit: heldPidfdLimit)
        targeting = ProcessTargeting(procfs: procfs, processGuard: processGuard)
        cgroups = CgroupTargeting(mount: host.cgroup2Mount, ownCgroup: ownCgroup ?? CgroupFS.cgroup(ofPID: getpid()))
        signaller = ProcessSignaller(procfs: procfs, calls: pidfds)
        self.host = host
    }

    public func availability() -> KindAvailability { ProcessFaultSupport.availability(kind: kind, host: host) }

    public func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        let reader = try SpecReader(spec, kind: kind, allowed: ProcessTargeting.selectorKeys)
        if CgroupTargeting.keys.contains(try ProcessTargeting.selectorKey(reader)) {
            return try prepareFreeze(reader, context: context)
        }
        let selector = try targeting.selector(from: reader)
        let lineage = targeting.processGuard.lineage(of: context.callerPID)
        var (selected, skipped) = try targeting.resolve(selector, callerLineage: lineage)
        var refs: [ProcessRef] = []
        for p in selected {
            if let holder = context.heldClaims[Self.claim(p.pid, p.startTime)] {
                if case .pid = selector {
                    throw AgentError.conflict("process \(p.pid) (\(p.comm)) is already paused by fault \(holder)")
                }
                skipped.append(SkippedProcess(pid: p.pid, comm: p.comm, reason: "already paused by fault \(holder)"))
                continue
            }
            switch p.state {
            case "T": skipped.append(SkippedProcess(pid: p.pid, comm: p.comm, reason: "already stopped; left as it is"))
            case "t": skipped.append(SkippedProcess(pid: p.pid, comm: p.comm, reason: "stopped by a debugger; left as it is"))
            default: refs.append(ProcessRef(p))
            }
        }
        guard !refs.isEmpty else {
            if let paused = skipped.first(where: { $0.reason.hasPrefix("already paused by fault") }) {
                throw AgentError.conflict("process \(paused.pid) (\(paused.comm)) is \(paused.reason)")
            }
            throw AgentError.refused(
                "nothing to pause: every selected process is already stopped ("
                    + skipped.prefix(5).map { "\($0.pid) \($0.comm)" }.joined(separator: ", ") + ")")
        }
        var plan = Plan(processes: refs, skipped: skipped)
        if case .name(let pattern) = selector { plan.name = pattern.source }
        let json = try JSONValue.from(plan)
        return PreparedFault(
            target: json, plan: json, claims: refs.map { Self.claim($0.pid, $0.startTime) })
    }

    func prepareFreeze(_ reader: SpecReader, context: FaultContext) throws -> PreparedFault {
        let (fs, cgroup) = try cgroups.resolve(reader)
        let field = reader.has("cgroup") ? "spec.cgroup" : "spec.unit"
        let claim = "cgroup:\(fs.directory(cgroup)):freeze"
        if let holder = context.heldClaims[claim] { throw AgentError.conflict("\(cgroup) is already frozen by fault \(holder)") }
        guard let state = try? fs.read(cgroup, "cgroup.freeze") else {
            throw AgentError.unsupported("\(fs.directory(cgroup)) has no cgroup.freeze (Linux 5.2+ is needed to freeze a cgroup)")
        }
        if state.hasPrefix("1") {
            throw AgentError.refused("\(cgroup) is already frozen (cgroup.freeze is 1); left as it is", field: field)
        }
        // Every process inside must be one the agent may stop (the caller's shell, sshd... are not).
        let lineage = targeting.processGuard.lineage(of: context.callerPID)
        let pids = try Self.subtreePIDs(fs, cgroup)
        for pid in pids {
            guard let p = targeting.procfs.process(pid) else { continue }
            if let reason = targeting.processGuard.protection(for: p, callerLineage: lineage) {
                throw AgentError.refused("\(cgroup) holds \(pid) (\(p.comm)), which may not be paused: \(reason)", field: field)
            }
        }
        let plan = Plan(processes: [], skipped: [], freeze: FrozenCgroup(mount: fs.mount, cgroup: cgroup, pids: pids))
        let json = try JSONValue.from(plan)
        return PreparedFault(target: json, plan: json, claims: [claim])
    }

    /// PIDs in a cgroup and its descendants (a freeze covers the whole subtree).
    static func subtreePIDs(_ fs: CgroupFS, _ cgroup: String) throws -> [Int32] {
        var out = fs.procs(cgroup)
        for child in fs.children(cgroup) { out += try subtreePIDs(fs, cgroup + "/" + child) }
        return out
    }

    public func apply(plan json: JSONValue) async throws -> PreparedFault? {
        var plan = try json.decode(Plan.self)
        if let f = plan.freeze {
            // Proof: the kernel reports "frozen 1" in cgroup.events once every task in the subtree is frozen.
            do { try await CgroupFS(mount: f.mount).freeze(f.cgroup, true) } catch {
                throw AgentError.failed("freezing \(f.cgroup): \(error)")
            }
            return nil
        }
        var stopped: [ProcessRef] = []
        var gone: [ProcessRef] = []
        let pattern = plan.name.flatMap { try? NamePattern($0) }
        var budget = MatchBudget()
        for ref in plan.processes {
            // The pidfd is opened first; the start time and the name are checked while it is held; SIGSTOP goes
            // through it, and it is kept for the revert.
            guard let (handle, now) = try signaller.pin(ref.pid, expecting: ref.identity),
                try pattern.map({ try $0.matches(now, budget: &budget) }) ?? (now.comm == ref.comm)
            else {
                gone.append(ref)
                continue
            }
            switch try handle.send(SIGSTOP) {
            case .delivered:
                held.keep(handle)
                stopped.append(ref)
            case .gone: gone.append(ref)
            }
        }
        // Proof: /proc must show each one stopped.
        for ref in stopped {
            let ok = await targeting.waitFor(ref) { p in p == nil || p!.state == "T" }
            if !ok {
                let state = targeting.procfs.process(ref.pid).map { String($0.state) } ?? "?"
                throw AgentError.failed("SIGSTOP was delivered to \(ref.pid) (\(ref.comm)) but /proc shows state \(state), not T")
            }
        }
        guard !stopped.isEmpty else {
            throw AgentError.refused("the selected processes exited before they could be paused")
        }
        guard !gone.isEmpty else { return nil }
        plan.processes = stopped
        plan.skipped += gone.map { SkippedProcess(pid: $0.pid, comm: $0.comm, reason: "exited before it was paused") }
        let updated = try JSONValue.from(plan)
        return PreparedFault(target: updated, plan: updated, claims: stopped.map { Self.claim($0.pid, $0.startTime) })
    }

    static func claim(_ pid: Int32, _ startTime: UInt64) -> String { "process:\(pid):\(startTime)" }

    public func revert(plan json: JSONValue) async throws {
        let plan = try json.decode(Plan.self)
        if let f = plan.freeze {
            let fs = CgroupFS(mount: f.mount)
            guard fs.exists(f.cgroup) else { return }
            do { try await fs.freeze(f.cgroup, false) } catch {
                if !fs.exists(f.cgroup) { return }
                throw AgentError.failed("thawing \(f.cgroup): \(error)")
            }
            return
        }
        var problems: [String] = []
        for ref in plan.processes {
            do {
                // The pidfd held since apply when there is one (no new descriptor needed); after a restart, a new one.
                let outcome: SignalOutcome
                if let handle = held.handle(for: ref.identity) {
                    outcome = try handle.send(SIGCONT)
                    held.release(ref.identity)
                } else {
                    outcome = try signaller.send(SIGCONT, to: ref.identity)
                }
                guard outcome == .delivered else { continue }
                let resumed = await targeting.waitFor(ref, timeout: .milliseconds(500)) { p in p == nil || p!.state != "T" }
                if !resumed { problems.append("\(ref.pid) (\(ref.comm)) is still stopped after SIGCONT") }
            } catch {
                problems.append("\(ref.pid) (\(ref.comm)): \(error)")
            }
        }
        if !problems.isEmpty { throw AgentError.failed(problems.joined(separator: "; ")) }
    }
}

/// pidfds kept from a pause's apply to its revert, by process identity (claims make an identity belong to one fault).
/// At most `limit` (default 512) are kept, so that pausing thousands of processes cannot itself use up the agent's descriptors;
/// a process past the limit is resumed through a pidfd opened at revert, as after a restart.
final class HeldPidfds: @unchecked Sendable {
    let limit: Int
    private let lock = NSLock()
    private var handles: [ProcessIdentity: ProcessHandle] = [:]

    init(limit: Int) { self.limit = limit }

    /// Keeps the pidfd for the revert, unless `limit` are kept already (then it is closed when released).
    func keep(_ handle: ProcessHandle) {
        lock.withLock { if handles.count < limit { handles[handle.identity] = handle } }
    }
    func handle(for identity: ProcessIdentity) -> ProcessHandle? { lock.withLock { handles[identity] } }
    /// Forgets (and so closes) the pidfd.
    func release(_ identity: ProcessIdentity) { _ = lock.withLock { handles.removeValue(forKey: identity) } }
    var count: Int { lock.withLock { handles.count } }
}

/// Availability shared by the signal-based kinds.
enum ProcessFaultSupport {
    static func availability(kind: String, host: HostFacts) -> KindAvailability {
        if !host.pidfd {
            return KindAvailability(
                kind: kind, available: false,
                reason: "this kernel has no pidfd_open (Linux 5.3+), so signals cannot be sent without PID-reuse races")
        }
        if host.euid != 0 && !host.capabilities.contains("CAP_KILL") {
            return KindAvailability(
                kind: kind, available: false, reason: "the agent lacks CAP_KILL, so it cannot signal other users' processes")
        }
        return KindAvailability(kind: kind, available: true)
    }
}
