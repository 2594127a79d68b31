import AgentAPI
import AgentCore
import Foundation
import Logging
import Netlink

/// `network`: netem (or tbf for a pure bandwidth limit) on an interface, over rtnetlink, for all its traffic or only
/// the targeted part, never for SSH unless told so; the interface's previous root qdisc comes back exactly.
///
/// The tree it installs on the device (our reserved major 0x4341 "CA", below the kernel's auto range 0x8000+):
/// ```
/// root prio 4341: bands 4 (default priomap: unclassified traffic goes to bands 0-2 as before)
///   band 4 (classid 4341:4) -> netem/tbf 4342:
/// filters at 4341:  prio 1..   exclusions (SSH, --exclude-port, --exclude-to) -> 4341:1 (a normal band)
///                   prio 100.. the target (or all IPv4 and IPv6; never ARP)  -> 4341:4
/// ```
public struct NetworkDriver: FaultDriver {
    public let kind = "network"
    let host: HostFacts
    let logger: Logger

    static let rootMajor: UInt16 = 0x4341
    static let faultMajor: UInt16 = 0x4342
    static var rootHandle: UInt32 { TCHandle.make(major: rootMajor, minor: 0) }
    static var faultHandle: UInt32 { TCHandle.make(major: faultMajor, minor: 0) }
    static var passClass: UInt32 { TCHandle.make(major: rootMajor, minor: 1) }
    static var faultClass: UInt32 { TCHandle.make(major: rootMajor, minor: 4) }
    static let defaultExcludedPorts: [UInt16] = [22]

    /// One u32 rule of the tree.
    struct Rule: Codable, Sendable, Equatable {
        var priority: UInt16
        var etherType: UInt16
        var match: U32Match
        var classID: UInt32
    }

    struct Plan: Codable, Sendable, Equatable {
        var namespace: NetworkNamespace
        var interface: String
        var ifindex: Int32
        /// Ingress faults shape an ifb (`ca-ifb<ifindex>`) that the interface's ingress is redirected to.
        var ingress: Bool = false
        /// The root qdisc before the fault; nil when it was the kernel's default (deleting ours brings it back).
        var snapshot: Qdisc?
        var netem: Netem?
        var tbf: TBF?
        var rules: [Rule]
        var excludedPorts: [UInt16]
    }

    public init(host: HostFacts, logger: Logger) {
        self.host = host
        self.logger = logger
    }

    public func availability() -> KindAvailability {
        let tc = host.trafficControl ?? [:]
        if !host.netlink {
            return KindAvailability(kind: kind, available: false, reason: "no rtnetlink socket could be opened")
        }
        if host.euid != 0 && !host.capabilities.contains("CAP_NET_ADMIN") {
            return KindAvailability(kind: kind, available: false, reason: "the agent lacks CAP_NET_ADMIN")
        }
        let missing = ["netem", "prio", "u32"].filter { tc[$0] != true }
        if !missing.isEmpty {
            return KindAvailability(
                kind: kind, available: false,
                reason: "this kernel has no \(missing.map { "sch/cls \($0)" }.joined(separator: ", ")) (built in or as a module)")
        }
        return KindAvailability(kind: kind, available: true)
    }

    public func prepare(spec json: JSONValue, context: FaultContext) throws -> PreparedFault {
        let spec = try NetworkSpec(from: json)
        let ingress = spec.direction == .ingress
        if ingress, (host.trafficControl ?? [:]).filter({ ["ifb", "mirred", "clsact"].contains($0.key) && $0.value }).count < 3 {
            throw AgentError.unsupported("ingress faults need ifb, act_mirred and clsact, which this kernel lacks")
        }
        let namespace: NetworkNamespace
        if let n = spec.netns {
            guard FileManager.default.fileExists(atPath: "/run/netns/\(n)") else {
                throw AgentError.refused("no network namespace '\(n)' under /run/netns", field: "spec.netns")
            }
            namespace = .named(n)
        } else if let p = spec.netnsPid {
            guard FileManager.default.fileExists(atPath: "/proc/\(p)/ns/net") else {
                throw AgentError.refused("no process \(p) whose network namespace could be joined", field: "spec.netnsPid")
            }
            namespace = .pid(p)
        } else {
            namespace = .current
        }
        let nl = try Self.open(namespace)
        guard let ifindex = try Self.call({ try nl.linkIndex(named: spec.interface) }) else {
            throw AgentError.refused("no interface '\(spec.interface)' in \(namespace)", field: "spec.interface")
        }
        let claim = "netdev:\(namespace):\(ifindex):\(spec.direction.rawValue)"
        if let holder = context.heldClaims[claim] {
            throw AgentError.conflict(
                "\(spec.interface) already carries \(spec.direction.rawValue) network fault \(holder); revert it first (one per interface and direction in this version)")
        }
        let all = try Self.call { try nl.qdiscs(ifindex: ifindex) }
        var snapshot: Qdisc?
        if ingress {
            if let hook = all.first(where: { $0.parent == TCHandle.ingress }) {
                throw AgentError.refused(
                    "\(spec.interface) already has an \(hook.kind) qdisc (someone else's ingress hook); it is left untouched")
            }
            if try Self.call({ try nl.linkIndex(named: Self.ifbName(ifindex)) }) != nil {
                throw AgentError.conflict(
                    "\(Self.ifbName(ifindex)) exists but no active fault owns it; the agent removes it at its next start, or `chaos-agentd reap`")
            }
        } else if let root = all.first(where: { $0.isRoot }) {
            if TCHandle.major(root.handle) == Self.rootMajor {
                throw AgentError.conflict(
                    "\(spec.interface) carries a chaos-agent qdisc (handle 4341:) that no active fault owns; the agent removes it at its next start, or `chaos-agentd reap`")
            }
            if !root.isKernelDefault {
                if let why = root.restoreLimitation {
                    throw AgentError.refused(
                        "\(spec.interface) has a root qdisc '\(root.kind)' (handle \(TCHandle.describe(root.handle))) that the agent cannot restore faithfully: \(why); it is left untouched")
                }
                if root.handle != 0, let child = all.first(where: { !$0.isRoot && TCHandle.major($0.parent) == TCHandle.major(root.handle) }) {
                    throw AgentError.refused(
                        "\(spec.interface)'s root qdisc '\(root.kind)' has a child qdisc '\(child.kind)' under \(TCHandle.describe(child.parent)); the agent snapshots only single qdiscs, so it is left untouched")
                }
                snapshot = root
            }
        }
        let excluded = (spec.noDefaultExclusions ? [] : Self.defaultExcludedPorts) + spec.excludePorts
        let plan = Plan(
            namespace: namespace, interface: spec.interface, ifindex: ifindex, ingress: ingress, snapshot: snapshot,
            netem: spec.isRateOnly ? nil : try Self.netem(spec), tbf: spec.isRateOnly ? Self.tbf(spec) : nil,
            rules: Self.rules(spec, excludedPorts: excluded), excludedPorts: excluded)
        if spec.noDefaultExclusions {
            logger.warning(
                "network fault WITHOUT default exclusions: SSH (port 22) will be faulted too",
                metadata: ["event": "lockout-guard-off", "owner": "\(context.owner)", "interface": "\(spec.interface)"])
        }
        let target: JSONValue = [
            "interface": .string(spec.interface), "ifindex": .number(Double(ifindex)), "namespace": .string("\(namespace)"),
            "direction": .string(spec.direction.rawValue), "device": .string(ingress ? Self.ifbName(ifindex) : spec.interface),
            "qdisc": .string(plan.netem != nil ? "netem" : "tbf"),
            "previousRoot": .string(snapshot.map { "\($0.kind) \(TCHandle.describe($0.handle))" } ?? "kernel default"),
            "excludedPorts": .array(excluded.map { .number(Double($0)) }),
            "rules": .number(Double(plan.rules.count)),
        ]
        return PreparedFault(target: target, plan: try JSONValue.from(plan), claims: [claim])
    }

    public func apply(plan json: JSONValue) async throws -> PreparedFault? {
        let plan = try json.decode(Plan.self)
        let nl = try Self.open(plan.namespace)
        var i = plan.ifindex
        if plan.ingress {
            let name = Self.ifbName(plan.ifindex)
            try Self.call { try nl.createIFB(named: name) }
            guard let ifb = try Self.call({ try nl.linkIndex(named: name) }) else {
                throw AgentError.failed("created \(name) but cannot find it")
            }
            try Self.call { try nl.setLinkUp(index: ifb) }
            i = ifb
        }
        try Self.call {
            try nl.addQdisc(
                ifindex: i, parent: TCHandle.root, handle: Self.rootHandle,
                options: .prio(bands: 4, priomap: QdiscOptions.defaultPriomap),
                mode: plan.snapshot == nil ? .exclusive : .replace)
        }
        let options: QdiscOptions = plan.netem.map { .netem($0) } ?? .tbf(plan.tbf!)
        try Self.call { try nl.addQdisc(ifindex: i, parent: Self.faultClass, handle: Self.faultHandle, options: options, mode: .exclusive) }
        for r in plan.rules {
            try Self.call {
                try nl.addU32Filter(
                    ifindex: i, parent: Self.rootHandle, priority: r.priority, protocol: r.etherType, match: r.match,
                    classID: r.classID, action: nil)
            }
        }
        if plan.ingress {
            // Last: only once the ifb's tree is complete does the interface's ingress start flowing through it.
            try Self.call { try nl.addClsact(ifindex: plan.ifindex) }
            try Self.call {
                try nl.addU32Filter(
                    ifindex: plan.ifindex, parent: TCHandle.clsactIngress, priority: 1, protocol: EtherType.all,
                    match: .all, classID: nil, action: .mirredRedirectEgress(toIfindex: i))
            }
        }
        try verify(plan, nl, treeIndex: i)
        return nil
    }

    /// Reads the tree back from the kernel and compares it with what was asked: a mismatch fails the apply.
    func verify(_ plan: Plan, _ nl: RTNetlink, treeIndex: Int32) throws {
        if plan.ingress {
            let hook = try Self.call { try nl.filters(ifindex: plan.ifindex, parent: TCHandle.clsactIngress) }
            guard hook.contains(where: { $0.actions.contains(.mirredRedirectEgress(toIfindex: treeIndex)) }) else {
                throw AgentError.failed("verify: no mirred redirect from \(plan.interface)'s ingress to \(Self.ifbName(plan.ifindex))")
            }
        }
        let qdiscs = try Self.call { try nl.qdiscs(ifindex: treeIndex) }
        guard let root = qdiscs.first(where: { $0.isRoot }), root.handle == Self.rootHandle, root.kind == "prio" else {
            throw AgentError.failed("verify: the root qdisc of \(plan.interface) is not our prio 4341: after apply")
        }
        guard let child = qdiscs.first(where: { $0.handle == Self.faultHandle }), child.parent == Self.faultClass else {
            throw AgentError.failed("verify: no fault qdisc 4342: under 4341:4 on \(plan.interface)")
        }
        switch (plan.netem, plan.tbf, child.options) {
        case (let want?, nil, .netem(let got)?):
            guard want.matches(dumped: got) else { throw AgentError.failed("verify: the kernel holds netem \(got), not \(want)") }
        case (nil, let want?, .tbf(let got)?):
            guard want.matches(dumped: got) else { throw AgentError.failed("verify: the kernel holds tbf \(got), not \(want)") }
        default:
            throw AgentError.failed("verify: the fault qdisc on \(plan.interface) is \(child.kind), not what was asked")
        }
        let filters = try Self.call { try nl.filters(ifindex: treeIndex, parent: Self.rootHandle) }
        for r in plan.rules {
            guard filters.contains(where: { $0.priority == r.priority && $0.classID == r.classID && $0.kind == "u32" }) else {
                throw AgentError.failed("verify: filter prio \(r.priority) to \(TCHandle.describe(r.classID)) is missing on \(plan.interface)")
            }
        }
    }

    public func revert(plan json: JSONValue) async throws {
        let plan = try json.decode(Plan.self)
        let nl: RTNetlink
        do { nl = try Self.open(plan.namespace) } catch let e as AgentError where e.status == 422 {
            return  // the namespace is gone, and the tree with it
        }
        guard let name = try Self.call({ try nl.linkName(index: plan.ifindex) }), name == plan.interface else {
            if plan.ingress, let ifb = try Self.call({ try nl.linkIndex(named: Self.ifbName(plan.ifindex)) }) {
                try Self.call { try nl.deleteLink(index: ifb) }
            }
            return  // the interface is gone (or was replaced): nothing of ours is left on it
        }
        if plan.ingress {
            try Self.removeIngressHook(nl, ifindex: plan.ifindex)
            return
        }
        let before = try Self.call { try nl.qdiscs(ifindex: plan.ifindex) }
        if before.contains(where: { $0.isRoot && $0.handle == Self.rootHandle }) {
            try Self.call { try nl.deleteQdisc(ifindex: plan.ifindex, parent: TCHandle.root, handle: Self.rootHandle) }
        }
        if let snap = plan.snapshot {
            let now = try Self.call { try nl.qdiscs(ifindex: plan.ifindex) }.first(where: { $0.isRoot })
            if now?.handle != snap.handle || now?.kind != snap.kind {
                try Self.call { try nl.addQdisc(raw: snap, mode: now?.isKernelDefault ?? true ? .exclusive : .replace) }
            }
            let restored = try Self.call { try nl.qdiscs(ifindex: plan.ifindex) }.first(where: { $0.isRoot })
            guard let r = restored, r.kind == snap.kind, r.handle == snap.handle, r.rawOptions == snap.rawOptions else {
                throw AgentError.failed("restore: \(plan.interface)'s root is \(restored?.kind ?? "none"), not the \(snap.kind) it had")
            }
        } else {
            let root = try Self.call { try nl.qdiscs(ifindex: plan.ifindex) }.first(where: { $0.isRoot })
            if let root, TCHandle.major(root.handle) == Self.rootMajor {
                throw AgentError.failed("restore: our qdisc is still the root of \(plan.interface)")
            }
        }
    }

    /// Removes root qdiscs with our reserved major (4341:) that no live lease explains, in the agent's namespace, every
    /// namespace under /run/netns, and every other network namespace a process is in. The root they replaced is not
    /// known (its snapshot was in the lost journal entry), so the kernel's default comes back; said so in the line.
    public func reconcileOrphans(livePlans: [JSONValue]) async -> [String] {
        guard host.netlink else { return [] }
        let live = Set(livePlans.compactMap { try? $0.decode(Plan.self) }.map { "\($0.namespace)|\($0.ifindex)" })
        var removed: [String] = []
        for ns in Self.allNamespaces() {
            guard let nl = try? RTNetlink(namespace: ns), let links = try? nl.links() else { continue }
            for link in links where link.name.hasPrefix("ca-ifb") {
                guard let real = Int32(link.name.dropFirst(6)), !live.contains("\(ns)|\(real)") else { continue }
                do {
                    try Self.removeIngressHook(nl, ifindex: real)
                    removed.append("ingress redirect of ifindex \(real) to \(link.name), and \(link.name), in \(ns)")
                } catch {
                    removed.append("FAILED to remove \(link.name) in \(ns): \(error)")
                }
            }
            for link in links where !link.name.hasPrefix("ca-ifb") {
                guard !live.contains("\(ns)|\(link.index)"), let qdiscs = try? nl.qdiscs(ifindex: link.index),
                    let root = qdiscs.first(where: { $0.isRoot }), TCHandle.major(root.handle) == Self.rootMajor
                else { continue }
                do {
                    try nl.deleteQdisc(ifindex: link.index, parent: TCHandle.root, handle: root.handle)
                    removed.append(
                        "\(root.kind) \(TCHandle.describe(root.handle)) root of \(link.name) in \(ns) (its previous root is unknown; the kernel default is back)")
                } catch {
                    removed.append("FAILED to remove \(root.kind) \(TCHandle.describe(root.handle)) on \(link.name) in \(ns): \(error)")
                }
            }
        }
        return removed
    }

    /// `ca-ifb<ifindex>`: deterministic, so a revert after a crash finds it without a journaled index.
    static func ifbName(_ ifindex: Int32) -> String { "ca-ifb\(ifindex)" }

    /// Stops redirecting the interface's ingress, then deletes the ifb, in that order: an ingress redirected to a
    /// device that no longer exists drops every packet. The clsact hook is deleted (with its filters) unless a filter
    /// redirects to some other existing device (someone else's); then only our filter goes. The dump also lists u32's
    /// hash-table entries, which carry no action: only actions count.
    static func removeIngressHook(_ nl: RTNetlink, ifindex: Int32) throws {
        let ifb = try call { try nl.linkIndex(named: ifbName(ifindex)) }
        let hasHook = try call { try nl.qdiscs(ifindex: ifindex) }.contains { $0.parent == TCHandle.ingress && $0.kind == "clsact" }
        if hasHook {
            let filters = try call { try nl.filters(ifindex: ifindex, parent: TCHandle.clsactIngress) }
            var foreign = false
            for case .mirredRedirectEgress(let target) in filters.flatMap(\.actions) where target != ifb {
                // A redirect to a device that is gone is a black hole, never something to keep.
                if (try? nl.linkName(index: target)) != nil { foreign = true }
            }
            if !foreign {
                try call { try nl.deleteQdisc(ifindex: ifindex, parent: TCHandle.ingress, handle: TCHandle.clsactHandle) }
            } else {
                try call { try nl.deleteFilter(ifindex: ifindex, parent: TCHandle.clsactIngress, priority: 1, protocol: EtherType.all) }
            }
        }
        if let ifb { try call { try nl.deleteLink(index: ifb) } }
    }

    /// The agent's own namespace, the named ones, and one process per other namespace found in /proc.
    static func allNamespaces() -> [NetworkNamespace] {
        var out: [NetworkNamespace] = [.current]
        var seen = Set<UInt64>()
        func inode(_ path: String) -> UInt64? {
            var st = stat()
            return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
        }
        if let own = inode("/proc/self/ns/net") { seen.insert(own) }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns"))?.sorted() ?? [] {
            if let i = inode("/run/netns/\(name)"), seen.insert(i).inserted { out.append(.named(name)) }
        }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let i = inode("/proc/\(pid)/ns/net"), seen.insert(i).inserted else { continue }
            out.append(.pid(pid))
        }
        return out
    }

    // MARK: - Building the tree

    static func netem(_ s: NetworkSpec) throws -> Netem {
        func p(_ f: Double?) -> Probability { f.flatMap { Probability(fraction: $0) } ?? .zero }
        var n = Netem()
        n.latency = UInt64(s.delayNanos ?? 0)
        n.jitter = UInt64(s.jitterNanos ?? 0)
        n.delayCorrelation = p(s.correlation)
        switch s.distribution {
        case .normal: n.distribution = .normal
        case .pareto: n.distribution = .pareto
        case .paretonormal: n.distribution = .paretoNormal
        case .uniform, nil: n.distribution = .uniform
        }
        if let loss = s.loss {
            n.loss = .random(p(loss), correlation: p(s.lossCorrelation))
        } else if let ge = s.lossGemodel {
            guard let model = Netem.GilbertElliott(p: ge.p, r: ge.r, oneMinusH: ge.oneMinusH, oneMinusK: ge.oneMinusK) else {
                throw AgentError.badRequest("lossGemodel values are out of range", field: "spec.lossGemodel")
            }
            n.loss = .gilbertElliott(model)
        }
        n.duplicate = p(s.duplicate)
        n.duplicateCorrelation = p(s.duplicateCorrelation)
        n.corrupt = p(s.corrupt)
        n.corruptCorrelation = p(s.corruptCorrelation)
        n.reorder = p(s.reorder)
        n.reorderCorrelation = p(s.reorderCorrelation)
        n.gap = s.gap ?? 0
        n.rate = s.rateBytesPerSecond ?? 0
        n.packetOverhead = s.packetOverhead ?? 0
        n.ecn = s.ecn
        n.limit = s.limit ?? 1000
        do { try n.validate() } catch { throw AgentError.badRequest("netem: \(error)", field: "spec") }
        return n
    }

    static func tbf(_ s: NetworkSpec) -> TBF {
        let rate = s.rateBytesPerSecond!
        // A burst of 10 ms at the rate (at least one full-size packet plus headroom), and 50 ms of queue.
        let burst = UInt32(clamping: max(rate / 100, 16 * 1024))
        return TBF(rate: rate, burst: burst, limit: .latency(50_000_000))
    }

    /// Exclusions first (lower priority numbers win), then the target, for IPv4 and IPv6 as the spec needs.
    static func rules(_ s: NetworkSpec, excludedPorts: [UInt16]) -> [Rule] {
        var rules: [Rule] = []
        var prio: UInt16 = 1
        let families: [(UInt16, Bool)] = {
            switch s.to?.family ?? s.from?.family {
            case .ipv4?: return [(EtherType.ipv4, false)]
            case .ipv6?: return [(EtherType.ipv6, true)]
            case nil: return [(EtherType.ipv4, false), (EtherType.ipv6, true)]
            }
        }()
        // Every rule has its own priority: the kernel keeps one protocol per priority.
        func add(_ ether: UInt16, _ match: U32Match, _ classID: UInt32) {
            rules.append(Rule(priority: prio, etherType: ether, match: match, classID: classID))
            prio += 1
        }
        for port in excludedPorts {
            for (ether, _) in families {
                add(ether, U32Match(destinationPort: port), passClass)
                add(ether, U32Match(sourcePort: port), passClass)
            }
        }
        for cidr in s.excludeTo {
            add(cidr.family == .ipv4 ? EtherType.ipv4 : EtherType.ipv6, U32Match(destination: prefix(cidr)), passClass)
        }
        prio = max(prio, 100)
        if !s.isTargeted {
            // IP only: ARP stays unfaulted, or a delayed or lost ARP request would reach SSH after all.
            for (ether, _) in families { add(ether, .all, faultClass) }
        } else {
            for (ether, _) in families {
                add(
                    ether,
                    U32Match(
                        source: s.from.map(prefix), destination: s.to.map(prefix), ipProtocol: s.ipProtocol?.number,
                        destinationPort: s.port),
                    faultClass)
            }
        }
        return rules
    }

    static func prefix(_ c: CIDR) -> IPPrefix { IPPrefix(address: c.address, length: c.prefix)! }

    // MARK: - Errors

    static func open(_ ns: NetworkNamespace) throws -> RTNetlink {
        do { return try RTNetlink(namespace: ns) } catch {
            if error.errno == ENOENT { throw AgentError.refused("\(ns) does not exist") }
            throw AgentError.failed("cannot open rtnetlink in \(ns): \(error)")
        }
    }

    /// Runs a netlink call, turning its error into one that carries the kernel's own words.
    static func call<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as NetlinkError { throw AgentError.failed("\(e)") }
    }
}
