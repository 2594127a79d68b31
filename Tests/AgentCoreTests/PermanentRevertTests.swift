import AgentAPI
import Foundation
import Synchronization
import Testing

@testable import AgentCore

/// A driver whose plans are `{"name": ...}`; reverts of some names can never succeed.
final class StubbornDriver: FaultDriver, Sendable {
    let kind = "stubborn"
    struct Plan: Codable { var name: String }
    let swept = Mutex<[[JSONValue]]>([])
    let reverts = Mutex(0)

    func availability() -> KindAvailability { KindAvailability(kind: kind, available: true) }
    func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        let name = spec["target"]!.stringValue!
        return PreparedFault(target: .object(["name": .string(name)]), plan: .object(["name": .string(name)]), claims: [])
    }
    func apply(plan: JSONValue) async throws -> PreparedFault? { nil }
    func revert(plan: JSONValue) async throws {
        reverts.withLock { $0 += 1 }
        let p = try plan.decode(Plan.self)
        if p.name == "einval" { throw PermanentRevertFailure("the kernel refuses the request as invalid (EINVAL); nothing of it is installed") }
    }
    func reconcileOrphans(livePlans: [JSONValue]) async -> [String] {
        swept.withLock { $0.append(livePlans) }
        return ["removed a leftover"]
    }
}

@Suite("Permanent revert failures")
struct PermanentRevertTests {
    let dir = tempDir()

    @Test func aRevertThatCanNeverSucceedEndsTheLeaseAsFailedInsteadOfLooping() async throws {
        let driver = StubbornDriver()
        let clock = ManualClock()
        let e = LeaseEngine(drivers: [driver], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: clock)
        _ = await e.recover()
        let f = try await e.create(FaultRequest(kind: "stubborn", ttl: "30s", spec: .object(["target": "einval"])), context: ctx)
        let after = try await e.revert(f.id, by: "unix:test")
        #expect(after.state == .failed)
        #expect(after.error?.contains("revert impossible") == true)
        #expect(after.error?.contains("EINVAL") == true)
        // No retry is scheduled: time passing does not call the driver again.
        let calls = driver.reverts.withLock { $0 }
        clock.advance(by: 120)
        await e.fireDue()
        await e.settle()
        #expect(driver.reverts.withLock { $0 } == calls)
        #expect(await e.armedDeadline == nil)
        // The journal says it is over: a restart does not try again.
        #expect(try Journal(directory: dir).replay().unreverted.isEmpty)
    }

    @Test func aPlanThisVersionCannotReadIsSweptThenFailedAndRecoveryIsClean() async throws {
        let j = try Journal(directory: dir)
        _ = try j.replay()
        // A plan an older (or newer) agent wrote: no `name`.
        try j.append(sampleIntent("f-old", kind: "stubborn", plan: .object(["legacy": .number(1)])))
        try j.append(sampleIntent("f-good", kind: "stubborn", plan: .object(["name": "fine"])))
        let driver = StubbornDriver()
        let e = LeaseEngine(drivers: [driver], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: ManualClock())
        let report = await e.recover(accept: false)
        // `reap` exits 0 when the report is clean: nothing is left pending for ever.
        #expect(report.isClean)
        #expect(report.stillPending.isEmpty)
        #expect(Set(report.reverted.map(\.id)) == ["f-old", "f-good"])
        let old = try await e.get("f-old")
        #expect(old.state == .failed)
        #expect(old.error?.contains("cannot read the fault's revert plan") == true)
        #expect(old.error?.contains("removed a leftover") == true)
        // The sweep ran before deciding, with the other live lease's plan as what must stay.
        #expect(driver.swept.withLock { $0.first } == [.object(["name": "fine"])])
        #expect(try Journal(directory: dir).replay().unreverted.isEmpty)
    }
}
