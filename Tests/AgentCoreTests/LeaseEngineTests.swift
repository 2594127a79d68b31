import AgentAPI
import Foundation
import Synchronization
import Testing

@testable import AgentCore

/// A driver that records what the engine asks of it and fails on demand: a test double for the engine's logic only.
final class RecordingDriver: FaultDriver, Sendable {
    let kind: String
    struct State {
        var applied: [String] = []
        var reverted: [String] = []
        var failApply = false
        var failRevertTimes = 0
        var available = true
    }
    let state = Mutex(State())

    init(kind: String = "fake") { self.kind = kind }

    func availability() -> KindAvailability {
        state.withLock { $0.available } ? KindAvailability(kind: kind, available: true)
            : KindAvailability(kind: kind, available: false, reason: "no such thing here")
    }

    func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        guard let name = spec["target"]?.stringValue else { throw AgentError.badRequest("target is required", field: "spec.target") }
        return PreparedFault(target: .object(["name": .string(name)]), plan: .object(["name": .string(name)]), claims: ["thing:\(name)"])
    }

    func apply(plan: JSONValue) async throws -> PreparedFault? {
        let name = plan["name"]!.stringValue!
        try state.withLock { s in
            if s.failApply { throw AgentError.failed("kernel said no") }
            s.applied.append(name)
        }
        return nil
    }

    func revert(plan: JSONValue) async throws {
        let name = plan["name"]!.stringValue!
        try state.withLock { s in
            if s.failRevertTimes > 0 {
                s.failRevertTimes -= 1
                throw AgentError.failed("device busy")
            }
            s.reverted.append(name)
        }
    }

    var applied: [String] { state.withLock { $0.applied } }
    var reverted: [String] { state.withLock { $0.reverted } }
}

func tempDir() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chaos-agent-test-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func request(_ target: String, ttl: String = "30s", kind: String = "fake") -> FaultRequest {
    FaultRequest(kind: kind, ttl: ttl, spec: .object(["target": .string(target)]))
}

let ctx = FaultContext(owner: "unix:test")

@Suite("Lease engine")
struct LeaseEngineTests {
    let dir = tempDir()
    let clock = ManualClock()
    let driver = RecordingDriver()

    func engine(maxTTL: Duration = .seconds(3600)) throws -> LeaseEngine {
        LeaseEngine(drivers: [driver], journal: try Journal(directory: dir), policy: LeasePolicy(maxTTL: maxTTL), clock: clock)
    }

    @Test func appliesThenRevertsAtDeadline() async throws {
        let e = try engine()
        _ = await e.recover()
        let f = try await e.create(request("a", ttl: "30s"), context: ctx)
        #expect(f.state == .active)
        #expect(driver.applied == ["a"])
        #expect(f.expiresAt == clock.now().addingTimeInterval(30))
        clock.advance(by: 29.9)
        await e.fireDue()
        #expect(try await e.get(f.id).state == .active)
        clock.advance(by: 0.1)
        await e.fireDue()
        await e.settle()
        let after = try await e.get(f.id)
        #expect(after.state == .reverted)
        #expect(after.revertedAt == clock.now())
        #expect(driver.reverted == ["a"])
    }

    @Test func oneTimerArmedForTheEarliestDeadline() async throws {
        let e = try engine()
        _ = await e.recover()
        var earliest: Date?
        for (i, ttl) in ["50s", "10s", "40s", "20s", "30s"].enumerated() {
            let f = try await e.create(request("t\(i)", ttl: ttl), context: ctx)
            if ttl == "10s" { earliest = f.expiresAt }
        }
        #expect(await e.armedDeadline == earliest)
        // Let the armed task reach its sleep, then check it is the only sleeper on the clock.
        for _ in 0..<100 where clock.sleeperCount == 0 { await Task.yield() }
        #expect(clock.sleeperCount == 1)
        #expect(clock.earliestSleeper == earliest)
        // Waking the scheduler through the clock alone reverts exactly the due lease and re-arms for the next.
        clock.advance(by: 10)
        for _ in 0..<1000 where driver.reverted.isEmpty { await Task.yield() }
        await e.settle()
        #expect(driver.reverted == ["t1"])
        #expect(await e.armedDeadline == clock.now().addingTimeInterval(10))
    }

    @Test func noTimerWhenIdle() async throws {
        let e = try engine()
        _ = await e.recover()
        #expect(await e.armedDeadline == nil)
        let f = try await e.create(request("a", ttl: "1s"), context: ctx)
        _ = try await e.revert(f.id, by: "unix:test")
        #expect(await e.armedDeadline == nil)
    }

    @Test func renewMovesTheDeadline() async throws {
        let e = try engine()
        _ = await e.recover()
        let f = try await e.create(request("a", ttl: "10s"), context: ctx)
        clock.advance(by: 8)
        let renewed = try await e.renew(f.id, ttl: "10s", owner: "unix:test")
        #expect(renewed.expiresAt == clock.now().addingTimeInterval(10))
        #expect(renewed.ttl == "10s")
        clock.advance(by: 5)  // past the old deadline
        await e.fireDue()
        #expect(try await e.get(f.id).state == .active)
        clock.advance(by: 5)
        await e.fireDue()
        await e.settle()
        #expect(try await e.get(f.id).state == .reverted)
        await #expect(throws: AgentError.self) { try await e.renew(f.id, ttl: "10s", owner: "unix:test") }
    }

    @Test func failedRevertIsRetriedWithBackoffAndStaysListed() async throws {
        let e = try engine()
        _ = await e.recover()
        driver.state.withLock { $0.failRevertTimes = 3 }
        let f = try await e.create(request("a", ttl: "1s"), context: ctx)
        clock.advance(by: 1)
        await e.fireDue()
        await e.settle()
        var now = try await e.get(f.id)
        #expect(now.state == .reverting)
        #expect(now.revertAttempts == 1)
        #expect(now.error?.contains("device busy") == true)
        // Backoff: 50 ms, then 100 ms, then 200 ms (capped at 1 s).
        #expect(await e.armedDeadline == clock.now().addingTimeInterval(0.05))
        for expected in [0.05, 0.1, 0.2] {
            clock.advance(by: expected)
            await e.fireDue()
            await e.settle()
        }
        now = try await e.get(f.id)
        #expect(now.state == .reverted)
        #expect(now.revertAttempts == 3)
        #expect(driver.reverted == ["a"])
        #expect(await e.list().map(\.id) == [f.id])
    }

    @Test func failedApplyIsRolledBackAndReportedAsFailed() async throws {
        let e = try engine()
        _ = await e.recover()
        driver.state.withLock { $0.failApply = true }
        await #expect(throws: AgentError.self) { try await e.create(request("a"), context: ctx) }
        let listed = await e.list()
        #expect(listed.count == 1)
        #expect(listed[0].state == .failed)
        #expect(listed[0].error == "kernel said no")
        #expect(driver.reverted == ["a"])  // the rollback ran
        // The claim is released: the same target can be faulted again.
        driver.state.withLock { $0.failApply = false }
        #expect(try await e.create(request("a"), context: ctx).state == .active)
    }

    @Test func refusals() async throws {
        let e = try engine(maxTTL: .seconds(60))
        _ = await e.recover()
        func status(_ r: FaultRequest) async -> (Int, String?) {
            do {
                _ = try await e.create(r, context: ctx)
                return (0, nil)
            } catch let err as AgentError { return (err.status, err.field) } catch { return (-1, nil) }
        }
        #expect(await status(request("a", ttl: "2m")) == (422, "ttl"))
        #expect(await status(request("a", ttl: "")) == (400, "ttl"))
        #expect(await status(request("a", ttl: "5parsecs")) == (400, "ttl"))
        #expect(await status(request("a", ttl: "10ms")) == (400, "ttl"))
        #expect(await status(request("a", kind: "nope")) == (400, "kind"))
        #expect(await status(FaultRequest(kind: "fake", ttl: "5s", spec: .object([:]))) == (400, "spec.target"))
        #expect(await status(FaultRequest(kind: "fake", ttl: "5s", heartbeat: "10s", spec: .object(["target": .string("x")]))) == (400, "heartbeat"))
        #expect(await status(FaultRequest(kind: "fake", ttl: "5s", heartbeat: "soon", spec: .object(["target": .string("x")]))) == (400, "heartbeat"))
        #expect(await status(FaultRequest(kind: "fake", ttl: "5s", heartbeat: "50ms", spec: .object(["target": .string("x")]))) == (400, "heartbeat"))
        _ = try await e.create(request("held"), context: ctx)
        #expect(await status(request("held")).0 == 409)
        driver.state.withLock { $0.available = false }
        #expect(await status(request("b")).0 == 422)
        // Nothing was applied by any refusal.
        #expect(driver.applied == ["held"])
    }

    @Test func notReadyUntilRecovered() async throws {
        let e = try engine()
        await #expect(throws: AgentError.notReady("the agent is not accepting faults (starting up or shutting down)")) {
            try await e.create(request("a"), context: ctx)
        }
    }

    @Test func restartRevertsWhatTheJournalHolds() async throws {
        let first = try engine()
        _ = await first.recover()
        let a = try await first.create(request("a", ttl: "10m"), context: ctx)
        let b = try await first.create(request("b", ttl: "10m"), context: ctx)
        _ = try await first.revert(b.id, by: "unix:test")
        // The first engine "crashes": a second one on the same journal reverts only what is still active.
        let other = RecordingDriver()
        let second = LeaseEngine(
            drivers: [other], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: clock)
        let report = await second.recover()
        #expect(report.reverted.map(\.id) == [a.id])
        #expect(report.isClean)
        #expect(other.reverted == ["a"])
        // And a third finds nothing left.
        let third = LeaseEngine(drivers: [other], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: clock)
        #expect(await third.recover().reverted.isEmpty)
    }

    @Test func shutdownRevertsEverything() async throws {
        let e = try engine()
        _ = await e.recover()
        for n in ["a", "b", "c"] { _ = try await e.create(request(n), context: ctx) }
        let left = await e.shutdown()
        #expect(left.isEmpty)
        #expect(Set(driver.reverted) == ["a", "b", "c"])
        await #expect(throws: AgentError.self) { try await e.create(request("d"), context: ctx) }
    }

    @Test func eventsInOrderWithReplay() async throws {
        let e = try engine()
        _ = await e.recover()
        let f = try await e.create(request("a"), context: ctx)
        _ = try await e.renew(f.id, ttl: "1m", owner: "unix:test")
        _ = try await e.revert(f.id, by: "unix:test")
        var it = await e.events(after: 0).makeAsyncIterator()
        var types: [FaultEvent.EventType] = []
        for _ in 0..<3 { if let ev = await it.next() { types.append(ev.type) } }
        #expect(types == [.applied, .renewed, .reverted])
        var it2 = await e.events(after: 2).makeAsyncIterator()
        #expect(await it2.next()?.type == .reverted)
    }
}
