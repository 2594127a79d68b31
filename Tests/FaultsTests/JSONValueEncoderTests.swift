import AgentAPI
import AgentCore
import Foundation
import Netlink
import Testing

@testable import Faults

/// `JSONValue.from` builds the tree directly; it must give exactly what encoding to text and decoding that text as a
/// `JSONValue` gives (the journal and the API see both).
@Suite("JSONValue.from matches a text round trip")
struct JSONValueEncoderTests {
    func viaText(_ v: some Encodable) throws -> JSONValue {
        try WireCoding.decoder().decode(JSONValue.self, from: WireCoding.encoder().encode(v))
    }

    @Test("a network plan with every kind of node: enums with payloads, optionals, byte arrays, a table, negatives")
    func plan() throws {
        var n = Netem()
        n.latency = 100_000_000
        n.jitter = 10_000_000
        n.distribution = .custom([-3, 0, 7, 32767, -32768])
        n.loss = .gilbertElliott(Netem.GilbertElliott(p: 0.01, r: 0.5, oneMinusH: 1, oneMinusK: 0)!)
        n.packetOverhead = -14
        n.ecn = true
        let rules = try NetworkDriver.rules(
            TrafficSelector(to: CIDR("2001:db8::/32"), port: 443), excludedPorts: [22], excludeTo: [], slot: 2, flower: false)
        let snapshot = Qdisc(
            ifindex: 2, handle: 0x10000, parent: 0xFFFF_FFFF, kind: "tbf", options: nil, rawOptions: [1, 2, 255], hasOptions: true,
            rawAttributes: [RawAttribute(type: 7, payload: [0, 1])])
        let plan = NetworkDriver.Plan(
            namespace: .pid(42), namespaceInode: 4_026_531_840, interface: "eth0", ifindex: 2, ingress: true, slot: 2,
            selector: TrafficSelector(to: CIDR("2001:db8::/32"), port: 443), snapshot: snapshot, netem: n, tbf: nil,
            rules: rules, excludedPorts: [22])
        #expect(try JSONValue.from(plan) == viaText(plan))
        #expect(try JSONValue.from(plan).decode(NetworkDriver.Plan.self) == plan)
    }

    @Test("dates become RFC 3339 strings, nested JSONValues pass through, dictionaries and nils as JSONEncoder does")
    func objects() throws {
        struct Sample: Codable {
            var at = Date(timeIntervalSince1970: 1_795_000_000.25)
            var spec: JSONValue = ["a": true, "b": [1, "x", nil]]
            var labels = ["team": "db", "z": ""]
            var missing: String? = nil
            var flags = [true, false]
            var big: UInt64 = 1 << 52
            var ratio = 0.125
        }
        #expect(try JSONValue.from(Sample()) == viaText(Sample()))
        #expect(try JSONValue.from(Sample())["at"] == .string("2026-11-18T11:06:40.250000Z"))
    }
}
