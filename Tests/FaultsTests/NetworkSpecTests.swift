import AgentAPI
import AgentCore
import Foundation
import Testing

@testable import Faults

func spec(_ fields: [String: JSONValue]) -> JSONValue { .object(fields) }

@Suite("network spec validation")
struct NetworkSpecTests {
    @Test func theIssueExampleParses() throws {
        let s = try NetworkSpec(
            from: spec([
                "interface": "eth0", "delay": "100ms", "jitter": "10ms", "loss": "1%", "to": "10.1.0.0/16", "port": 5432,
            ]))
        #expect(s.interface == "eth0")
        #expect(s.delayNanos == 100_000_000)
        #expect(s.jitterNanos == 10_000_000)
        #expect(s.loss == 0.01)
        #expect(s.to == CIDR("10.1.0.0/16"))
        #expect(s.port == 5432)
        #expect(s.direction == .egress)
        #expect(s.isTargeted)
        #expect(!s.isRateOnly)
    }

    @Test func everyKnob() throws {
        let s = try NetworkSpec(
            from: spec([
                "interface": "veth0", "netns": "blue", "direction": "ingress", "delay": "50ms", "jitter": "5ms",
                "correlation": "25%", "distribution": "pareto", "lossGemodel": "1%,30%", "duplicate": "2%",
                "duplicateCorrelation": "10%", "corrupt": "0.1%", "reorder": "25%", "reorderCorrelation": "50%", "gap": 5,
                "rate": "1mbit", "packetOverhead": 14, "ecn": true, "limit": 5000, "from": "2001:db8::/32", "protocol": "udp",
                "excludePort": [22, 7410], "excludeTo": ["192.0.2.1"], "noDefaultExclusions": false,
            ]))
        #expect(s.lossGemodel == .init(p: 0.01, r: 0.3, oneMinusH: 1, oneMinusK: 0))
        #expect(s.rateBytesPerSecond == 125_000)
        #expect(s.distribution == .pareto)
        #expect(s.from?.family == .ipv6)
        #expect(s.excludePorts == [22, 7410])
        #expect(s.excludeTo == [CIDR("192.0.2.1/32")!])
    }

    @Test func rateOnlyIsATBF() throws {
        #expect(try NetworkSpec(from: spec(["interface": "eth0", "rate": "10MB/s"])).isRateOnly)
        #expect(try !NetworkSpec(from: spec(["interface": "eth0", "rate": "10MB/s", "delay": "1ms"])).isRateOnly)
    }

    @Test func refusalsNameTheField() {
        let cases: [([String: JSONValue], String)] = [
            ([:], "spec.interface"),
            (["interface": "this-name-is-far-too-long", "delay": "1ms"], "spec.interface"),
            (["interface": "eth0"], "spec"),
            (["interface": "eth0", "loss": "101%"], "spec.loss"),
            (["interface": "eth0", "loss": "5"], "spec.loss"),
            (["interface": "eth0", "delay": "100 parsecs"], "spec.delay"),
            (["interface": "eth0", "delay": "2m"], "spec.delay"),
            (["interface": "eth0", "jitter": "1ms"], "spec.jitter"),
            (["interface": "eth0", "delay": "1s", "jitter": "3s"], "spec.jitter"),
            (["interface": "eth0", "delay": "10ms", "distribution": "normal"], "spec.distribution"),
            (["interface": "eth0", "delay": "10ms", "jitter": "1ms", "distribution": "gaussian"], "spec.distribution"),
            (["interface": "eth0", "reorder": "5%"], "spec.reorder"),
            (["interface": "eth0", "delay": "10ms", "gap": 5], "spec.gap"),
            (["interface": "eth0", "rate": "fast"], "spec.rate"),
            (["interface": "eth0", "delay": "1ms", "to": "10.1.0.0/33"], "spec.to"),
            (["interface": "eth0", "delay": "1ms", "to": "not-an-ip"], "spec.to"),
            (["interface": "eth0", "delay": "1ms", "to": "10.0.0.0/8", "from": "::1"], "spec.from"),
            (["interface": "eth0", "delay": "1ms", "port": 0], "spec.port"),
            (["interface": "eth0", "delay": "1ms", "port": 70000], "spec.port"),
            (["interface": "eth0", "delay": "1ms", "protocol": "sctp"], "spec.protocol"),
            (["interface": "eth0", "delay": "1ms", "protocol": "icmp", "port": 80], "spec.port"),
            (["interface": "eth0", "delay": "1ms", "netns": "a", "netnsPid": 5], "spec.netnsPid"),
            (["interface": "eth0", "delay": "1ms", "netns": "../etc"], "spec.netns"),
            (["interface": "eth0", "delay": "1ms", "direction": "sideways"], "spec.direction"),
            (["interface": "eth0", "delay": "1ms", "ecn": true], "spec.ecn"),
            (["interface": "eth0", "delay": "1ms", "excludePort": [0]], "spec.excludePort"),
            (["interface": "eth0", "delay": "1ms", "bandwidth": "1mbit"], "spec.bandwidth"),
            (["interface": "eth0", "loss": "1%", "lossGemodel": "1%"], "spec.lossGemodel"),
        ]
        for (fields, field) in cases {
            do {
                _ = try NetworkSpec(from: spec(fields))
                Issue.record("accepted \(fields)")
            } catch let e as AgentError {
                #expect(e.status == 400, "\(fields)")
                #expect(e.field == field, "\(fields): \(e)")
            } catch {
                Issue.record("\(error)")
            }
        }
    }

    @Test func overlap() throws {
        func s(_ f: [String: JSONValue]) throws -> NetworkSpec {
            var all = f
            all["interface"] = "eth0"
            all["delay"] = "1ms"
            return try NetworkSpec(from: .object(all))
        }
        #expect(try s([:]).overlaps(s(["to": "10.0.0.0/8"])))
        #expect(try s(["to": "10.0.0.0/8"]).overlaps(s(["to": "10.1.0.0/16"])))
        #expect(try !s(["to": "10.0.0.0/8"]).overlaps(s(["to": "192.168.0.0/16"])))
        #expect(try !s(["to": "10.0.0.0/8", "port": 80]).overlaps(s(["to": "10.0.0.0/8", "port": 443])))
        #expect(try !s(["protocol": "udp"]).overlaps(s(["protocol": "tcp"])))
        #expect(try !s(["to": "10.0.0.0/8"]).overlaps(s(["to": "2001:db8::/32"])))
    }

    @Test func unitsAndCIDRs() {
        #expect(Units.parseRate("1mbit") == 125_000)
        #expect(Units.parseRate("100kbit") == 12_500)
        #expect(Units.parseRate("10MB/s") == 10_000_000)
        #expect(Units.parseRate("1MiB/s") == 1_048_576)
        #expect(Units.parseRate("1") == nil)
        #expect(Units.parseRate("0mbit") == nil)
        #expect(CIDR("10.1.2.3/16")?.description == "10.1.0.0/16")
        #expect(CIDR("2001:db8::1/32")?.description == "2001:db8::/32")
        #expect(CIDR("10.0.0.1")?.prefix == 32)
        #expect(CIDR("10.0.0.0/8")!.contains(CIDR("10.1.0.0/16")!))
        #expect(!CIDR("10.1.0.0/16")!.contains(CIDR("10.0.0.0/8")!))
        #expect(CIDR("10.0.0.0/+8") == nil)
        #expect(CIDR("/8") == nil)
    }
}
