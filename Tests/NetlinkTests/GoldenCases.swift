@testable import Netlink

/// Every request kind with the tc/ip command it was checked against. `ifindex` is the one the capture used.
struct GoldenCase: Sendable, CustomStringConvertible {
    var name: String
    var command: String
    var build: @Sendable (RTNetlink) throws -> Void
    var description: String { name }
}

let ms: UInt64 = 1_000_000
func pct(_ p: Double) -> Probability { Probability(percent: p)! }
func netem(_ edit: (inout Netem) -> Void) -> QdiscOptions {
    var n = Netem()
    edit(&n)
    return .netem(n)
}

/// The netem captures were taken with the device at ifindex 3, the others at ifindex 6.
let goldenCases: [GoldenCase] = [
    GoldenCase(name: "netem_delay", command: "tc qdisc add dev v0 root netem delay 100ms") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem { $0.latency = 100 * ms }, mode: .exclusive)
    },
    GoldenCase(name: "netem_jitter_corr", command: "tc qdisc add dev v0 root netem delay 100ms 10ms 25%") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem {
            $0.latency = 100 * ms; $0.jitter = 10 * ms; $0.delayCorrelation = pct(25)
        }, mode: .exclusive)
    },
    GoldenCase(name: "netem_normal", command: "tc qdisc add dev v0 root netem delay 100ms 10ms distribution normal") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem {
            $0.latency = 100 * ms; $0.jitter = 10 * ms; $0.distribution = .normal
        }, mode: .exclusive)
    },
    GoldenCase(name: "netem_loss_random", command: "tc qdisc add dev v0 root netem loss 1% 25%") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem { $0.loss = .random(pct(1), correlation: pct(25)) }, mode: .exclusive)
    },
    GoldenCase(name: "netem_loss_gemodel", command: "tc qdisc add dev v0 root netem loss gemodel 1% 10% 70% 0.1%") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem {
            $0.loss = .gilbertElliott(.init(p: 0.01, r: 0.10, oneMinusH: 0.70, oneMinusK: 0.001)!)
        }, mode: .exclusive)
    },
    GoldenCase(name: "netem_loss_state", command: "tc qdisc add dev v0 root netem loss state 1% 2% 3% 4% 5%") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem {
            $0.loss = .fourState(.init(p13: pct(1), p31: pct(2), p32: pct(3), p14: pct(5), p23: pct(4)))
        }, mode: .exclusive)
    },
    GoldenCase(name: "netem_duplicate", command: "tc qdisc add dev v0 root netem duplicate 5%") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem { $0.duplicate = pct(5) }, mode: .exclusive)
    },
    GoldenCase(name: "netem_corrupt", command: "tc qdisc add dev v0 root netem corrupt 0.1% 5%") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem {
            $0.corrupt = pct(0.1); $0.corruptCorrelation = pct(5)
        }, mode: .exclusive)
    },
    GoldenCase(name: "netem_reorder_gap", command: "tc qdisc add dev v0 root netem delay 10ms reorder 25% 50% gap 5") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem {
            $0.latency = 10 * ms; $0.reorder = pct(25); $0.reorderCorrelation = pct(50); $0.gap = 5
        }, mode: .exclusive)
    },
    GoldenCase(name: "netem_rate_overhead", command: "tc qdisc add dev v0 root netem rate 1mbit 20 100 5") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem {
            $0.rate = 125_000; $0.packetOverhead = 20; $0.cellSize = 100; $0.cellOverhead = 5
        }, mode: .exclusive)
    },
    GoldenCase(name: "netem_rate64", command: "tc qdisc add dev v0 root netem rate 40gbit") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem { $0.rate = 5_000_000_000 }, mode: .exclusive)
    },
    GoldenCase(name: "netem_ecn", command: "tc qdisc add dev v0 root netem loss 5% ecn") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem { $0.loss = .random(pct(5)); $0.ecn = true }, mode: .exclusive)
    },
    GoldenCase(name: "netem_limit", command: "tc qdisc add dev v0 root netem limit 5000") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: 0, options: netem { $0.limit = 5000 }, mode: .exclusive)
    },
    GoldenCase(name: "tbf", command: "tc qdisc add dev v0 root handle 1: tbf rate 1mbit burst 32kb limit 64kb") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: TCHandle.make(major: 1, minor: 0),
            options: .tbf(TBF(rate: 125_000, burst: 32 * 1024, limit: .bytes(64 * 1024))), mode: .exclusive)
    },
    GoldenCase(name: "prio", command: "tc qdisc add dev v0 root handle 504d: prio bands 5 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1") {
        try $0.addQdisc(ifindex: 6, parent: TCHandle.root, handle: TCHandle.make(major: 0x504d, minor: 0),
            options: .prio(bands: 5, priomap: QdiscOptions.defaultPriomap), mode: .exclusive)
    },
    GoldenCase(name: "clsact", command: "tc qdisc add dev v0 clsact") {
        try $0.addClsact(ifindex: 6)
    },
    GoldenCase(name: "qdisc_del", command: "tc qdisc del dev v0 root handle 504d:") {
        try $0.deleteQdisc(ifindex: 6, parent: TCHandle.root, handle: TCHandle.make(major: 0x504d, minor: 0))
    },
    GoldenCase(name: "qdisc_dump", command: "tc qdisc show dev v0") {
        _ = try $0.qdiscs(ifindex: 6)
    },
    GoldenCase(name: "filter_dump", command: "tc filter show dev v0 parent 504d:") {
        _ = try $0.filters(ifindex: 6, parent: TCHandle.make(major: 0x504d, minor: 0))
    },
    GoldenCase(name: "u32_v4", command: "tc filter add dev v0 parent 504d: prio 10 protocol ip u32 match ip dst 10.1.0.0/16 match ip dport 5432 0xffff flowid 504d:4") {
        try $0.addU32Filter(ifindex: 6, parent: 0x504d_0000, priority: 10, protocol: EtherType.ipv4,
            match: U32Match(destination: IPPrefix("10.1.0.0/16"), destinationPort: 5432), classID: 0x504d_0004, action: nil)
    },
    GoldenCase(name: "u32_v4b", command: "tc filter add dev v0 parent 504d: prio 11 protocol ip u32 match ip src 192.168.1.7/32 match ip protocol 6 0xff match ip sport 22 0xffff match ip dport 80 0xffff flowid 504d:5") {
        try $0.addU32Filter(ifindex: 6, parent: 0x504d_0000, priority: 11, protocol: EtherType.ipv4,
            match: U32Match(source: IPPrefix("192.168.1.7"), ipProtocol: 6, sourcePort: 22, destinationPort: 80), classID: 0x504d_0005, action: nil)
    },
    GoldenCase(name: "u32_v6", command: "tc filter add dev v0 parent 504d: prio 12 protocol ipv6 u32 match ip6 dst 2001:db8::/32 match ip6 protocol 17 0xff match ip6 dport 53 0xffff flowid 504d:4") {
        try $0.addU32Filter(ifindex: 6, parent: 0x504d_0000, priority: 12, protocol: EtherType.ipv6,
            match: U32Match(destination: IPPrefix("2001:db8::/32"), ipProtocol: 17, destinationPort: 53), classID: 0x504d_0004, action: nil)
    },
    GoldenCase(name: "u32_v6src", command: "tc filter add dev v0 parent 504d: prio 13 protocol ipv6 u32 match ip6 src 2001:db8:1:2:3:4:5:6/128 flowid 504d:4") {
        try $0.addU32Filter(ifindex: 6, parent: 0x504d_0000, priority: 13, protocol: EtherType.ipv6,
            match: U32Match(source: IPPrefix("2001:db8:1:2:3:4:5:6/128")), classID: 0x504d_0004, action: nil)
    },
    GoldenCase(name: "u32_mirred", command: "tc filter add dev v0 parent ffff:fff2 prio 1 protocol all u32 match u32 0 0 action mirred egress redirect dev v1") {
        try $0.addU32Filter(ifindex: 6, parent: TCHandle.clsactIngress, priority: 1, protocol: EtherType.all,
            match: .all, classID: nil, action: .mirredRedirectEgress(toIfindex: 5))
    },
    GoldenCase(name: "flower_v4", command: "tc filter add dev v0 parent 504d: prio 20 protocol ip flower ip_proto tcp dst_ip 10.1.0.0/16 dst_port 5432 classid 504d:4") {
        try $0.addFlowerFilter(ifindex: 6, parent: 0x504d_0000, priority: 20, protocol: EtherType.ipv4,
            match: U32Match(destination: IPPrefix("10.1.0.0/16"), ipProtocol: 6, destinationPort: 5432), classID: 0x504d_0004, action: nil)
    },
    GoldenCase(name: "flower_v6", command: "tc filter add dev v0 parent 504d: prio 21 protocol ipv6 flower ip_proto udp src_ip 2001:db8::/32 src_port 53 classid 504d:4") {
        try $0.addFlowerFilter(ifindex: 6, parent: 0x504d_0000, priority: 21, protocol: EtherType.ipv6,
            match: U32Match(source: IPPrefix("2001:db8::/32"), ipProtocol: 17, sourcePort: 53), classID: 0x504d_0004, action: nil)
    },
    GoldenCase(name: "flower_mirred", command: "tc filter add dev v0 parent ffff:fff2 prio 2 protocol all flower action mirred egress redirect dev v1") {
        try $0.addFlowerFilter(ifindex: 6, parent: TCHandle.clsactIngress, priority: 2, protocol: EtherType.all,
            match: .all, classID: nil, action: .mirredRedirectEgress(toIfindex: 5))
    },
    GoldenCase(name: "filter_del", command: "tc filter del dev v0 parent 504d: prio 10 protocol ip") {
        try $0.deleteFilter(ifindex: 6, parent: 0x504d_0000, priority: 10, protocol: EtherType.ipv4)
    },
    GoldenCase(name: "ifb", command: "ip link add name ifb9 type ifb") {
        try $0.createIFB(named: "ifb9")
    },
]
