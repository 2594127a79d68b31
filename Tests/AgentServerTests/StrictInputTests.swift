import AgentAPI
import AgentCore
import Foundation
import Synchronization
import Testing

@testable import AgentServer

/// Issue 10, item 9: strict JSON (UTF-8 only, no duplicate keys, no numbers Double cannot hold) and strict routing
/// (one path, one meaning). Every example from the issue is here and was accepted before.
@Suite("strict JSON and routing")
struct StrictInputTests {
    static let good = #"{"kind":"fake","ttl":"30s","spec":{"target":"a"}}"#

    func parseError(_ bytes: [UInt8]) -> StrictJSON.ParseError? {
        do {
            _ = try StrictJSON.parse(Data(bytes))
            return nil
        } catch { return error }
    }

    func parseError(_ text: String) -> StrictJSON.ParseError? { parseError(Array(text.utf8)) }

    @Test func acceptsWhatJSONDecoderAccepts() throws {
        let docs = [
            Self.good, #"{"a":[1,-2.5,3e2,0,-0,1E-3,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"],"b":{}}"#, "[]",
            #"{"labels":{"é":"1","e":"2"}}"#, "{\"k\":\"caf\u{e9}\"}",
        ]
        for d in docs {
            let strict = try StrictJSON.parse(Data(d.utf8))
            let foundation = try JSONDecoder().decode(JSONValue.self, from: Data(d.utf8))
            #expect(strict == foundation, "\(d)")
        }
    }

    @Test func refusesEverythingButUTF8() {
        let utf16LE: [UInt8] = Array(Self.good.utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let utf16BE: [UInt8] = Array(Self.good.utf16).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
        for bytes in [
            [0xFF, 0xFE] + utf16LE, [0xFE, 0xFF] + utf16BE, utf16LE, utf16BE, [0xEF, 0xBB, 0xBF] + Array(Self.good.utf8),
            [0, 0, 0xFE, 0xFF, 0, 0, 0, 0x7B, 0, 0, 0, 0x7D],
            Array(#"{"a":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8),  // invalid sequence
            Array(#"{"a":""#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8),  // overlong '/'
            Array(#"{"a":""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8),  // UTF-8-encoded surrogate
            Array(#"{"a":""#.utf8) + [0xFF] + Array(#""}"#.utf8),
        ] as [[UInt8]] {
            #expect(parseError(bytes) != nil, "\(bytes.prefix(8))")
        }
    }

    @Test func refusesDuplicateKeysAtAnyDepthNamingThem() {
        let cases: [(String, String)] = [
            (#"{"kind":"fake","ttl":"1h","ttl":"1s","spec":{"target":"a"}}"#, "ttl"),
            (#"{"kind":"fake","ttl":"30s","spec":{"target":"a"},"spec":{"target":"b"}}"#, "spec"),
            (#"{"kind":"fake","ttl":"30s","spec":{"target":"a","target":"a"}}"#, "spec.target"),
            (#"{"a":[{"b":1},{"b":1,"b":2}]}"#, "a[1].b"),
            (#"{"ttl":"1s","t\u0074l":"2s"}"#, "ttl"),  // the same key, escaped
            ("{\"caf\u{e9}\":1,\"cafe\u{301}\":2}", "cafe\u{301}"),  // canonically equivalent: one key downstream
        ]
        for (doc, field) in cases {
            let e = parseError(doc)
            #expect(e?.field == field, "\(doc)")
            #expect(e?.message.contains("duplicate") == true, "\(doc)")
        }
    }

    @Test func refusesMalformedAndOutOfRange() {
        let bad = [
            "", " ", "{", "}", #"{"a":1,}"#, "[1,]", "[01]", "[1.]", "[.5]", "[1e]", "[-]", "[+1]", "[NaN]", "[Infinity]",
            "[1e400]", "[-1e400]", #"{"a":1}x"#, #"{"a":1}{"b":2}"#, "{'a':1}", #"{"a":"\x"}"#, #"{"a":"\ud800"}"#,
            #"{"a":"\udc00\ud800"}"#, "{\"a\":\"tab\there\"}", "{\"a\":\"nul\u{0}\"}", "// c\n{}", "[tru]", "[nul]",
            String(repeating: "[", count: 100) + String(repeating: "]", count: 100),
        ]
        for d in bad { #expect(parseError(d) != nil, "\(d.prefix(30))") }
        #expect(parseError(#"{"spec":{"signal":1e400}}"#)?.field == "spec.signal")
        #expect(parseError(String(repeating: "[", count: 60) + String(repeating: "]", count: 60)) == nil)
    }

    @Test func routerRefusesTheIssueBodies() async throws {
        let h = try await RouterHarness()
        func post(_ bytes: [UInt8]) async -> (Int, JSONValue) {
            let r = await h.router.handle(APIRequest(method: "POST", path: "/v1/faults", body: Data(bytes)), caller: h.root)
            guard case .json(let status, let data) = r else { return (r.status, .null) }
            return (status, (try? JSONDecoder().decode(JSONValue.self, from: data)) ?? .null)
        }
        let utf16: [UInt8] = [0xFF, 0xFE] + Array(Self.good.utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        #expect(await post(utf16).0 == 400)
        let twiceTTL = await post(Array(#"{"kind":"fake","ttl":"30s","ttl":"1s","spec":{"target":"a"}}"#.utf8))
        #expect(twiceTTL.0 == 400)
        #expect(errorField(twiceTTL.1) == "ttl")
        let twiceSpec = await post(Array(#"{"kind":"fake","ttl":"30s","spec":{"target":"a"},"spec":{"target":"b"}}"#.utf8))
        #expect(twiceSpec.0 == 400)
        #expect(errorField(twiceSpec.1) == "spec")
        let controlLabel = await post(Array(#"{"kind":"fake","ttl":"30s","labels":{"a":"x\u001b[2J"},"spec":{"target":"a"}}"#.utf8))
        #expect(controlLabel.0 == 400 && errorField(controlLabel.1) == "labels.a")
        let controlTTL = await post(Array(#"{"kind":"fake","ttl":"30s\u0000","spec":{"target":"a"}}"#.utf8))
        #expect(controlTTL.0 == 400 && errorField(controlTTL.1) == "ttl")
        let renew = await h.call("POST", "/v1/faults/f-x/renew", #"{"ttl":"1m","ttl":"2m"}"#)
        #expect(renew.0 == 400 && errorField(renew.1) == "ttl")
        #expect(h.driver.applied.withLock { $0 }.isEmpty)
    }

    @Test func onePathOneMeaning() async throws {
        let h = try await RouterHarness()
        let (s, created) = await h.call("POST", "/v1/faults", Self.good)
        #expect(s == 201)
        let id = created["id"]!.stringValue!
        func stillActive() async -> Bool { await h.call("GET", "/v1/faults/\(id)").1["state"]?.stringValue == "active" }

        // The three DELETE forms from the issue reverted every fault; none may now.
        let empty = await h.call("DELETE", "/v1/faults/")
        #expect(empty.0 == 404 || empty.0 == 405)
        #expect(await stillActive())
        #expect(await h.call("DELETE", "//v1//faults//").0 == 404)
        #expect(await stillActive())
        let query = await h.call("DELETE", "/v1/faults?id=\(id)")
        #expect(query.0 == 400)
        #expect(errorField(query.1) == "query.id")
        #expect(await stillActive())
        for path in [
            "/v1/faults?", "/v1/faults?&", "/v1/faults?all", "/v1//faults", "/v1/faults/\(id)/", "//v1/faults/\(id)",
            "/v1/faults/./\(id)", "/v1/faults#x", "v1/faults", "http://localhost/v1/faults", "*", "/v1/faults/\(id)?x=1",
            "/v1/faults/%00", "/v1/faults/a\u{0}b",
        ] {
            let (status, _) = await h.call("DELETE", path)
            #expect([400, 404, 405].contains(status), "\(path) -> \(status)")
            #expect(await stillActive(), "\(path)")
        }
        #expect(await h.call("GET", "/healthz?verbose=1").0 == 400)
        #expect(await h.call("GET", "/healthz/").0 == 404)
        #expect(await h.call("GET", "/v1/faults/").0 == 404)
        #expect(await h.call("GET", "/" + String(repeating: "a", count: 9000)).0 == 414)
        // The real forms still work.
        #expect(await h.call("GET", "/v1/faults/\(id)").0 == 200)
        let (all, body) = await h.call("DELETE", "/v1/faults")
        #expect(all == 200)
        if case .array(let reverted)? = body["reverted"] { #expect(reverted.count == 1) } else { Issue.record("no reverted array") }
    }
}
