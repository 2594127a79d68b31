import AgentAPI
import AgentCore
import Netlink
import Testing

@testable import Faults

/// The filters a network fault installs (pure: no kernel needed), and the slot arithmetic that lets several faults
/// share one interface's tree.
@Suite("network tree: rules and slots")
struct NetworkTreeTests {
    func sel(to: String? = nil, from: String? = nil, port: UInt16? = nil, proto: NetworkSpec.IPProtocol? = nil) -> TrafficSelector {
        TrafficSelector(to: to.flatMap(CIDR.init), from: from.flatMap(CIDR.init), port: port, ipProtocol: proto)
    }

    @Test("the issue's example: SSH exclusions narrowed to the target, then the target, all in slot 0's priorities")
    func issueExample() throws {
        let rules = try NetworkDriver.rules(sel(to: "10.1.0.0/16", port: 5432), excludedPorts: [22], excludeTo: [], slot: 0, flower: false)
        // dport 22 can't meet a target on dport 5432, so only the sport-22 exclusion and the target remain.
        #expect(rules.count == 2)
        #expect(rules.map(\.priority) == [100, 101])
        #expect(rules[0].classID == NetworkDriver.passClass)
        #expect(rules[0].match == U32Match(destination: IPPrefix("10.1.0.0/16"), sourcePort: 22, destinationPort: 5432))
        #expect(rules[1].classID == NetworkDriver.faultClass(slot: 0))
        #expect(rules[1].match == U32Match(destination: IPPrefix("10.1.0.0/16"), destinationPort: 5432))
        #expect(rules.allSatisfy { $0.etherType == EtherType.ipv4 && $0.classifier == "u32" })
    }

    @Test("an untargeted fault: bare exclusions for both IP versions, then all IPv4 and all IPv6 (never ARP)")
    func untargeted() throws {
        let rules = try NetworkDriver.rules(sel(), excludedPorts: [22], excludeTo: [CIDR("192.0.2.0/24")!], slot: 3, flower: false)
        #expect(rules.count == 4 + 1 + 2)
        #expect(rules.allSatisfy { NetworkDriver.priorities(slot: 3).contains($0.priority) })
        #expect(Set(rules.map(\.priority)).count == rules.count)
        #expect(rules.filter { $0.classID == NetworkDriver.passClass }.count == 5)
        #expect(rules.suffix(2).map(\.etherType) == [EtherType.ipv4, EtherType.ipv6])
        #expect(rules.suffix(2).allSatisfy { $0.match == .all && $0.classID == NetworkDriver.faultClass(slot: 3) })
        #expect(!rules.contains { $0.etherType == EtherType.all })
    }

    @Test("the default SSH exclusion is TCP only (fewer filters), and left out for a UDP or ICMP target")
    func tcpOnlyDefault() throws {
        let all = try NetworkDriver.rules(sel(), excludedPorts: [22, 53], tcpOnly: [22], excludeTo: [], slot: 0, flower: true)
        let pass = all.filter { $0.classID == NetworkDriver.passClass }
        // 22: TCP dport + sport per family (4); 53: TCP and UDP, dport + sport, per family (8).
        #expect(pass.count == 12)
        #expect(pass.filter { $0.match.destinationPort == 22 || $0.match.sourcePort == 22 }.allSatisfy { $0.match.ipProtocol == 6 })
        let u32 = try NetworkDriver.rules(sel(to: "10.0.0.0/8"), excludedPorts: [22], tcpOnly: [22], excludeTo: [], slot: 0, flower: false)
        #expect(u32.count == 3 && u32[0].match == U32Match(destination: IPPrefix("10.0.0.0/8"), ipProtocol: 6, destinationPort: 22))
        let udp = try NetworkDriver.rules(sel(proto: .udp), excludedPorts: [22], tcpOnly: [22], excludeTo: [], slot: 0, flower: false)
        #expect(udp.allSatisfy { $0.classID != NetworkDriver.passClass })
    }

    @Test("excludeTo: narrowed to the target's network, dropped when disjoint")
    func excludeTo() throws {
        let inside = try NetworkDriver.rules(sel(to: "10.0.0.0/8"), excludedPorts: [], excludeTo: [CIDR("10.9.0.0/16")!], slot: 0, flower: false)
        #expect(inside.count == 2 && inside[0].match.destination == IPPrefix("10.9.0.0/16"))
        let disjoint = try NetworkDriver.rules(sel(to: "10.0.0.0/8"), excludedPorts: [], excludeTo: [CIDR("192.0.2.0/24")!], slot: 0, flower: false)
        #expect(disjoint.count == 1)
        let otherFamily = try NetworkDriver.rules(sel(to: "10.0.0.0/8"), excludedPorts: [], excludeTo: [CIDR("2001:db8::/32")!], slot: 0, flower: false)
        #expect(otherFamily.count == 1)
    }

    @Test("flower: ports without a protocol become a TCP and a UDP filter; ICMP over IPv6 is ICMPv6")
    func flower() throws {
        let rules = try NetworkDriver.rules(sel(to: "2001:db8::/32", port: 443), excludedPorts: [22], excludeTo: [], slot: 1, flower: true)
        #expect(rules.allSatisfy { $0.classifier == "flower" && $0.etherType == EtherType.ipv6 })
        #expect(rules.map(\.match.ipProtocol) == [6, 17, 6, 17])
        #expect(rules.first?.priority == 200)
        let icmp = try NetworkDriver.rules(sel(proto: .icmp), excludedPorts: [22], excludeTo: [], slot: 0, flower: true)
        // No port exclusions for ICMP; one rule per IP version with the right protocol number.
        #expect(icmp.map(\.match.ipProtocol) == [1, 58])
    }

    @Test("too many exclusions for one slot's priority range are refused")
    func tooMany() {
        let ports = (1...16).map(UInt16.init)
        let cidrs = (0..<16).map { CIDR("10.\($0).0.0/16")! }
        #expect(throws: AgentError.self) {
            try NetworkDriver.rules(sel(), excludedPorts: ports + ports.map { $0 + 100 }, excludeTo: cidrs, slot: 0, flower: true)
        }
    }

    @Test("slots: 13 bands 4341:4...4341:10 with handles 4342:...434e:, disjoint priority ranges")
    func slots() {
        #expect(NetworkDriver.faultClass(slot: 0) == 0x4341_0004 && NetworkDriver.faultClass(slot: 12) == 0x4341_0010)
        #expect(NetworkDriver.faultHandle(slot: 12) == 0x434e_0000)
        #expect((0..<13).allSatisfy { NetworkDriver.slot(ofHandle: NetworkDriver.faultHandle(slot: $0)) == $0 })
        #expect(NetworkDriver.slot(ofHandle: NetworkDriver.rootHandle) == nil && NetworkDriver.slot(ofHandle: 0x434f_0000) == nil)
        #expect(NetworkDriver.priorities(slot: 0).upperBound == NetworkDriver.priorities(slot: 1).lowerBound)
    }

    @Test("selectors overlap unless some field tells them apart")
    func overlap() {
        #expect(sel().overlaps(sel(to: "10.0.0.0/8")))
        #expect(!sel(to: "10.0.0.0/8").overlaps(sel(to: "192.168.0.0/16")))
        #expect(!sel(port: 80).overlaps(sel(port: 443)))
        #expect(!sel(port: 80).overlaps(sel(proto: .icmp)))
        #expect(sel(port: 80).overlaps(sel(proto: .tcp)))
        #expect(!sel(from: "10.0.0.0/8").overlaps(sel(to: "2001:db8::/32")))
        #expect(sel(to: "10.1.2.3/32").description == "to 10.1.2.3/32")
    }
}
