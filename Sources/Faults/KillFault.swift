import AgentAPI
import AgentCore
import Foundation
import Logging
import Processes

/// `kill`: send a signal (default SIGKILL) to the selected processes; with `repeat`, keep signalling whatever matches
/// the selector at that interval until the fault ends. Nothing to undo at revert except stopping the repeat.
public struct KillDriver: FaultDriver {
    public let kind = "kill"
    let targeting: ProcessTargeting
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
        signaller = ProcessSignaller(procfs: procfs)
        self.host = host
        self.logger = logger
    }

    public func availability() -> KindAvailability { ProcessFaultSupport.availability(kind: kind, host: host) }

    public func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        let reader = try SpecReader(spec, kind: kind, allowed: ProcessTargeting.selectorKeys.union(["signal", "repeat"]))
        let selector = try targeting.selector(from: reader)
        var signal = SIGKILL
        if let v = reader.object["signal"], v != .null {
            let text: String
            switch v {
            case .string(let s): text = s
            case .number(let n): text = String(Int(n))
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
        let (selected, skipped) = try targeting.resolve(selector, callerLineage: lineage)
        var plan = Plan(
            signal: signal, signalName: ProcessSignaller.name(of: signal), pid: nil, name: nil,
            repeatSeconds: repeatEvery?.seconds, callerLineage: lineage.sorted(), processes: selected.map(ProcessRef.init),
            skipped: skipped)
        switch selector {
        case .pid(let p): plan.pid = p
        case .name(let n): plan.name = n
        }
        return PreparedFault(target: try JSONValue.from(target(plan)), plan: try JSONValue.from(plan), claims: [])
    }

    public func apply(plan json: JSONValue) async throws -> PreparedFault? {
        var plan = try json.decode(Plan.self)
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
        guard let plan = try? json.decode(Plan.self), let every = plan.repeatSeconds, let name = plan.name else { return }
        let lineage = Set(plan.callerLineage)
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(every)) } catch { return }
            guard let found = try? targeting.procfs.select(.name(name), guard: targeting.processGuard, callerLineage: lineage)
            else { continue }
            let refs = found.selected.map(ProcessRef.init)
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
