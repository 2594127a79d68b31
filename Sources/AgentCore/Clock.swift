import Foundation
import Synchronization

/// Lease time and sleeping, injectable so the lease engine can be tested without waiting.
/// Deadlines are `Date`s because the journal holds them across a restart, where everything is reverted anyway.
public protocol AgentClock: Sendable {
    func now() -> Date
    /// Sleeps until `deadline`; throws `CancellationError` when the task is cancelled.
    func sleep(until deadline: Date) async throws
}

/// CLOCK_BOOTTIME: monotonic, counts suspend, never stepped by `date -s`, NTP or a clock fault. Both the agent and
/// its helpers (the hang watchdog, stress workers) measure deadlines on it: one boot, one time line.
public enum BootClock {
    public static func seconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// The real clock. A lease's length must not change when the wall clock is stepped (NTP, `date -s`, a clock fault),
/// so lease time is the wall clock read once, when the agent started, plus CLOCK_BOOTTIME elapsed since: it moves
/// exactly as real time does and ignores steps. Timestamps shown (createdAt, expiresAt) are in that time line; after a
/// step they differ from `date` by the step, and every lease still lasts exactly its TTL.
public struct SystemClock: AgentClock {
    private static let anchor: (wall: Date, boot: Double) = (Date(), BootClock.seconds())
    public init() {}
    public func now() -> Date { Self.anchor.wall.addingTimeInterval(BootClock.seconds() - Self.anchor.boot) }
    public func sleep(until deadline: Date) async throws {
        let remaining = deadline.timeIntervalSince(now())
        guard remaining > 0 else { return }
        // On the engine's thread, the thread itself wakes the sleeper (see `EngineThread`).
        if let engine = EngineThread.current {
            try await engine.sleep(for: .nanoseconds(Int64(remaining * 1e9)))
            return
        }
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
