import AgentAPI
import Foundation
import Synchronization
import Testing

@testable import AgentCore

/// The file-writing layer with failures on demand: ENOSPC after some bytes (a short write), EIO, a failing
/// fdatasync, a failing ftruncate.
final class FaultyIO: Sendable {
    struct Plan {
        /// Bytes the next writes may still put down before failing with `writeErrno` (nil: no limit).
        var writeBudget: Int?
        var writeErrno: Int32 = ENOSPC
        var failSync = false
        var failTruncate = false
    }
    let plan = Mutex(Plan())

    var io: JournalIO {
        JournalIO(
            write: { [self] fd, p, n in
                let allowed: Int? = plan.withLock { s in
                    guard let budget = s.writeBudget else { return nil }
                    s.writeBudget = max(budget - n, 0)
                    return budget
                }
                guard let allowed else { return Glibc.write(fd, p, n) }
                if allowed == 0 {
                    errno = plan.withLock { $0.writeErrno }
                    return -1
                }
                return Glibc.write(fd, p, min(n, allowed))
            },
            fdatasync: { [self] fd in
                if plan.withLock({ $0.failSync }) {
                    errno = EIO
                    return -1
                }
                return Glibc.fdatasync(fd)
            },
            ftruncate: { [self] fd, off in
                if plan.withLock({ $0.failTruncate }) {
                    errno = EIO
                    return -1
                }
                return Glibc.ftruncate(fd, off)
            })
    }

    func set(_ change: (inout Plan) -> Void) { plan.withLock { change(&$0) } }
}

/// An intent record of a 30 s lease of `kind` with `plan` (its spec too).
func sampleIntent(_ id: String, kind: String, plan: JSONValue, at: Date = Date()) -> JournalRecord {
    var r = JournalRecord(type: .intent, id: id, at: at)
    r.kind = kind
    r.spec = plan
    r.plan = plan
    r.owner = "unix:root"
    r.createdAt = at
    r.expiresAt = at.addingTimeInterval(30)
    r.ttl = "30s"
    r.state = .applying
    return r
}

@Suite("Journal under write failures")
struct JournalFailureTests {
    let dir = tempDir()
    let faulty = FaultyIO()

    func intent(_ id: String) -> JournalRecord {
        sampleIntent(id, kind: "pause", plan: .object(["pid": .number(42)]), at: Date(timeIntervalSince1970: 1_800_000_000))
    }

    func bytes(_ j: Journal) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: j.path)) }

    @Test func aShortWriteThenENOSPCLeavesTheFileExactlyAsBefore() throws {
        let j = try Journal(directory: dir, io: faulty.io)
        _ = try j.replay()
        try j.append(intent("a"))
        let before = try bytes(j)
        faulty.set { $0.writeBudget = 40 }
        #expect(throws: JournalError.self) { try j.append(intent("b")) }
        #expect(try bytes(j) == before)
        #expect(j.brokenReason == nil)
        // Space again: the next intent is a whole line of its own, and a restart finds both good records.
        faulty.set { $0.writeBudget = nil }
        try j.append(intent("c"))
        let replay = try Journal(directory: dir).replay()
        #expect(replay.unreverted.map(\.id) == ["a", "c"])
        #expect(replay.badLines == 0)
    }

    @Test func eioOnWriteAndOnFdatasyncAreCutBack() throws {
        let j = try Journal(directory: dir, io: faulty.io)
        _ = try j.replay()
        try j.append(intent("a"))
        let before = try bytes(j)
        faulty.set {
            $0.writeBudget = 0
            $0.writeErrno = EIO
        }
        #expect(throws: JournalError.self) { try j.append(intent("b")) }
        #expect(try bytes(j) == before)
        faulty.set {
            $0.writeBudget = nil
            $0.failSync = true
        }
        // The whole line reached the file, but fdatasync failed: it is not durable, so it is not kept.
        #expect(throws: JournalError.self) { try j.append(intent("c")) }
        #expect(try bytes(j) == before)
        faulty.set { $0.failSync = false }
        try j.append(intent("d"))
        let replay = try Journal(directory: dir).replay()
        #expect(replay.unreverted.map(\.id) == ["a", "d"])
        #expect(replay.badLines == 0)
    }

    @Test func aFailedTruncateBreaksTheJournalUntilARepairWorks() throws {
        let j = try Journal(directory: dir, io: faulty.io)
        _ = try j.replay()
        try j.append(intent("a"))
        faulty.set {
            $0.writeBudget = 25
            $0.failTruncate = true
        }
        do {
            try j.append(intent("b"))
            Issue.record("the append should have failed")
        } catch let e as JournalError {
            guard case .broken = e else { Issue.record("expected broken, got \(e)"); return }
        }
        #expect(j.brokenReason != nil)
        // Still broken (the fragment cannot be cut off): every append is refused, none is glued on.
        faulty.set { $0.writeBudget = nil }
        #expect(throws: JournalError.self) { try j.append(intent("c")) }
        // The repair works again: the fragment goes, the append lands on a clean line.
        faulty.set { $0.failTruncate = false }
        try j.append(intent("d"))
        #expect(j.brokenReason == nil)
        let replay = try Journal(directory: dir).replay()
        #expect(replay.unreverted.map(\.id) == ["a", "d"])
        #expect(replay.badLines == 0)
    }

    @Test func aTornFragmentNeverSwallowsTheGoodRecordAfterIt() throws {
        let j = try Journal(directory: dir)
        _ = try j.replay()
        try j.append(intent("a"))
        // What the old journal left after ENOSPC: half a line with no newline, then the next whole record.
        let torn = try Journal.encodeLine(intent("b"))
        var data = try bytes(j)
        data.append(torn.prefix(torn.count / 2))
        data.append(try Journal.encodeLine(intent("c")))
        data.append(try Journal.encodeLine(intent("d")))
        try data.write(to: URL(fileURLWithPath: j.path))
        let replay = try Journal(directory: dir).replay()
        #expect(replay.unreverted.map(\.id) == ["a", "c", "d"])
        #expect(replay.badLines == 1)
        #expect(replay.badBytes == torn.count / 2)
    }

    @Test func aTornTailIsCutOffAtReplaySoTheNextAppendStartsALine() throws {
        let j = try Journal(directory: dir)
        _ = try j.replay()
        try j.append(intent("a"))
        let torn = try Journal.encodeLine(intent("b"))
        let h = FileHandle(forWritingAtPath: j.path)!
        h.seekToEndOfFile()
        h.write(torn.prefix(10))
        h.closeFile()
        let again = try Journal(directory: dir)
        #expect(try again.replay().badLines == 1)
        try again.append(intent("c"))
        let replay = try Journal(directory: dir).replay()
        #expect(replay.unreverted.map(\.id) == ["a", "c"])
        #expect(replay.badLines == 0)
    }

    @Test func theEngineRefusesAFaultWith507WhenTheJournalCannotBeWritten() async throws {
        let driver = RecordingDriver()
        let e = LeaseEngine(
            drivers: [driver], journal: try Journal(directory: dir, io: faulty.io), policy: LeasePolicy(),
            clock: ManualClock())
        _ = await e.recover()
        let first = try await e.create(request("a", ttl: "30s"), context: ctx)
        faulty.set { $0.writeBudget = 10 }
        do {
            _ = try await e.create(request("b", ttl: "30s"), context: ctx)
            Issue.record("the fault should have been refused")
        } catch let error as AgentError {
            #expect(error.status == 507)
            #expect(error.code == "state-not-writable")
            #expect(error.message.contains("state dir not writable"))
        }
        #expect(driver.applied == ["a"])
        // Reverts go on while the disk is full (their state record is best effort and never corrupts the file).
        _ = try await e.revert(first.id, by: "unix:test")
        #expect(driver.reverted == ["a"])
        faulty.set { $0.writeBudget = nil }
        let third = try await e.create(request("c", ttl: "30s"), context: ctx)
        #expect(third.state == .active)
        let replay = try Journal(directory: dir).replay()
        #expect(replay.badLines == 0)
        // The revert of a could not be journaled: a restart reverts it again (reverts are idempotent).
        #expect(replay.unreverted.map(\.id) == [first.id, third.id])
    }
}
