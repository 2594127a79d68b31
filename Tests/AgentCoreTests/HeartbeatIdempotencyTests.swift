import AgentAPI
import Foundation
import Synchronization
import Testing

@testable import AgentCore

@Suite("Heartbeat leases")
struct HeartbeatTests {
    let dir = tempDir()
    let clock = ManualClock()
    let driver = RecordingDriver()

    func engine() throws -> LeaseEngine {
        LeaseEngine(drivers: [driver], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: clock)
    }

    func beating(_ target: String, ttl: String = "60s", heartbeat: String = "2s") -> FaultRequest {
        FaultRequest(kind: "fake", ttl: ttl, heartbeat: heartbeat, spec: .object(["target": .string(target)]))
    }

    @Test func beatsKeepItAliveAndAMissRevertsIt() async throws {
        let e = try engine()
        _ = await e.recover()
        let events = await e.events(after: nil)
        let f = try await e.create(beating("a"), context: ctx)
        #expect(f.heartbeat == "2s")
        #expect(f.heartbeatDueAt == clock.now().addingTimeInterval(2))
        // One deadline per lease: the heartbeat, earlier than the TTL.
        #expect(await e.armedDeadline == clock.now().addingTimeInterval(2))
        for _ in 0..<5 {
            clock.advance(by: 1.5)
            await e.fireDue()
            #expect(try await e.get(f.id).state == .active)
            let beat = try await e.heartbeat(f.id)
            #expect(beat.heartbeatDueAt == clock.now().addingTimeInterval(2))
            #expect(await e.armedDeadline == clock.now().addingTimeInterval(2))
        }
        clock.advance(by: 1.999)
        await e.fireDue()
        #expect(try await e.get(f.id).state == .active)
        clock.advance(by: 0.001)
        await e.fireDue()
        await e.settle()
        let after = try await e.get(f.id)
        #expect(after.state == .reverted)
        #expect(after.revertReason == "heartbeat-missed")
        #expect(after.heartbeatDueAt == nil)
        #expect(driver.reverted == ["a"])
        var types: [FaultEvent.EventType] = []
        for await ev in events {
            types.append(ev.type)
            if ev.type == .reverted { break }
        }
        #expect(types == [.applied, .heartbeatMissed, .reverted])
    }

    @Test func ttlStillWinsWhenEarlier() async throws {
        let e = try engine()
        _ = await e.recover()
        let f = try await e.create(beating("a", ttl: "3s", heartbeat: "2s"), context: ctx)
        clock.advance(by: 1.9)
        _ = try await e.heartbeat(f.id)
        // Heartbeat due at 3.9 s, TTL at 3 s: the TTL is the deadline.
        #expect(await e.armedDeadline == f.expiresAt)
        clock.advance(by: 1.1)
        await e.fireDue()
        await e.settle()
        #expect(try await e.get(f.id).revertReason == "expired")
    }

    @Test func renewResetsTheHeartbeat() async throws {
        let e = try engine()
        _ = await e.recover()
        let f = try await e.create(beating("a"), context: ctx)
        clock.advance(by: 1.9)
        let r = try await e.renew(f.id, ttl: "60s", owner: "unix:test")
        #expect(r.heartbeatDueAt == clock.now().addingTimeInterval(2))
        clock.advance(by: 1.9)
        await e.fireDue()
        #expect(try await e.get(f.id).state == .active)
    }

    @Test func heartbeatRefusals() async throws {
        let e = try engine()
        _ = await e.recover()
        let plain = try await e.create(request("plain"), context: ctx)
        await #expect(throws: AgentError.self) { try await e.heartbeat(plain.id) }
        do {
            _ = try await e.heartbeat(plain.id)
        } catch let err as AgentError { #expect(err.status == 409) }
        do {
            _ = try await e.heartbeat("f-nope")
        } catch let err as AgentError { #expect(err.status == 404) }
        let f = try await e.create(beating("b"), context: ctx)
        _ = try await e.revert(f.id, by: "unix:test")
        do {
            _ = try await e.heartbeat(f.id)
            Issue.record("a heartbeat on a reverted fault was accepted")
        } catch let err as AgentError { #expect(err.status == 409) }
    }

    @Test func theFirstReasonSticksThroughRetries() async throws {
        let e = try engine()
        _ = await e.recover()
        driver.state.withLock { $0.failRevertTimes = 1 }
        let f = try await e.create(beating("a"), context: ctx)
        clock.advance(by: 2)
        await e.fireDue()
        await e.settle()
        #expect(try await e.get(f.id).state == .reverting)
        #expect(try await e.get(f.id).revertReason == "heartbeat-missed")
        clock.advance(by: 1)
        await e.fireDue()
        await e.settle()
        let after = try await e.get(f.id)
        #expect(after.state == .reverted)
        #expect(after.revertReason == "heartbeat-missed")
    }

    @Test func heartbeatIntervalIsJournaled() async throws {
        let e = try engine()
        _ = await e.recover()
        _ = try await e.create(beating("a", heartbeat: "5s"), context: ctx)
        let replay = try Journal(directory: dir).replay()
        #expect(replay.unreverted.map(\.heartbeat) == ["5s"])
    }
}

@Suite("Idempotency keys")
struct IdempotencyTests {
    let dir = tempDir()
    let clock = ManualClock()
    let driver = RecordingDriver()

    func engine() throws -> LeaseEngine {
        LeaseEngine(drivers: [driver], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: clock)
    }

    @Test func retryReturnsTheSameFaultAndInjectsOnce() async throws {
        let e = try engine()
        _ = await e.recover()
        let first = try await e.submit(request("a"), context: ctx, idempotencyKey: "k-1")
        #expect(!first.replayed)
        let again = try await e.submit(request("a"), context: ctx, idempotencyKey: "k-1")
        #expect(again.replayed)
        #expect(again.fault.id == first.fault.id)
        #expect(driver.applied == ["a"])
        // Same key, different request: refused, nothing applied.
        do {
            _ = try await e.submit(request("b"), context: ctx, idempotencyKey: "k-1")
            Issue.record("reused key accepted")
        } catch let err as AgentError {
            #expect(err.status == 422)
            #expect(err.code == "idempotency-key-reused")
        }
        #expect(driver.applied == ["a"])
        // Without a key, or with another key: a new fault.
        _ = try await e.submit(request("c"), context: ctx, idempotencyKey: "k-2")
        #expect(driver.applied == ["a", "c"])
    }

    @Test func badKeysAreRefused() async throws {
        let e = try engine()
        _ = await e.recover()
        for key in ["", String(repeating: "x", count: 256), "has space", "tab\there"] {
            do {
                _ = try await e.submit(request("a"), context: ctx, idempotencyKey: key)
                Issue.record("key '\(key)' accepted")
            } catch let err as AgentError {
                #expect(err.status == 400)
                #expect(err.field == "Idempotency-Key")
            }
        }
        #expect(driver.applied.isEmpty)
    }

    @Test func aFailedApplyFreesTheKey() async throws {
        let e = try engine()
        _ = await e.recover()
        driver.state.withLock { $0.failApply = true }
        await #expect(throws: AgentError.self) { try await e.submit(request("a"), context: ctx, idempotencyKey: "k") }
        driver.state.withLock { $0.failApply = false }
        let ok = try await e.submit(request("a"), context: ctx, idempotencyKey: "k")
        #expect(!ok.replayed)
        #expect(ok.fault.state == .active)
    }

    @Test func keysSurviveARestartAndCompaction() async throws {
        do {
            let e = try engine()
            _ = await e.recover()
            _ = try await e.submit(request("a"), context: ctx, idempotencyKey: "live")
            let gone = try await e.submit(request("b"), context: ctx, idempotencyKey: "ended")
            _ = try await e.revert(gone.fault.id, by: "unix:test")
        }
        // Compaction drops the ended lease but keeps its key.
        let j = try Journal(directory: dir)
        _ = try j.replay()
        try j.compact()
        let replay = try Journal(directory: dir).replay()
        #expect(Set(replay.keys.map(\.key)) == ["live", "ended"])

        let e2 = try engine()
        let report = await e2.recover()
        #expect(report.reverted.count == 1)
        let retry = try await e2.submit(request("a"), context: ctx, idempotencyKey: "live")
        #expect(retry.replayed)
        #expect(retry.fault.state == .reverted)
        do {
            _ = try await e2.submit(request("b"), context: ctx, idempotencyKey: "ended")
            Issue.record("a key whose fault ended before the restart injected again")
        } catch let err as AgentError { #expect(err.status == 409) }
        do {
            _ = try await e2.submit(request("zzz"), context: ctx, idempotencyKey: "ended")
        } catch let err as AgentError { #expect(err.status == 422) }
        #expect(driver.applied == ["a", "b"])
    }

    @Test func keyRetentionIsBounded() throws {
        let j = try Journal(directory: dir, keyRetention: 3600, maxKeys: 3)
        _ = try j.replay()
        let now = Date()
        for i in 0..<5 {
            var r = JournalRecord(type: .intent, id: "f-\(i)", at: now.addingTimeInterval(Double(i)))
            r.kind = "fake"
            r.createdAt = now.addingTimeInterval(Double(i))
            r.expiresAt = now.addingTimeInterval(60)
            r.idempotencyKey = "k\(i)"
            r.requestHash = "h"
            r.state = .reverted
            try j.append(r)
        }
        var old = JournalRecord(type: .key, id: "f-old", at: now.addingTimeInterval(-7200))
        old.idempotencyKey = "ancient"
        old.requestHash = "h"
        try j.append(old)
        let replay = try Journal(directory: dir, keyRetention: 3600, maxKeys: 3).replay()
        #expect(replay.keys.map(\.key) == ["k2", "k3", "k4"])
    }
}

@Suite("Remote configuration")
struct RemoteConfigTests {
    @Test func parsesRemoteRolesAndMetrics() throws {
        let c = try AgentConfig.parse(
            """
            [remote]
            listen = "0.0.0.0:7410"
            certificate = "/etc/chaos-agent/tls/server.pem"
            private-key = "/etc/chaos-agent/tls/server.key"
            client-ca = "/etc/chaos-agent/tls/ca.pem"
            [remote.roles]
            "orchestrator" = "operator"
            "ci.example.com" = "viewer"
            "sre-lead" = "admin"
            [metrics]
            listen = "127.0.0.1:9464"
            """)
        #expect(c.remote?.listen == ListenAddress(host: "0.0.0.0", port: 7410))
        #expect(c.remote?.clientCA == "/etc/chaos-agent/tls/ca.pem")
        #expect(c.remote?.roles == ["orchestrator": .operator, "ci.example.com": .viewer, "sre-lead": .admin])
        #expect(c.metricsListen == ListenAddress(host: "127.0.0.1", port: 9464))
        #expect(try ListenAddress.parse("[::1]:7410", what: "x") == ListenAddress(host: "::1", port: 7410))
        #expect(try AgentConfig.parse("").remote == nil)
    }

    @Test func refusesIncompleteOrWrongRemote() {
        let bad: [(String, String)] = [
            ("[remote]\nlisten = \"0.0.0.0:7410\"\n", "certificate is required"),
            ("[remote]\nlisten = \"0.0.0.0\"\ncertificate=\"a\"\nprivate-key=\"b\"\nclient-ca=\"c\"\n", "needs a port"),
            ("[remote]\nlisten = \"0.0.0.0:70000\"\ncertificate=\"a\"\nprivate-key=\"b\"\nclient-ca=\"c\"\n", "port must be"),
            ("[remote]\ncertificate = \"a\"\n", "no listen"),
            ("[remote]\nlisten = \"0.0.0.0:7410\"\ncertificate=\"a\"\nprivate-key=\"b\"\nclient-ca=\"c\"\n[remote.roles]\nx = \"root\"\n", "viewer, operator, admin"),
            ("[remote]\nlisten = \"0.0.0.0:7410\"\ncert=\"a\"\n", "unknown key [remote] 'cert'"),
            ("[metrics]\nport = 9464\n", "unknown key [metrics] 'port'"),
        ]
        for (text, expected) in bad {
            do {
                _ = try AgentConfig.parse(text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".contains(expected), "\(error)")
            }
        }
    }

    @Test func rolesAreOrdered() {
        #expect(Role.viewer < Role.operator)
        #expect(Role.operator < Role.admin)
    }
}
