import Foundation

/// How a fault names its target processes.
public enum ProcessSelector: Sendable, CustomStringConvertible {
    case pid(Int32)
    /// A pattern searched in the process name (comm) and in its whole command line (see `NamePattern`).
    case name(NamePattern)

    public var description: String {
        switch self {
        case .pid(let p): return "pid \(p)"
        case .name(let r): return "name /\(r)/"
        }
    }
}

/// Why a process may not be a target.
public enum ProtectionReason: Sendable, Equatable, CustomStringConvertible {
    case init1
    case agent
    case caller
    case kernelThread
    case protectedName(String)

    public var description: String {
        switch self {
        case .init1: return "PID 1 (init) is never a target"
        case .agent: return "it is the agent itself or one of its ancestors"
        case .caller: return "it is the caller or one of its ancestors"
        case .kernelThread: return "it is a kernel thread"
        case .protectedName(let n): return "'\(n)' is on the protected-processes list"
        }
    }
}

/// The processes no fault may touch: PID 1, the agent and its ancestors, the caller and its ancestors, kernel
/// threads, and names on the configured protected list.
public struct ProcessGuard: Sendable {
    public var procfs: ProcFS
    public var protectedNames: [String]
    public var agentPID: Int32
    /// The agent and its ancestors as (pid, start time): a process that later reuses one of their pids is not them.
    private let agentLineage: Set<ProcessIdentity>

    public init(procfs: ProcFS = ProcFS(), protectedNames: [String], agentPID: Int32 = getpid()) {
        self.procfs = procfs
        self.protectedNames = protectedNames
        self.agentPID = agentPID
        self.agentLineage = Set(procfs.lineage(of: agentPID))
    }

    /// The lineage of a caller (its process and its ancestors, each as (pid, start time)), to exclude it from
    /// selection. Identities, not bare pids: a new process that gets a caller's old pid is not spared.
    public func lineage(of pid: Int32?) -> Set<ProcessIdentity> {
        guard let pid, pid > 0 else { return [] }
        return Set(procfs.lineage(of: pid))
    }

    /// Why `process` may not be targeted, or nil when it may. A lineage entry with start time 0 (journaled by an
    /// older agent as a bare pid) matches the pid alone.
    public func protection(for process: HostProcess, callerLineage: Set<ProcessIdentity>) -> ProtectionReason? {
        if process.pid == 1 { return .init1 }
        if agentLineage.contains(process.identity) || process.pid == agentPID { return .agent }
        if process.isKernelThread { return .kernelThread }
        if callerLineage.contains(process.identity) || callerLineage.contains(ProcessIdentity(pid: process.pid, startTime: 0)) {
            return .caller
        }
        if let n = protectedNames.first(where: { $0 == process.comm || $0 == executableName(process) }) {
            return .protectedName(n)
        }
        return nil
    }

    private func executableName(_ p: HostProcess) -> String? {
        guard let first = p.cmdline.first else { return nil }
        return first.split(separator: "/").last.map(String.init)
    }
}

/// The outcome of resolving a selector against the live process table.
public struct SelectionResult: Sendable {
    /// Processes the fault may act on.
    public var selected: [HostProcess]
    /// Processes that matched but are protected, with the reason.
    public var refused: [(HostProcess, ProtectionReason)]
}

extension NamePattern {
    /// Whether the pattern matches the process's name (comm) or its command line (both cut at `maxTextBytes`).
    public func matches(_ p: HostProcess, budget: inout MatchBudget) throws(MatchBudget.Exhausted) -> Bool {
        if try matches(p.comm, budget: &budget) { return true }
        guard !p.cmdline.isEmpty else { return false }
        return try matches(p.commandLine(maxBytes: Self.maxTextBytes), budget: &budget)
    }
}

extension ProcessSelector {
    /// Whether `p` is what this selector names. Zombies never match: they have nothing left to pause or kill.
    public func matches(_ p: HostProcess, budget: inout MatchBudget) throws(MatchBudget.Exhausted) -> Bool {
        guard p.state != "Z" else { return false }
        switch self {
        case .pid(let pid): return p.pid == pid
        case .name(let pattern): return try pattern.matches(p, budget: &budget)
        }
    }
}

extension ProcFS {
    /// Resolves `selector` against the live process table, splitting matches into allowed and protected. Matching
    /// stops with `MatchBudget.Exhausted` when it costs more than `budget` allows.
    public func select(
        _ selector: ProcessSelector, guard g: ProcessGuard, callerLineage: Set<ProcessIdentity>,
        budget: inout MatchBudget
    ) throws(MatchBudget.Exhausted) -> SelectionResult {
        let candidates: [HostProcess]
        switch selector {
        case .pid(let pid): candidates = process(pid).map { [$0] } ?? []
        case .name: candidates = all()
        }
        var result = SelectionResult(selected: [], refused: [])
        for p in candidates where try selector.matches(p, budget: &budget) {
            if let reason = g.protection(for: p, callerLineage: callerLineage) {
                result.refused.append((p, reason))
            } else {
                result.selected.append(p)
            }
        }
        return result
    }

    /// `select` with a fresh per-request budget.
    public func select(_ selector: ProcessSelector, guard g: ProcessGuard, callerLineage: Set<ProcessIdentity>)
        throws(MatchBudget.Exhausted) -> SelectionResult
    {
        var budget = MatchBudget()
        return try select(selector, guard: g, callerLineage: callerLineage, budget: &budget)
    }
}

extension ProcessSignaller {
    /// Signals every process `selector` names that the guard allows, each pinned by a pidfd opened BEFORE its /proc
    /// entry is read and matched, and signalled through that pidfd: a process that exits after it was read cannot
    /// hand its PID (and the signal) to a newcomer. Returns the processes signalled.
    public func signalMatching(
        _ selector: ProcessSelector, signal: Int32, guard g: ProcessGuard, callerLineage: Set<ProcessIdentity>,
        budget: inout MatchBudget
    ) throws -> [HostProcess] {
        let pids: [Int32]
        switch selector {
        case .pid(let pid): pids = [pid]
        case .name: pids = procfs.pids()
        }
        var hit: [HostProcess] = []
        for pid in pids {
            guard let (handle, p) = try pin(pid) else { continue }
            guard try selector.matches(p, budget: &budget), g.protection(for: p, callerLineage: callerLineage) == nil
            else { continue }
            if try handle.send(signal) == .delivered { hit.append(p) }
        }
        return hit
    }
}
