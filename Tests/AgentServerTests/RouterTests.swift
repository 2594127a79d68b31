import AgentAPI
import AgentCore
import Foundation
import Synchronization
import Testing

@testable import AgentServer

/// Records applies and reverts: stands in for a real driver so the routes can be tested in-process.
final class FakeDriver: FaultDriver, Sendable {
    let kind = "fake"
    let applied = Mutex<[String]>([])
    func availability() -> KindAvailability { KindAvailability(kind: kind, available: true) }
    func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        guard let t = spec["target"]?.stringValue else { throw AgentError.badRequest("target is required", field: "spec.target") }
        return PreparedFault(target: spec, plan: spec, claims: ["fake:\(t)"])
    }
    func apply(plan: JSONValue) async throws -> PreparedFault? {
        applied.withLock { $0.append(plan["target"]!.stringValue!) }
        return nil
    }
    func revert(plan: JSONValue) async throws {}
}

struct RouterHarness {
    let driver = FakeDriver()
    let engine: LeaseEngine
    let router: APIRouter
    let root = Caller(identity: "unix:root", role: .admin, pid: nil)
    let nobody = Caller(identity: "unix:nobody", role: .viewer, pid: nil)

    init(maxBody: Int = 1024) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("router-\(UUID().uuidString)").path
        engine = LeaseEngine(
            drivers: [driver], journal: try Journal(directory: dir), policy: LeasePolicy(maxTTL: .seconds(600)),
            clock: ManualClock())
        _ = await engine.recover()
        let engine = self.engine
        router = APIRouter(engine: engine, maxBody: maxBody) {
            AgentStatus(
                version: "test", pid: 1, startedAt: Date(), uptimeSeconds: 0, socket: "/x", stateDir: "/y", maxTTL: "10m",
                activeFaults: await engine.ping(),
                host: HostFacts(kernel: "k", euid: 0, capabilities: [], pidfd: true, cgroup2Mount: nil, cgroupControllers: [], netlink: true),
                kinds: await engine.kinds(), recovered: 0)
        }
    }

    func call(_ method: String, _ path: String, _ body: String = "", as caller: Caller? = nil) async -> (Int, JSONValue) {
        let r = await router.handle(APIRequest(method: method, path: path, body: Data(body.utf8)), caller: caller ?? root)
        guard case .json(let status, let data) = r else { return (r.status, .null) }
        return (status, (try? JSONDecoder().decode(JSONValue.self, from: data)) ?? .null)
    }
}

func errorField(_ v: JSONValue) -> String? { v["error"]?["field"]?.stringValue }
func errorCode(_ v: JSONValue) -> String? { v["error"]?["code"]?.stringValue }

@Suite("API routes in-process")
struct RouterTests {
    @Test func createListGetRenewRevert() async throws {
        let h = try await RouterHarness()
        let (s1, created) = await h.call("POST", "/v1/faults", #"{"kind":"fake","ttl":"30s","labels":{"team":"db"},"spec":{"target":"a"}}"#)
        #expect(s1 == 201)
        #expect(created["state"]?.stringValue == "active")
        #expect(created["owner"]?.stringValue == "unix:root")
        #expect(created["labels"]?["team"]?.stringValue == "db")
        #expect(created["revertedAt"] == .null)  // present, as null
        let id = created["id"]!.stringValue!
        let (s2, list) = await h.call("GET", "/v1/faults")
        #expect(s2 == 200)
        if case .array(let faults)? = list["faults"] { #expect(faults.map { $0["id"]?.stringValue } == [id]) } else { Issue.record("no faults array") }
        #expect(await h.call("GET", "/v1/faults/\(id)").0 == 200)
        let (s3, renewed) = await h.call("POST", "/v1/faults/\(id)/renew", #"{"ttl":"5m"}"#)
        #expect(s3 == 200)
        #expect(renewed["ttl"]?.stringValue == "5m")
        let (s4, reverted) = await h.call("DELETE", "/v1/faults/\(id)")
        #expect(s4 == 200)
        #expect(reverted["state"]?.stringValue == "reverted")
        #expect(await h.call("POST", "/v1/faults/\(id)/renew", #"{"ttl":"5m"}"#).0 == 409)
        #expect(await h.call("GET", "/healthz").0 == 200)
        let (s5, status) = await h.call("GET", "/v1/status")
        #expect(s5 == 200)
        #expect(status["version"]?.stringValue == "test")
    }

    @Test func badInputGetsA400NamingTheFieldAndAppliesNothing() async throws {
        let h = try await RouterHarness()
        let cases: [(String, String?)] = [
            (#"{"kind":"fake","ttl":"30s","spec":{"target":"a""#, nil),  // malformed
            (#"[1,2]"#, nil),
            (#""#, nil),
            (#"{"ttl":"30s","spec":{"target":"a"}}"#, "kind"),
            (#"{"kind":"warp-drive","ttl":"30s","spec":{}}"#, "kind"),
            (#"{"kind":"fake","spec":{"target":"a"}}"#, "ttl"),
            (#"{"kind":"fake","ttl":30,"spec":{"target":"a"}}"#, "ttl"),
            (#"{"kind":"fake","ttl":"30 fortnights","spec":{"target":"a"}}"#, "ttl"),
            (#"{"kind":"fake","ttl":"30s","spec":"a"}"#, "spec"),
            (#"{"kind":"fake","ttl":"30s","spec":{}}"#, "spec.target"),
            (#"{"kind":"fake","ttl":"30s","tll":"5s","spec":{"target":"a"}}"#, "tll"),
            (#"{"kind":"fake","ttl":"30s","labels":{"a":1},"spec":{"target":"a"}}"#, "labels.a"),
        ]
        for (body, field) in cases {
            let (status, err) = await h.call("POST", "/v1/faults", body)
            #expect(status == 400, "\(body)")
            #expect(errorCode(err) == "bad-request", "\(body)")
            #expect(errorField(err) == field, "\(body)")
            #expect(err["error"]?["message"]?.stringValue?.isEmpty == false)
        }
        #expect(h.driver.applied.withLock { $0 }.isEmpty)
    }

    @Test func refusalsAndStatusCodes() async throws {
        let h = try await RouterHarness(maxBody: 256)
        let big = #"{"kind":"fake","ttl":"30s","spec":{"target":"\#(String(repeating: "x", count: 400))"}}"#
        #expect(await h.call("POST", "/v1/faults", big).0 == 413)
        let over = await h.call("POST", "/v1/faults", #"{"kind":"fake","ttl":"2h","spec":{"target":"a"}}"#)
        #expect(over.0 == 422)
        #expect(errorField(over.1) == "ttl")
        let forbidden = await h.call("POST", "/v1/faults", #"{"kind":"fake","ttl":"30s","spec":{"target":"a"}}"#, as: h.nobody)
        #expect(forbidden.0 == 403)
        #expect(errorCode(forbidden.1) == "forbidden")
        #expect(await h.call("DELETE", "/v1/faults", as: h.nobody).0 == 403)
        #expect(await h.call("GET", "/v1/faults", as: h.nobody).0 == 200)  // readers may read
        #expect(await h.call("GET", "/v1/faults/f-nope").0 == 404)
        #expect(await h.call("DELETE", "/v1/faults/f-nope").0 == 404)
        #expect(await h.call("GET", "/v2/faults").0 == 404)
        #expect(await h.call("PUT", "/v1/faults").0 == 405)
        #expect(await h.call("POST", "/v1/faults", #"{"kind":"fake","ttl":"30s","spec":{"target":"b"}}"#).0 == 201)
        #expect(await h.call("POST", "/v1/faults", #"{"kind":"fake","ttl":"30s","spec":{"target":"b"}}"#).0 == 409)
        #expect(h.driver.applied.withLock { $0 } == ["b"])
        let (s, all) = await h.call("DELETE", "/v1/faults")
        #expect(s == 200)
        if case .array(let reverted)? = all["reverted"] { #expect(reverted.count == 1) } else { Issue.record("no reverted array") }
    }

    @Test func notReadyBeforeRecovery() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("router-\(UUID().uuidString)").path
        let engine = LeaseEngine(drivers: [FakeDriver()], journal: try Journal(directory: dir), policy: LeasePolicy(), clock: ManualClock())
        let router = APIRouter(engine: engine) { fatalError("status is not asked for") }
        let r = await router.handle(APIRequest(method: "GET", path: "/healthz"), caller: Caller(identity: "unix:root", role: .admin))
        #expect(r.status == 503)
        let p = await router.handle(
            APIRequest(method: "POST", path: "/v1/faults", body: Data(#"{"kind":"fake","ttl":"30s","spec":{"target":"a"}}"#.utf8)),
            caller: Caller(identity: "unix:root", role: .admin))
        #expect(p.status == 503)
    }

    @Test func peerAuthorization() {
        let auth = PeerAuthorizer(writerGroup: 4242)
        #expect(auth.caller(uid: 0, gid: 0, pid: 1).role == .admin)
        #expect(auth.caller(uid: 0, gid: 0, pid: 1).identity == "unix:root")
        #expect(auth.caller(uid: 5555, gid: 4242, pid: 1).role == .operator)  // primary group
        #expect(auth.caller(uid: 65534, gid: 65534, pid: 1).role == .viewer)
        #expect(auth.caller(uid: 7777777, gid: 7777777, pid: 1).identity == "unix:uid=7777777")
        #expect(PeerAuthorizer(writerGroup: nil).caller(uid: 1000, gid: 1000, pid: 1).role == .viewer)
    }
}
