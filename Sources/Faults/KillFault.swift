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
        var callerLineage: [Int32]
        var processes: [ProcessRef]
        var skipped: [SkippedProcess]
    }

    struct Target: Codable, Sendable, Equatable {
        var signal: String
        var `repeat`: String?
        var processes: [ProcessRef]
        var skipped: [SkippedProcess]
    }

    public init(procfs: ProcFS = ProcFS(), processGuard: ProcessGuard, host: HostFacts, logger: Logger) {
        targeting = ProcessTargeting(procfs: procfs, processGuard: processGuard)
        cgroups = CgroupTargeting(mount: host.cgroup2Mount)
        signaller = ProcessSignaller(procfs: procfs)
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
            repeatSeconds: repeatEvery?.seconds, callerLineage: lineage.sorted(), processes: [], skipped: [])
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
            case .name(let n): plan.name = n
            }
        }
        return PreparedFault(target: try JSONValue.from(target(plan)), plan: try JSONValue.from(plan), claims: [])
    }

    /// Processes in a cgroup's subtree the agent may signal, and the protected ones it leaves alone.
    func cgroupMembers(_ fs: CgroupFS, _ cgroup: String, lineage: Set<Int32>) -> ([HostProcess], [SkippedProcess]) {
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
        let delivered = try signalAll(plan.processes, signal: plan.signal)
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
        guard let plan = try? json.decode(Plan.self), let every = plan.repeatSeconds, plan.name != nil || plan.cgroup != nil
        else { return }
        let lineage = Set(plan.callerLineage)
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(every)) } catch { return }
            let refs: [ProcessRef]
            if let mount = plan.mount, let cgroup = plan.cgroup {
                refs = cgroupMembers(CgroupFS(mount: mount), cgroup, lineage: lineage).0.map(ProcessRef.init)
            } else {
                guard let found = try? targeting.procfs.select(.name(plan.name!), guard: targeting.processGuard, callerLineage: lineage)
                else { continue }
                refs = found.selected.map(ProcessRef.init)
            }
            guard !refs.isEmpty, !Task.isCancelled else { continue }
            let hit = (try? signalAll(refs, signal: plan.signal)) ?? []
            if !hit.isEmpty {
                logger.info(
                    "repeat kill",
                    metadata: [
                        "event": "kill-repeat", "signal": "\(plan.signalName)",
                        "pids": "\(hit.map { String($0.pid) }.joined(separator: ","))",
                    ])
            }
        }
    }

    private func signalAll(_ refs: [ProcessRef], signal: Int32) throws -> [ProcessRef] {
        var delivered: [ProcessRef] = []
        for ref in refs where try signaller.send(signal, to: ref.identity) == .delivered { delivered.append(ref) }
        return delivered
    }

    private func target(_ plan: Plan) -> Target {
        Target(
            signal: plan.signalName, repeat: plan.repeatSeconds.map { Units.formatDuration(.seconds($0)) },
            processes: plan.processes, skipped: plan.skipped)
    }
}
