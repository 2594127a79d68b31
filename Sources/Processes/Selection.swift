import Foundation

/// How a fault names its target processes.
public enum ProcessSelector: Sendable, CustomStringConvertible {
    case pid(Int32)
    /// A regular expression searched in the process name (comm) and in its whole command line.
    case name(String)

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
    private let agentLineage: Set<Int32>

    public init(procfs: ProcFS = ProcFS(), protectedNames: [String], agentPID: Int32 = getpid()) {
        self.procfs = procfs
        self.protectedNames = protectedNames
        self.agentPID = agentPID
        self.agentLineage = Set([agentPID] + procfs.ancestors(of: agentPID))
    }

    /// The lineage (pid and its ancestors) of a caller, to exclude it from selection.
    public func lineage(of pid: Int32?) -> Set<Int32> {
        guard let pid, pid > 0 else { return [] }
        return Set([pid] + procfs.ancestors(of: pid))
    }

    /// Why `process` may not be targeted, or nil when it may.
    public func protection(for process: HostProcess, callerLineage: Set<Int32>) -> ProtectionReason? {
        if process.pid == 1 { return .init1 }
        if agentLineage.contains(process.pid) { return .agent }
        if process.isKernelThread { return .kernelThread }
        if callerLineage.contains(process.pid) { return .caller }
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

extension ProcFS {
    /// Resolves `selector` against the live process table, splitting matches into allowed and protected.
    /// `.name` throws `RegexError` when the pattern does not compile.
    public func select(_ selector: ProcessSelector, guard g: ProcessGuard, callerLineage: Set<Int32>) throws
        -> SelectionResult
    {
        let matches: [HostProcess]
        switch selector {
        case .pid(let pid):
            matches = process(pid).map { [$0] } ?? []
        case .name(let pattern):
            let regex = try Regex(pattern)
            matches = all().filter { p in
                // Zombies have nothing left to pause or kill.
                p.state != "Z"
                    && ((try? regex.firstMatch(in: p.comm)) != nil
                        || (!p.cmdline.isEmpty && (try? regex.firstMatch(in: p.commandLine)) != nil))
            }
        }
        var result = SelectionResult(selected: [], refused: [])
        for p in matches {
            if let reason = g.protection(for: p, callerLineage: callerLineage) {
                result.refused.append((p, reason))
            } else {
                result.selected.append(p)
            }
        }
        return result
    }
}
