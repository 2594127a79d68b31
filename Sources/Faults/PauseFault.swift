import AgentAPI
import AgentCore
import Foundation
import Logging
import Processes

/// `pause`: SIGSTOP the selected processes; SIGCONT exactly those at revert. A process that was already stopped is
/// left as it was (listed under `skipped`). Every signal goes through a pidfd after a start-time check.
public struct PauseDriver: FaultDriver {
    public let kind = "pause"
    let targeting: ProcessTargeting
    let signaller: ProcessSignaller
    let host: HostFacts

    struct Plan: Codable, Sendable, Equatable {
        var processes: [ProcessRef]
        var skipped: [SkippedProcess]
    }

    public init(procfs: ProcFS = ProcFS(), processGuard: ProcessGuard, host: HostFacts) {
        targeting = ProcessTargeting(procfs: procfs, processGuard: processGuard)
        signaller = ProcessSignaller(procfs: procfs)
        self.host = host
    }

    public func availability() -> KindAvailability { ProcessFaultSupport.availability(kind: kind, host: host) }

    public func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        let reader = try SpecReader(spec, kind: kind, allowed: ProcessTargeting.selectorKeys)
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
        let plan = Plan(processes: refs, skipped: skipped)
        let json = try JSONValue.from(plan)
        return PreparedFault(
            target: json, plan: json, claims: refs.map { Self.claim($0.pid, $0.startTime) })
    }

    public func apply(plan json: JSONValue) async throws -> PreparedFault? {
        var plan = try json.decode(Plan.self)
        var stopped: [ProcessRef] = []
        var gone: [ProcessRef] = []
        for ref in plan.processes {
            switch try signaller.send(SIGSTOP, to: ref.identity) {
            case .delivered: stopped.append(ref)
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
        var problems: [String] = []
        for ref in plan.processes {
            do {
                guard try signaller.send(SIGCONT, to: ref.identity) == .delivered else { continue }
                let resumed = await targeting.waitFor(ref, timeout: .milliseconds(500)) { p in p == nil || p!.state != "T" }
                if !resumed { problems.append("\(ref.pid) (\(ref.comm)) is still stopped after SIGCONT") }
            } catch {
                problems.append("\(ref.pid) (\(ref.comm)): \(error)")
            }
        }
        if !problems.isEmpty { throw AgentError.failed(problems.joined(separator: "; ")) }
    }
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
