import AgentAPI
import AgentCore
import Cgroups
import Foundation
import Logging
import Processes

/// `kill`: send a signal (default SIGKILL) to the selected processes; with `repeat`, keep signalling whatever matches
/// the selector at that interval until the fault ends. Nothing to undo at revert except stopping the repeat.
public struct KillDriver: FaultDriver {
    public let kind = "kill"
    let targeting: ProcessTargeting
    let cgroups: CgroupTargeting
    let signaller: ProcessSignaller
    let host: HostFacts
    let logger: Logger

    /// Stopping signals would leave a fault behind with nothing to revert it: `pause` is the kind for that.
    static let refusedSignals: Set<Int32> = [SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGCONT]

    struct Plan: Codable, Sendable, Equatable {
        var signal: Int32
        var signalName: String
        var pid: Int32?
        var name: String?
        var repeatSeconds: Double?
        /// With `cgroup`/`unit`: the cgroup (relative to `mount`) whose processes are signalled.
        var mount: String?
        var cgroup: String?
        /// SIGKILL to a cgroup holding no protected process: one write to cgroup.kill (safe against forks).
        var cgroupKill: Bool?
        /// The caller and its ancestors as (pid, start time) (bare pids in plans journaled by older agents).
        var callerLineage: [ProcessIdentity]
        var processes: [ProcessRef]
        var skipped: [SkippedProcess]
    }

    struct Target: Codable, Sendable, Equatable {
        var signal: String
        var `repeat`: String?
        var processes: [ProcessRef]
        var skipped: [SkippedProcess]
    }

    public init(
        procfs: ProcFS = ProcFS(), processGuard: ProcessGuard, host: HostFacts, logger: Logger,
        pidfds: any PidfdCalls = KernelPidfds()
    ) {
        targeting = ProcessTargeting(procfs: procfs, processGuard: processGuard)
        cgroups = CgroupTargeting(mount: host.cgroup2Mount)
        signaller = ProcessSignaller(procfs: procfs, calls: pidfds)
        self.host = host
        self.logger = logger
    }

    public func availability() -> KindAvailability { ProcessFaultSupport.availability(kind: kind, host: host) }

    public func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        let reader = try SpecReader(spec, kind: kind, allowed: ProcessTargeting.selectorKeys.union(["signal", "repeat"]))
        var signal = SIGKILL
        if let v = reader.object["signal"], v != .null {
            let text: String
            switch v {
            case .string(let s):
                guard s.utf8.count <= 16, !s.hasControlCharacters else {
                    throw AgentError.badRequest("signal must be a name like KILL or a number 1-64", field: "spec.signal")
                }
                text = s
            // Checked: 1e300, -1e300, 1e19 and 9.5 are 400s naming spec.signal (an unchecked Int(n) trapped).
            case .number: text = String(try reader.integer("signal", range: 1...64)!)
            default: throw AgentError.badRequest("signal must be a name like KILL or a number", field: "spec.signal")
            }
            guard let n = ProcessSignaller.number(for: text) else {
                throw AgentError.badRequest("unknown signal '\(text)' (try KILL, TERM, INT, HUP, USR1 or a number)", field: "spec.signal")
            }
            guard !Self.refusedSignals.contains(n) else {
                throw AgentError.badRequest(
                    "\(ProcessSignaller.name(of: n)) stops or resumes processes; use the pause kind, which resumes them at the end",
                    field: "spec.signal")
            }
            signal = n
        }
        let repeatEvery = try reader.duration("repeat", atLeast: .milliseconds(100))
        let lineage = targeting.processGuard.lineage(of: context.callerPID)
        var plan = Plan(
            signal: signal, signalName: ProcessSignaller.name(of: signal), pid: nil, name: nil,
            repeatSeconds: repeatEvery?.seconds, callerLineage: lineage.sorted { ($0.pid, $0.startTime) < ($1.pid, $1.startTime) },
            processes: [], skipped: [])
        if CgroupTargeting.keys.contains(try ProcessTargeting.selectorKey(reader)) {
            let (fs, cgroup) = try cgroups.resolve(reader)
            let (selected, skipped) = cgroupMembers(fs, cgroup, lineage: lineage)
            guard !selected.isEmpty else {
                throw AgentError.refused(
                    skipped.isEmpty
                        ? "\(cgroup) holds no process" : "every process in \(cgroup) is protected: "
                            + skipped.prefix(5).map { "\($0.pid) (\($0.comm)): \($0.reason)" }.joined(separator: "; "),
                    field: reader.has("cgroup") ? "spec.cgroup" : "spec.unit")
            }
            plan.mount = fs.mount
            plan.cgroup = cgroup
            plan.cgroupKill = signal == SIGKILL && skipped.isEmpty
            plan.processes = selected.map(ProcessRef.init)
            plan.skipped = skipped
        } else {
            let selector = try targeting.selector(from: reader)
            let (selected, skipped) = try targeting.resolve(selector, callerLineage: lineage)
            plan.processes = selected.map(ProcessRef.init)
            plan.skipped = skipped
            switch selector {
            case .pid(let p): plan.pid = p
            case .name(let n): plan.name = n.source
            }
        }
        return PreparedFault(target: try JSONValue.from(target(plan)), plan: try JSONValue.from(plan), claims: [])
    }

    /// Processes in a cgroup's subtree the agent may signal, and the protected ones it leaves alone.
    func cgroupMembers(_ fs: CgroupFS, _ cgroup: String, lineage: Set<ProcessIdentity>) -> ([HostProcess], [SkippedProcess]) {
        var selected: [HostProcess] = []
        var skipped: [SkippedProcess] = []
        for pid in (try? PauseDriver.subtreePIDs(fs, cgroup)) ?? [] {
            guard let p = targeting.procfs.process(pid) else { continue }
            if let reason = targeting.processGuard.protection(for: p, callerLineage: lineage) {
                skipped.append(SkippedProcess(pid: p.pid, comm: p.comm, reason: reason.description))
            } else {
                selected.append(p)
            }
        }
        return (selected, skipped)
    }

    public func apply(plan json: JSONValue) async throws -> PreparedFault? {
        var plan = try json.decode(Plan.self)
        if plan.cgroupKill == true, let mount = plan.mount, let cgroup = plan.cgroup {
            let fs = CgroupFS(mount: mount)
            do { try fs.write(cgroup, "cgroup.kill", "1") } catch {
                throw AgentError.failed("writing 1 to cgroup.kill of \(cgroup): \(error) (Linux 5.14+ has cgroup.kill)")
            }
            // Proof: the subtree empties.
            let start = ContinuousClock.now
            while !((try? PauseDriver.subtreePIDs(fs, cgroup)) ?? []).isEmpty {
                if ContinuousClock.now - start > .seconds(2) {
                    throw AgentError.failed("cgroup.kill was written but \(cgroup) still holds processes")
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            return nil
        }
        let delivered = try signalAll(plan.processes, signal: plan.signal, plan: plan)
        guard !delivered.isEmpty else { throw AgentError.refused("the selected processes exited before they could be signalled") }
        if plan.signal == SIGKILL {
            // Proof: SIGKILL cannot be caught, so each target must be gone (or a zombie) shortly.
            for ref in delivered {
                let dead = await targeting.waitFor(ref, timeout: .seconds(2)) { p in p == nil || p!.state == "Z" || p!.state == "X" }
                if !dead { throw AgentError.failed("SIGKILL was delivered to \(ref.pid) (\(ref.comm)) but it is still alive") }
            }
        }
        guard delivered.count != plan.processes.count else { return nil }
        let missed = plan.processes.filter { !delivered.contains($0) }
        plan.processes = delivered
        plan.skipped += missed.map { SkippedProcess(pid: $0.pid, comm: $0.comm, reason: "exited before it was signalled") }
        return PreparedFault(target: try JSONValue.from(target(plan)), plan: try JSONValue.from(plan), claims: [])
    }

    public func revert(plan: JSONValue) async throws {}

    public func sustain(plan json: JSONValue) async {
        guard let plan = try? json.decode(Plan.self), let every = plan.repeatSeconds else { return }
        if plan.name == nil && plan.cgroup == nil {
            await repeatOnSameProcesses(plan, every: every)
            return
        }
        let lineage = Set(plan.callerLineage)
        let selector = plan.name.flatMap { try? NamePattern($0) }.map(ProcessSelector.name)
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(every)) } catch { return }
            guard !Task.isCancelled else { return }
            var hit: [HostProcess] = []
            do {
                if let mount = plan.mount, let cgroup = plan.cgroup {
                    hit = try signalCgroupMembers(CgroupFS(mount: mount), cgroup, signal: plan.signal, lineage: lineage)
                } else if let selector {
                    // Each candidate is pinned by a pidfd before /proc is read and matched, then signalled through it.
                    var budget = MatchBudget()
                    hit = try signaller.signalMatching(
                        selector, signal: plan.signal, guard: targeting.processGuard, callerLineage: lineage, budget: &budget)
                }
            } catch {
                logger.warning("repeat kill", metadata: ["event": "kill-repeat-failed", "error": "\(error)"])
            }
            logRepeat(plan, hit.map(\.pid))
        }
    }

    private func logRepeat(_ plan: Plan, _ pids: [Int32]) {
        guard !pids.isEmpty else { return }
        logger.info(
            "repeat kill",
            metadata: [
                "event": "kill-repeat", "signal": "\(plan.signalName)",
                "pids": "\(pids.map(String.init).joined(separator: ","))",
            ])
    }

    /// `--pid X --repeat`: the same process identities, signalled every interval while they live, through pidfds held
    /// for the whole fault (the PID may be reused once they exit; the pidfds still name them).
    private func repeatOnSameProcesses(_ plan: Plan, every: Double) async {
        var handles: [ProcessHandle] = []
        for ref in plan.processes {
            if let (h, now) = try? signaller.pin(ref.pid, expecting: ref.identity), now.comm == ref.comm { handles.append(h) }
        }
        while !handles.isEmpty && !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(every)) } catch { return }
            guard !Task.isCancelled else { return }
            handles = handles.filter { h in ((try? h.send(plan.signal)) ?? .gone) == .delivered }
            logRepeat(plan, handles.map(\.identity.pid))
        }
    }

    /// The members of a cgroup's subtree, each pinned by a pidfd before it is checked (still in the cgroup, not
    /// protected) and signalled through that pidfd.
    private func signalCgroupMembers(_ fs: CgroupFS, _ cgroup: String, signal: Int32, lineage: Set<ProcessIdentity>)
        throws -> [HostProcess]
    {
        var hit: [HostProcess] = []
        for pid in (try? PauseDriver.subtreePIDs(fs, cgroup)) ?? [] {
            guard let (handle, p) = try signaller.pin(pid), p.state != "Z",
                let now = CgroupFS.cgroup(ofPID: pid), cgroup == "/" || now == cgroup || now.hasPrefix(cgroup + "/"),
                targeting.processGuard.protection(for: p, callerLineage: lineage) == nil
            else { continue }
            if try handle.send(signal) == .delivered { hit.append(p) }
        }
        return hit
    }

    /// Signals the plan's processes, each only if it is still the recorded one: same start time, and (read while
    /// its pidfd is held) still matching the name pattern, or still bearing the recorded name for the other selectors.
    private func signalAll(_ refs: [ProcessRef], signal: Int32, plan: Plan) throws -> [ProcessRef] {
        let pattern = plan.name.flatMap { try? NamePattern($0) }
        var budget = MatchBudget()
        var delivered: [ProcessRef] = []
        for ref in refs {
            let outcome = try signaller.send(signal, to: ref.identity) { now in
                if let pattern { return try pattern.matches(now, budget: &budget) }
                return now.comm == ref.comm
            }
            if outcome == .delivered { delivered.append(ref) }
        }
        return delivered
    }

    private func target(_ plan: Plan) -> Target {
        Target(
            signal: plan.signalName, repeat: plan.repeatSeconds.map { Units.formatDuration(.seconds($0)) },
            processes: plan.processes, skipped: plan.skipped)
    }
}
