import AgentAPI
import AgentCore
import Foundation
import Processes

/// A process as a plan records it: enough to find exactly it again (pid + start time) and to show it.
struct ProcessRef: Codable, Sendable, Equatable {
    var pid: Int32
    var startTime: UInt64
    var comm: String

    init(_ p: HostProcess) {
        pid = p.pid
        startTime = p.startTime
        comm = p.comm
    }

    var identity: ProcessIdentity { ProcessIdentity(pid: pid, startTime: startTime) }
}

/// A matched process that the fault leaves alone, and why.
struct SkippedProcess: Codable, Sendable, Equatable {
    var pid: Int32
    var comm: String
    var reason: String
}

/// Resolves the process selectors shared by `pause` and `kill` (`pid`, `name`) and applies the protection rules.
struct ProcessTargeting: Sendable {
    let procfs: ProcFS
    let processGuard: ProcessGuard
    /// Matching steps one request may spend on a name pattern (see `MatchBudget`).
    var matchBudget = MatchBudget.perRequest

    static let selectorKeys: Set<String> = ["pid", "name", "cgroup", "unit"]

    /// The one selector key the spec uses (pid, name, cgroup or unit).
    static func selectorKey(_ spec: SpecReader) throws -> String {
        let given = selectorKeys.filter { spec.has($0) }.sorted()
        guard given.count == 1 else {
            throw AgentError.badRequest(
                given.isEmpty
                    ? "say which processes: give pid, name, cgroup or unit"
                    : "give exactly one selector, not \(given.joined(separator: " and "))",
                field: given.isEmpty ? "spec" : "spec.\(given[1])")
        }
        return given[0]
    }

    /// The pid or name selector from the spec (cgroup and unit are resolved by `CgroupTargeting`).
    func selector(from spec: SpecReader) throws -> ProcessSelector {
        switch try Self.selectorKey(spec) {
        case "pid":
            let pid = try spec.integer("pid", range: 1...Int64(Int32.max))!
            return .pid(Int32(pid))
        case "name":
            let pattern = try spec.string("name")!
            return .name(try Self.pattern(pattern))
        case let other:
            throw AgentError.badRequest("\(other) selects a cgroup, not processes", field: "spec.\(other)")
        }
    }

    /// Compiles a `name` pattern; 400 naming `spec.name` and what is wrong or unsupported.
    static func pattern(_ text: String) throws -> NamePattern {
        guard !text.isEmpty else { throw AgentError.badRequest("name must not be empty", field: "spec.name") }
        do { return try NamePattern(text) } catch {
            throw AgentError.badRequest(
                "name: the pattern \(error.message) (supported: literals, ., [classes], \\d \\w \\s, ^ $, ( ), |, * + ? {m,n})",
                field: "spec.name")
        }
    }

    /// 422 for a name pattern that costs more than a request may spend matching.
    static func tooCostly(_ selector: ProcessSelector, _ e: MatchBudget.Exhausted) -> AgentError {
        AgentError.refused(
            "matching \(selector) against this host's processes took more than \(e.limit) steps; use a simpler or more specific pattern",
            field: "spec.name")
    }

    /// The processes the fault may act on now. Throws 422 when nothing is left after the protection rules, naming
    /// why each match was refused.
    func resolve(_ selector: ProcessSelector, callerLineage: Set<ProcessIdentity>) throws -> (
        selected: [HostProcess], skipped: [SkippedProcess]
    ) {
        let result: SelectionResult
        do {
            var budget = MatchBudget(limit: matchBudget)
            result = try procfs.select(selector, guard: processGuard, callerLineage: callerLineage, budget: &budget)
        } catch {
            throw Self.tooCostly(selector, error)
        }
        let skipped = result.refused.map { SkippedProcess(pid: $0.0.pid, comm: $0.0.comm, reason: $0.1.description) }
        guard !result.selected.isEmpty else {
            if case .pid(let pid) = selector {
                if let (_, reason) = result.refused.first {
                    throw AgentError.refused("pid \(pid) may not be targeted: \(reason)", field: "spec.pid")
                }
                throw AgentError.refused("no process with pid \(pid)", field: "spec.pid")
            }
            let detail =
                skipped.isEmpty
                ? "" : "; matched but protected: " + skipped.prefix(5).map { "\($0.pid) (\($0.comm)): \($0.reason)" }.joined(separator: "; ")
            throw AgentError.refused("no process matches \(selector) that may be targeted\(detail)", field: "spec.name")
        }
        return (result.selected, skipped)
    }

    /// Waits (briefly) until `check` holds for the process, reading /proc: the kernel's word, not ours.
    func waitFor(_ ref: ProcessRef, timeout: Duration = .seconds(1), _ check: (HostProcess?) -> Bool) async -> Bool {
        let start = ContinuousClock.now
        var pause = Duration.milliseconds(1)
        var spins = 0
        while true {
            let p = procfs.process(ref.pid).flatMap { $0.startTime == ref.startTime ? $0 : nil }
            if check(p) { return true }
            if ContinuousClock.now - start > timeout { return false }
            // The target usually acts on the signal within microseconds once it runs: give it the CPU a few times
            // before falling back to sleeps (a sleep costs at least a timer tick).
            if spins < 64 {
                spins += 1
                sched_yield()
                continue
            }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(20))
        }
    }
}
