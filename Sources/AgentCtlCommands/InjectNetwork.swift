import AgentAPI
import ArgumentParser
import Foundation

/// `inject network`: netem/tbf on an interface, optionally only for some traffic.
struct InjectNetwork: InjectKind {
    static let configuration = CommandConfiguration(
        commandName: "network",
        abstract: "Delay, drop, duplicate, corrupt, reorder or rate-limit traffic on an interface.",
        discussion: """
            Installed directly over rtnetlink; the interface's previous qdisc tree comes back exactly at the end. \
            By default SSH (port 22) and the agent's own listener are never touched (--exclude-port and \
            --exclude-to add more; --no-default-exclusions removes them, loudly). With --to/--from/--port/--protocol \
            only that traffic is faulted. Several faults may share an interface when their traffic is disjoint \
            (different --to, --port, ...); one that could overlap an active fault is refused (exit 3) naming it. \
            Percentages: 5%, 0.5%. Rates: 1mbit, 100kbit, 10MB/s.

            EXAMPLES
              chaos-agentctl inject network --interface eth0 --delay 100ms --jitter 10ms --loss 1% \\
                  --to 10.1.0.0/16 --port 5432 --ttl 5m
              chaos-agentctl inject network --interface eth0 --delay 300ms --to 10.2.0.0/16 --ttl 5m   # beside the first
              chaos-agentctl inject network --interface eth0 --rate 1mbit --ttl 2m
              chaos-agentctl inject network --interface eth0 --direction ingress --loss 20% --ttl 1m
              chaos-agentctl inject network --netns blue --interface veth0 --delay 50ms --ttl 30s --wait
            """
    )
    static let kind = "network"

    @Option(help: ArgumentHelp("The interface (resolved inside --netns/--netns-pid when given).", valueName: "name"))
    var interface: String
    @Option(help: ArgumentHelp("A network namespace under /run/netns.", valueName: "name"))
    var netns: String?
    @Option(help: ArgumentHelp("The network namespace of this process (a container's).", valueName: "pid"))
    var netnsPid: Int32?
    @Option(help: ArgumentHelp("egress (default) or ingress.", valueName: "dir"))
    var direction: String?

    @Option(help: ArgumentHelp("Added latency.", valueName: "duration")) var delay: String?
    @Option(help: ArgumentHelp("Latency variation (needs --delay).", valueName: "duration")) var jitter: String?
    @Option(help: ArgumentHelp("Correlation of successive delays.", valueName: "percent")) var correlation: String?
    @Option(help: ArgumentHelp("Delay distribution: uniform, normal, pareto, paretonormal.", valueName: "name"))
    var distribution: String?
    @Option(help: ArgumentHelp("Random packet loss.", valueName: "percent")) var loss: String?
    @Option(help: ArgumentHelp("Correlation of successive losses.", valueName: "percent")) var lossCorrelation: String?
    @Option(help: ArgumentHelp("Gilbert-Elliott loss: p[,r[,1-h[,1-k]]] as percentages.", valueName: "p,r,..."))
    var lossGemodel: String?
    @Option(help: ArgumentHelp("Duplicated packets.", valueName: "percent")) var duplicate: String?
    @Option(help: ArgumentHelp("Corrupted packets (one bit flipped).", valueName: "percent")) var corrupt: String?
    @Option(help: ArgumentHelp("Packets sent at once, ahead of the delayed ones (needs --delay).", valueName: "percent"))
    var reorder: String?
    @Option(help: ArgumentHelp("Reorder every Nth packet.", valueName: "n")) var gap: Int?
    @Option(help: ArgumentHelp("Bandwidth limit.", valueName: "rate")) var rate: String?
    @Option(help: ArgumentHelp("Per-packet overhead for --rate, in bytes.", valueName: "bytes")) var packetOverhead: Int?
    @Flag(help: "Mark ECN-capable packets instead of dropping them (with --loss).") var ecn = false
    @Option(help: ArgumentHelp("Queue limit in packets (default 1000).", valueName: "packets")) var limit: Int?

    @Option(help: ArgumentHelp("Only traffic to this network.", valueName: "cidr")) var to: String?
    @Option(help: ArgumentHelp("Only traffic from this network.", valueName: "cidr")) var from: String?
    @Option(help: ArgumentHelp("Only traffic to or from this port.", valueName: "port")) var port: Int?
    @Option(name: .customLong("protocol"), help: ArgumentHelp("Only tcp, udp or icmp.", valueName: "proto"))
    var ipProtocol: String?
    @Option(help: ArgumentHelp("Never fault this port (repeatable).", valueName: "port")) var excludePort: [Int] = []
    @Option(help: ArgumentHelp("Never fault traffic to this network (repeatable).", valueName: "cidr"))
    var excludeTo: [String] = []
    @Flag(help: "Also fault SSH and the agent's own listener (logged loudly).") var noDefaultExclusions = false

    @OptionGroup(title: "Fault") var inject: InjectOptions
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if netns != nil && netnsPid != nil { throw ValidationError("give --netns or --netns-pid, not both") }
        for (flag, value) in [("--delay", delay), ("--jitter", jitter)] {
            if let value { try validateDuration(value, flag: flag) }
        }
        for (flag, value) in [
            ("--loss", loss), ("--duplicate", duplicate), ("--corrupt", corrupt), ("--reorder", reorder),
            ("--correlation", correlation), ("--loss-correlation", lossCorrelation),
        ] {
            if let value, Units.parsePercent(value) == nil {
                throw ValidationError("invalid \(flag) '\(value)': write a percentage such as 5% or 0.5%")
            }
        }
        if let rate, Units.parseRate(rate) == nil {
            throw ValidationError("invalid --rate '\(rate)': write 1mbit, 100kbit or 10MB/s")
        }
    }

    func spec() throws -> [String: JSONValue] {
        var s: [String: JSONValue] = ["interface": .string(interface)]
        let strings: [(String, String?)] = [
            ("netns", netns), ("direction", direction), ("delay", delay), ("jitter", jitter), ("correlation", correlation),
            ("distribution", distribution), ("loss", loss), ("lossCorrelation", lossCorrelation),
            ("lossGemodel", lossGemodel), ("duplicate", duplicate), ("corrupt", corrupt), ("reorder", reorder),
            ("rate", rate), ("to", to), ("from", from), ("protocol", ipProtocol),
        ]
        for (key, value) in strings { if let value { s[key] = .string(value) } }
        let numbers: [(String, Int?)] = [
            ("netnsPid", netnsPid.map(Int.init)), ("gap", gap), ("packetOverhead", packetOverhead), ("limit", limit),
            ("port", port),
        ]
        for (key, value) in numbers { if let value { s[key] = .number(Double(value)) } }
        if ecn { s["ecn"] = .bool(true) }
        if !excludePort.isEmpty { s["excludePort"] = .array(excludePort.map { .number(Double($0)) }) }
        if !excludeTo.isEmpty { s["excludeTo"] = .array(excludeTo.map { .string($0) }) }
        if noDefaultExclusions { s["noDefaultExclusions"] = .bool(true) }
        return s
    }
}
