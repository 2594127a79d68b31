import Foundation
import Synchronization

/// Wall-clock time and sleeping, injectable so the lease engine can be tested without waiting.
/// Deadlines are wall-clock `Date`s because they must survive a restart of the agent (the journal holds them).
public protocol AgentClock: Sendable {
    func now() -> Date
    /// Sleeps until `deadline`; throws `CancellationError` when the task is cancelled.
    func sleep(until deadline: Date) async throws
}

/// The real clock: `Date()` and a monotonic sleep for the remaining interval.
public struct SystemClock: AgentClock {
    public init() {}
    public func now() -> Date { Date() }
    public func sleep(until deadline: Date) async throws {
        let remaining = deadline.timeIntervalSinceNow
        guard remaining > 0 else { return }
        try await Task.sleep(for: .nanoseconds(Int64(remaining * 1e9)), tolerance: .zero, clock: .continuous)
    }
}

/// A clock that moves only when told to; sleepers wake when `advance` passes their deadline.
public final class ManualClock: AgentClock {
    private struct Sleeper {
        let deadline: Date
        let continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var now: Date
        var sleepers: [UInt64: Sleeper] = [:]
        var nextID: UInt64 = 0
    }
    private let state: Mutex<State>

    public init(start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        state = Mutex(State(now: start))
    }

    public func now() -> Date { state.withLock { $0.now } }

    /// Number of tasks currently sleeping on this clock.
    public var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    /// The earliest deadline anyone sleeps until.
    public var earliestSleeper: Date? { state.withLock { $0.sleepers.values.map(\.deadline).min() } }

    public func advance(by interval: TimeInterval) { advance(to: now().addingTimeInterval(interval)) }

    public func advance(to date: Date) {
        let due = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
            s.now = date
            let ids = s.sleepers.filter { $0.value.deadline <= date }.map(\.key)
            return ids.compactMap { s.sleepers.removeValue(forKey: $0)?.continuation }
        }
        due.forEach { $0.resume() }
    }

    public func sleep(until deadline: Date) async throws {
        let id = state.withLock { s -> UInt64 in
            s.nextID += 1
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.now >= deadline || Task.isCancelled { return true }
                    s.sleepers[id] = Sleeper(deadline: deadline, continuation: c)
                    return false
                }
                if resumeNow { c.resume() }
            }
            try Task.checkCancellation()
        } onCancel: {
            let c = state.withLock { $0.sleepers.removeValue(forKey: id)?.continuation }
            c?.resume(throwing: CancellationError())
        }
    }
}
