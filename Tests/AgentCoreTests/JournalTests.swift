import AgentAPI
import Foundation
import Testing

@testable import AgentCore

@Suite("Journal")
struct JournalTests {
    let dir = tempDir()

    func intent(_ id: String, at: Date = Date(timeIntervalSince1970: 1_800_000_000)) -> JournalRecord {
        var r = JournalRecord(type: .intent, id: id, at: at)
        r.kind = "pause"
        r.spec = .object(["pid": .number(42)])
        r.plan = .object(["processes": .array([.object(["pid": .number(42), "startTime": .number(7)])])])
        r.claims = ["process:42:7"]
        r.owner = "unix:root"
        r.createdAt = at
        r.expiresAt = at.addingTimeInterval(30)
        r.ttl = "30s"
        r.state = .applying
        return r
    }

    func state(_ id: String, _ s: FaultState) -> JournalRecord {
        var r = JournalRecord(type: .state, id: id, at: Date(timeIntervalSince1970: 1_800_000_001))
        r.state = s
        return r
    }

    @Test func replaysIntentsFoldedWithTheirLaterRecords() throws {
        let j = try Journal(directory: dir)
        _ = try j.replay()
        try j.append(intent("a"))
        try j.append(state("a", .active))
        try j.append(intent("b"))
        try j.append(state("b", .active))
        try j.append(state("b", .reverted))
        var renew = JournalRecord(type: .renew, id: "a", at: Date(timeIntervalSince1970: 1_800_000_010))
        renew.expiresAt = Date(timeIntervalSince1970: 1_800_000_100)
        renew.ttl = "90s"
        try j.append(renew)
        let replay = try Journal(directory: dir).replay()
        #expect(replay.goodRecords == 6)
        #expect(replay.badLines == 0)
        #expect(replay.unreverted.map(\.id) == ["a"])
        let a = replay.unreverted[0]
        #expect(a.state == .active)
        #expect(a.ttl == "90s")
        #expect(a.expiresAt == Date(timeIntervalSince1970: 1_800_000_100))
        #expect(a.plan == intent("a").plan)
    }

    @Test func tornTailIsToleratedAndReported() throws {
        let j = try Journal(directory: dir)
        _ = try j.replay()
        try j.append(intent("a"))
        try j.append(intent("b"))
        // A power cut in the middle of the third write: half a line, no newline.
        let line = try Journal.encodeLine(intent("c"))
        let h = FileHandle(forWritingAtPath: j.path)!
        h.seekToEndOfFile()
        h.write(line.prefix(line.count / 2))
        h.closeFile()
        let replay = try Journal(directory: dir).replay()
        #expect(replay.unreverted.map(\.id) == ["a", "b"])
        #expect(replay.badLines == 1)
        #expect(replay.badBytes == line.count / 2)
    }

    @Test func corruptLineIsSkippedAndLaterGoodRecordsKept() throws {
        let j = try Journal(directory: dir)
        _ = try j.replay()
        try j.append(intent("a"))
        try j.append(intent("b"))
        try j.append(intent("c"))
        var bytes = try Data(contentsOf: URL(fileURLWithPath: j.path))
        // Flip one byte inside the second line's JSON: its checksum no longer matches.
        let secondLineStart = bytes.firstIndex(of: UInt8(ascii: "\n"))! + 1
        bytes[secondLineStart + 30] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: j.path))
        let replay = try Journal(directory: dir).replay()
        #expect(replay.unreverted.map(\.id) == ["a", "c"])
        #expect(replay.badLines == 1)
    }

    @Test func compactionKeepsOnlyLiveLeases() throws {
        let j = try Journal(directory: dir, compactAfter: 20)
        _ = try j.replay()
        for i in 0..<30 {
            try j.append(intent("x\(i)"))
            try j.append(state("x\(i)", .reverted))
        }
        try j.append(intent("live"))
        try j.append(state("live", .active))
        // Compaction ran on its own while appending: the file is far smaller than 62 records.
        #expect(j.recordCount < 25)
        try j.compact()
        #expect(j.recordCount == 1)
        let replay = try Journal(directory: dir).replay()
        #expect(replay.leases.map(\.id) == ["live"])
        #expect(replay.leases[0].state == .active)
        #expect(replay.badLines == 0)
        // Appends after a compaction still land.
        try j.append(state("live", .reverted))
        #expect(try Journal(directory: dir).replay().unreverted.isEmpty)
    }

    @Test func recordsForUnknownLeasesAreCountedNotApplied() throws {
        let j = try Journal(directory: dir)
        _ = try j.replay()
        try j.append(state("ghost", .active))
        let replay = try Journal(directory: dir).replay()
        #expect(replay.orphanRecords == 1)
        #expect(replay.leases.isEmpty)
    }
}

@Suite("Deadline queue")
struct DeadlineQueueTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func popsInDeadlineOrderAndHonoursMovesAndRemovals() {
        var q = DeadlineQueue()
        for (i, s) in [5.0, 1, 4, 2, 3].enumerated() { q.schedule("l\(i)", at: t0.addingTimeInterval(s)) }
        q.schedule("l0", at: t0.addingTimeInterval(0.5))  // moved earlier
        q.remove("l2")
        #expect(q.peek()?.id == "l0")
        #expect(q.popDue(now: t0.addingTimeInterval(2)) == ["l0", "l1", "l3"])
        #expect(q.count == 1)
        #expect(q.popDue(now: t0.addingTimeInterval(10)) == ["l4"])
        #expect(q.isEmpty)
        #expect(q.peek() == nil)
    }

    @Test func manyRandomDeadlinesComeOutSorted() {
        var q = DeadlineQueue()
        var g = SystemRandomNumberGenerator()
        var expected: [(String, Date)] = []
        for i in 0..<2000 {
            let d = t0.addingTimeInterval(Double(g.next() % 100_000) / 10)
            q.schedule("l\(i)", at: d)
            expected.append(("l\(i)", d))
        }
        // Move half of them.
        for i in stride(from: 0, to: 2000, by: 2) {
            let d = t0.addingTimeInterval(Double(g.next() % 100_000) / 10)
            q.schedule("l\(i)", at: d)
            expected[i].1 = d
        }
        let out = q.popDue(now: t0.addingTimeInterval(1e6))
        let byID = Dictionary(uniqueKeysWithValues: expected)
        #expect(out.count == 2000)
        #expect(zip(out, out.dropFirst()).allSatisfy { byID[$0]! <= byID[$1]! })
    }
}

@Suite("Units and config")
struct UnitsAndConfigTests {
    @Test func durations() {
        #expect(Units.parseDuration("250ms") == .milliseconds(250))
        #expect(Units.parseDuration("30s") == .seconds(30))
        #expect(Units.parseDuration("5m") == .seconds(300))
        #expect(Units.parseDuration("1h30m") == .seconds(5400))
        #expect(Units.parseDuration("1.5s") == .milliseconds(1500))
        for bad in ["", "30", "5parsecs", "s", "-5s", "1h-3m", "ms5"] { #expect(Units.parseDuration(bad) == nil, "\(bad)") }
        #expect(Units.formatDuration(.seconds(3725)) == "1h2m5s")
        #expect(Units.formatDuration(.milliseconds(250)) == "250ms")
    }

    @Test func sizesAndPercents() {
        #expect(Units.parseSize("512KiB") == 512 * 1024)
        #expect(Units.parseSize("1GiB") == 1 << 30)
        #expect(Units.parseSize("10MB") == 10_000_000)
        #expect(Units.parseSize("12 parsecs") == nil)
        #expect(Units.parsePercent("5%") == 0.05)
        #expect(Units.parsePercent("5") == nil)
    }

    @Test func rfc3339RoundTripsMicroseconds() {
        let d = Date(timeIntervalSince1970: 1_795_000_000.123456)
        let s = RFC3339.format(d)
        #expect(s == "2026-11-18T11:06:40.123456Z")
        #expect(abs(RFC3339.parse(s)!.timeIntervalSince1970 - d.timeIntervalSince1970) < 1e-6)
        #expect(RFC3339.parse("2026-11-18T12:06:40.5+01:00")!.timeIntervalSince1970 == 1_795_000_000.5)
        #expect(RFC3339.parse("yesterday") == nil)
    }

    @Test func configDefaultsAndKeys() throws {
        let c = try AgentConfig.parse("")
        #expect(c == AgentConfig())
        let d = try AgentConfig.parse(
            """
            [agent]
            socket = "/tmp/x.sock"
            socket-mode = "0600"
            max-body = "1MiB"
            [policy]
            max-ttl = "10m"
            protected-processes = ["postgres"]
            resource-reserve = "1GiB"
            [network]
            classifier = "u32"
            """)
        #expect(d.socket == "/tmp/x.sock")
        #expect(d.socketMode == 0o600)
        #expect(d.maxBody == 1 << 20)
        #expect(d.maxTTL == .seconds(600))
        #expect(d.protectedProcesses == ["postgres"])
        #expect(d.networkClassifier == "u32")
        #expect(d.resourceReserve == 1 << 30)
        #expect(c.resourceReserve == 64 << 20)
    }

    @Test func configRefusesUnknownKeysAndBadValues() {
        for bad in [
            "[agent]\nsocket-path = \"/x\"", "[policee]\n", "[policy]\nmax-ttl = \"forever\"", "[agent]\nsocket-mode = \"rw\"",
            "[policy]\nprotected-processes = \"sshd\"", "[network]\nclassifier = \"bpf\"", "[policy]\nresource-reserve = \"lots\"",
            "[remote]\nlisten = \"0.0.0.0:7410\"", "[agent\n",
        ] {
            #expect(throws: ConfigError.self, "\(bad)") { try AgentConfig.parse(bad) }
        }
        #expect(throws: ConfigError.self) { try AgentConfig.load(path: "/nonexistent/agent.toml") }
    }
}
