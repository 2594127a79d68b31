import AgentAPI
import AgentCore
import Foundation
import Synchronization
import Testing

@testable import AgentServer

@Suite("Roles, heartbeat and idempotency routes")
struct RolesTests {
    let viewer = Caller(identity: "tls:dashboard", role: .viewer)
    let op = Caller(identity: "tls:orchestrator", role: .operator)
    let admin = Caller(identity: "tls:sre", role: .admin)
    let body = #"{"kind":"fake","ttl":"30s","spec":{"target":"a"}}"#

    @Test func viewerReadsOnly() async throws {
        let h = try await RouterHarness()
        #expect(await h.call("GET", "/v1/faults", as: viewer).0 == 200)
        #expect(await h.call("GET", "/v1/status", as: viewer).0 == 200)
        let (s, err) = await h.call("POST", "/v1/faults", body, as: viewer)
        #expect(s == 403)
        #expect(errorCode(err) == "forbidden")
        #expect(err["error"]?["message"]?.stringValue?.contains("operator") == true)
        #expect(h.driver.applied.withLock { $0 }.isEmpty)
    }

    @Test func operatorChangesFaultsButNotEverything() async throws {
        let h = try await RouterHarness()
        let (s, created) = await h.call("POST", "/v1/faults", body, as: op)
        #expect(s == 201)
        #expect(created["owner"]?.stringValue == "tls:orchestrator")
        let id = created["id"]!.stringValue!
        #expect(await h.call("POST", "/v1/faults/\(id)/renew", #"{"ttl":"1m"}"#, as: op).0 == 200)
        #expect(await h.call("DELETE", "/v1/faults/\(id)", as: viewer).0 == 403)
        // Revert-all and policy overrides are admin-only.
        #expect(await h.call("DELETE", "/v1/faults", as: op).0 == 403)
        #expect(try await h.engine.get(id).state == .active)
        let override = #"{"kind":"fake","ttl":"30s","spec":{"target":"b","noDefaultExclusions":true}}"#
        let (so, eo) = await h.call("POST", "/v1/faults", override, as: op)
        #expect(so == 403)
        #expect(eo["error"]?["message"]?.stringValue?.contains("admin") == true)
        #expect(h.driver.applied.withLock { $0 } == ["a"])
        #expect(await h.call("DELETE", "/v1/faults/\(id)", as: op).0 == 200)
    }

    @Test func adminMayRevertAll() async throws {
        let h = try await RouterHarness()
        _ = await h.call("POST", "/v1/faults", body, as: op)
        let (s, result) = await h.call("DELETE", "/v1/faults", as: admin)
        #expect(s == 200)
        if case .array(let reverted)? = result["reverted"] { #expect(reverted.count == 1) } else { Issue.record("no list") }
    }

    @Test func heartbeatRoute() async throws {
        let h = try await RouterHarness()
        let (_, created) = await h.call(
            "POST", "/v1/faults", #"{"kind":"fake","ttl":"30s","heartbeat":"5s","spec":{"target":"a"}}"#, as: op)
        let id = created["id"]!.stringValue!
        #expect(created["heartbeat"]?.stringValue == "5s")
        let (s, beat) = await h.call("POST", "/v1/faults/\(id)/heartbeat", "", as: op)
        #expect(s == 200)
        #expect(beat["heartbeatDueAt"]?.stringValue != nil)
        #expect(await h.call("POST", "/v1/faults/\(id)/heartbeat", "{}", as: op).0 == 200)
        let (sb, eb) = await h.call("POST", "/v1/faults/\(id)/heartbeat", #"{"ttl":"1m"}"#, as: op)
        #expect(sb == 400)
        #expect(errorField(eb) == "ttl")
        #expect(await h.call("POST", "/v1/faults/\(id)/heartbeat", "", as: viewer).0 == 403)
        #expect(await h.call("POST", "/v1/faults/f-none/heartbeat", "", as: op).0 == 404)
    }

    @Test func idempotencyKeyHeader() async throws {
        let h = try await RouterHarness()
        func post(_ b: String, key: String) async -> (Int, JSONValue) {
            let r = await h.router.handle(
                APIRequest(method: "POST", path: "/v1/faults", headers: ["Idempotency-Key": key], body: Data(b.utf8)),
                caller: op)
            guard case .json(let status, let data) = r else { return (r.status, .null) }
            return (status, (try? JSONDecoder().decode(JSONValue.self, from: data)) ?? .null)
        }
        let (s1, f1) = await post(body, key: "abc")
        let (s2, f2) = await post(body, key: "abc")
        #expect(s1 == 201)
        #expect(s2 == 200)
        #expect(f1["id"] == f2["id"])
        let (s3, e3) = await post(#"{"kind":"fake","ttl":"45s","spec":{"target":"a"}}"#, key: "abc")
        #expect(s3 == 422)
        #expect(errorCode(e3) == "idempotency-key-reused")
        #expect(h.driver.applied.withLock { $0 } == ["a"])
    }

    @Test func metricsRoute() async throws {
        let h = try await RouterHarness()
        let r = await h.router.handle(APIRequest(method: "GET", path: "/metrics"), caller: viewer)
        // The harness's router has no metrics backend.
        #expect(r.status == 404)
        let engine = h.engine
        let withMetrics = APIRouter(engine: engine, metrics: { "# TYPE x counter\nx 1\n" }) {
            AgentStatus(
                version: "t", pid: 1, startedAt: Date(), uptimeSeconds: 0, socket: "", stateDir: "", maxTTL: "",
                activeFaults: 0,
                host: HostFacts(kernel: "k", euid: 0, capabilities: [], pidfd: true, cgroup2Mount: nil, cgroupControllers: [], netlink: true),
                kinds: [], recovered: 0)
        }
        guard case .text(200, let type, let text) = await withMetrics.handle(APIRequest(method: "GET", path: "/metrics"), caller: viewer)
        else {
            Issue.record("no text answer")
            return
        }
        #expect(type.hasPrefix("text/plain; version=0.0.4"))
        #expect(text.contains("x 1"))
    }

    @Test func certificateIdentities() {
        let roles = CertificateRoles(roles: ["orchestrator": .operator, "sre.example.com": .admin, "dash": .viewer])
        #expect((try? roles.caller(names: ["orchestrator"]).get()) == Caller(identity: "tls:orchestrator", role: .operator))
        // A SAN may carry the identity; the highest role of any name wins.
        #expect((try? roles.caller(names: ["dash", "sre.example.com"]).get())?.role == .admin)
        guard case .failure(let e) = roles.caller(names: ["stranger"]) else {
            Issue.record("an unknown identity got a role")
            return
        }
        #expect(e.status == 403)
        guard case .failure = roles.caller(names: []) else {
            Issue.record("a nameless certificate got a role")
            return
        }
    }
}
