import AgentAPI
import Foundation
import Synchronization
import Testing

@testable import AgentCore

/// A driver whose `prepare` blocks until the test lets it go: a client-controlled slow request (a pathological
/// `--name` pattern, a slow file system under a path) in its purest form. It records where `revert` ran.
final class BlockingPrepareDriver: FaultDriver, Sendable {
    let kind = "slow"
    let released = Mutex(false)
    let entered = Mutex(false)

    func availability() -> KindAvailability { KindAvailability(kind: kind, available: true) }

    func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        entered.withLock { $0 = true }
        // Held until released, or 20 s at most so a broken engine fails the test instead of hanging it.
        let start = ContinuousClock.now
        while !released.withLock({ $0 }) && ContinuousClock.now - start < .seconds(20) { usleep(1000) }
        return PreparedFault(target: .object([:]), plan: .object([:]), claims: [])
    }
    func apply(plan: JSONValue) async throws -> PreparedFault? { nil }
    func revert(plan: JSONValue) async throws {}
}

/// Records whether each revert ran on the engine's own thread.
final class ThreadCheckingDriver: FaultDriver, Sendable {
    let kind = "fake"
    let engine = Mutex<LeaseEngine?>(nil)
    let revertedOnEngineThread = Mutex<[Bool]>([])

    func availability() -> KindAvailability { KindAvailability(kind: kind, available: true) }
    func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        let name = spec["target"]?.stringValue ?? "x"
        return PreparedFault(target: .object([:]), plan: .object(["name": .string(name)]), claims: ["thing:\(name)"])
    }
    func apply(plan: JSONValue) async throws -> PreparedFault? { nil }
    func revert(plan: JSONValue) async throws {
        let on = engine.withLock { $0?.runsOnEngineThread ?? false }
        revertedOnEngineThread.withLock { $0.append(on) }
    }
}

@Suite("Lease engine isolation: reverts never wait for a client", .timeLimit(.minutes(1)))
struct EngineIsolationTests {
    let dir = tempDir()
    let clock = ManualClock()

    @Test func aRequestStuckInPrepareDelaysNoRevert() async throws {
        let slow = BlockingPrepareDriver()
        let fast = ThreadCheckingDriver()
        let e = LeaseEngine(
            drivers: [slow, fast], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: clock)
        fast.engine.withLock { $0 = e }
        _ = await e.recover()
        let victim = try await e.create(request("a", ttl: "10s"), context: ctx)

        // A client whose request is stuck resolving its spec...
        let stuck = Task { try await e.create(FaultRequest(kind: "slow", ttl: "10s", spec: .object([:])), context: ctx) }
        while !slow.entered.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(1)) }

        // ...while a deadline passes: the revert happens now, with the other request still stuck.
        clock.advance(by: 11)
        await e.fireDue()
        await e.settle()
        let reverted = try await e.get(victim.id)
        let stillStuck = !slow.released.withLock { $0 }
        #expect(reverted.state == .reverted)
        #expect(stillStuck, "the revert had to wait until the stuck prepare gave up")
        // Other requests are answered meanwhile too.
        #expect(await e.ping() == 0)
        #expect(try await e.get(victim.id).id == victim.id)

        slow.released.withLock { $0 = true }
        let created = try await stuck.value
        #expect(created.state == .active)
    }

    @Test func revertsRunOnTheEnginesOwnThread() async throws {
        let fast = ThreadCheckingDriver()
        let e = LeaseEngine(drivers: [fast], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: clock)
        fast.engine.withLock { $0 = e }
        _ = await e.recover()
        let a = try await e.create(request("a", ttl: "5s"), context: ctx)
        _ = try await e.create(request("b", ttl: "5s"), context: ctx)
        _ = try await e.revert(a.id, by: "test")
        clock.advance(by: 6)
        await e.fireDue()
        await e.settle()
        #expect(fast.revertedOnEngineThread.withLock { $0 } == [true, true])
        #expect(!e.runsOnEngineThread)
    }

    @Test func aFailedRevertIsRetriedWithinASecond() async throws {
        let driver = RecordingDriver()
        let e = LeaseEngine(drivers: [driver], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: clock)
        _ = await e.recover()
        let f = try await e.create(request("a", ttl: "5s"), context: ctx)
        driver.state.withLock { $0.failRevertTimes = 20 }
        clock.advance(by: 6)
        await e.fireDue()
        await e.settle()
        // Twenty transient failures (EMFILE while a flood lasts, say): every retry is at most 1 s after the last.
        for _ in 0..<20 {
            let next = try #require(await e.armedDeadline)
            #expect(next.timeIntervalSince(clock.now()) <= 1.0)
            clock.advance(to: next)
            await e.fireDue()
            await e.settle()
        }
        #expect(try await e.get(f.id).state == .reverted)
    }
}

@Suite("Lease time ignores wall-clock steps")
struct LeaseTimeTests {
    @Test func systemClockFollowsBootTimeNotTheWallClock() {
        // Lease time is the start-up wall clock plus CLOCK_BOOTTIME elapsed: two readings differ by exactly the
        // boot-time difference, whatever `Date()` does in between (a step is simulated in the VM case 15-clock-step).
        let c = SystemClock()
        let b0 = BootClock.seconds()
        let t0 = c.now()
        usleep(20_000)
        let t1 = c.now()
        let b1 = BootClock.seconds()
        let lease = t1.timeIntervalSince(t0)
        #expect(lease > 0.019 && lease <= b1 - b0 + 0.000_01)
    }
}
