import AgentAPI
import AgentCore
import Foundation
import Logging
import Netlink

/// `network`: netem (or tbf for a pure bandwidth limit) on an interface, over rtnetlink, for all its traffic or only
/// the targeted part, never for SSH unless told so; the interface's previous root qdisc comes back exactly.
///
/// The tree on the device (our reserved majors 0x4341.. "CA", below the kernel's auto range 0x8000+) is shared by up
/// to 13 faults with disjoint targets, one band ("slot") each:
/// ```
/// root prio 4341: bands 16 (default priomap: unclassified traffic goes to bands 0-2 as before)
///   band 4+s (classid 4341:<4+s>) -> netem/tbf <4342+s>:      for slot s = 0...12
/// filters at 4341:  prio 100(s+1)...   slot s's exclusions (SSH, --exclude-port, --exclude-to), each narrowed to
///                                       the slot's target                              -> 4341:1 (a normal band)
///                   then                slot s's target (or all IPv4 and IPv6; never ARP) -> 4341:<4+s>
/// ```
/// The first fault on an interface installs the root (after snapshotting the one it replaces); later ones only add
/// their band and filters; the last one to go removes the root and restores the snapshot, which every fault's plan
/// carries, so any of them can be last, also after a crash. Ingress faults build the same tree on an ifb
/// (`ca-ifb<ifindex>`) that the interface's ingress is redirected to. Apply and revert hold one lock, so two faults'
/// changes to one tree never interleave.
public struct NetworkDriver: FaultDriver {
    public let kind = "network"
    public var preparesFromLivePlans: Bool { true }
    let host: HostFacts
    let logger: Logger
    /// This agent instance's marks: the majors and ifb names of the trees it installs (see `AgentInstance`).
    let marks: TreeMarks

    /// The handles and ifb names of one agent instance's trees. Plans carry theirs (plans journaled before instances
    /// existed have none: the legacy 4341: marks).
    struct TreeMarks: Codable, Sendable, Equatable {
        var rootMajor: UInt16
        var ifbLegacy: Bool

        static let legacy = TreeMarks(rootMajor: AgentInstance.legacyMajor, ifbLegacy: true)

        init(rootMajor: UInt16, ifbLegacy: Bool) {
            self.rootMajor = rootMajor
            self.ifbLegacy = ifbLegacy
        }

        init(_ instance: AgentInstance) {
            self.init(rootMajor: instance.tcMajor, ifbLegacy: instance.isLegacy)
        }

        var instance: AgentInstance { AgentInstance(id: "", tcMajor: rootMajor, stateDir: "") }
        var firstFaultMajor: UInt16 { rootMajor + 1 }
        var rootHandle: UInt32 { TCHandle.make(major: rootMajor, minor: 0) }
        var passClass: UInt32 { TCHandle.make(major: rootMajor, minor: 1) }
        func faultClass(slot: Int) -> UInt32 { TCHandle.make(major: rootMajor, minor: UInt16(4 + slot)) }
        func faultHandle(slot: Int) -> UInt32 { TCHandle.make(major: firstFaultMajor + UInt16(slot), minor: 0) }
        /// The slot a fault qdisc's handle belongs to, or nil if the handle is not one of this instance's.
        func slot(ofHandle handle: UInt32) -> Int? {
            let major = Int(TCHandle.major(handle)) - Int(firstFaultMajor)
            return (0..<NetworkDriver.slots).contains(major) && TCHandle.minor(handle) == 0 ? major : nil
        }
        /// `ca-ifb<ifindex>` (legacy) or `ca<major>i<ifindex hex>`: deterministic, so a revert after a crash finds it
        /// without a journaled index.
        func ifbName(_ ifindex: Int32) -> String {
            ifbLegacy ? "ca-ifb\(ifindex)" : instance.ifbName(ifindex)
        }
        func ifindex(ofIFB name: String) -> Int32? {
            ifbLegacy ? (name.hasPrefix("ca-ifb") ? Int32(name.dropFirst(6)) : nil) : instance.ifindex(ofIFB: name)
        }
        var describeRoot: String { String(format: "%x:", rootMajor) }
    }

    static let bands = 16
    /// Bands 4...16 carry faults.
    static let slots = 13
    // The legacy marks (the default state directory's), for tests and descriptions.
    static var rootMajor: UInt16 { TreeMarks.legacy.rootMajor }
    static var rootHandle: UInt32 { TreeMarks.legacy.rootHandle }
    static var passClass: UInt32 { TreeMarks.legacy.passClass }
    static func faultClass(slot: Int) -> UInt32 { TreeMarks.legacy.faultClass(slot: slot) }
    static func faultHandle(slot: Int) -> UInt32 { TreeMarks.legacy.faultHandle(slot: slot) }
    static func slot(ofHandle handle: UInt32) -> Int? { TreeMarks.legacy.slot(ofHandle: handle) }
    /// Filter priorities of slot `s`: 100(s+1) ..< 100(s+2).
    static func priorities(slot: Int) -> Range<UInt16> { UInt16(100 * (slot + 1))..<UInt16(100 * (slot + 2)) }
    static let sshPort: UInt16 = 22
    /// Serializes every change to the trees this driver manages (apply and revert may run concurrently otherwise).
    static let treeLock = NSLock()

    /// One filter of the tree.
    struct Rule: Codable, Sendable, Equatable {
        var priority: UInt16
        var etherType: UInt16
        var match: U32Match
        var classID: UInt32
        /// "u32" or "flower".
        var classifier: String
    }

    struct Plan: Codable, Sendable, Equatable {
        var namespace: NetworkNamespace
        /// The namespace's inode: faults reaching one namespace by name and by pid still meet.
        var namespaceInode: UInt64
        var interface: String
        var ifindex: Int32
        /// Ingress faults shape an ifb (`ca-ifb<ifindex>`) that the interface's ingress is redirected to.
        var ingress: Bool
        var slot: Int
        var selector: TrafficSelector
        /// The root qdisc before the first fault on this tree; nil when it was the kernel's default (deleting ours
        /// brings it back).
        var snapshot: Qdisc?
        var netem: Netem?
        var tbf: TBF?
        var rules: [Rule]
        var excludedPorts: [UInt16]
        /// The instance marks the tree was built with (nil: journaled before instances existed, the legacy marks).
        var marks: TreeMarks? = nil

        var treeMarks: TreeMarks { marks ?? .legacy }

        func sharesTree(with other: Plan) -> Bool {
            namespaceInode == other.namespaceInode && ifindex == other.ifindex && ingress == other.ingress
        }
    }

    /// `auto`, `u32` or `flower` (the `[network] classifier` setting).
    let classifier: String
    /// TCP ports excluded unless `noDefaultExclusions`: SSH and the agent's own remote listener.
    let defaultExcludedPorts: [UInt16]

    public init(
        host: HostFacts, logger: Logger, classifier: String = "auto", agentPorts: [UInt16] = [],
        instance: AgentInstance = .derive(stateDir: AgentInstance.defaultStateDir)
    ) {
        self.host = host
        self.logger = logger
        marks = TreeMarks(instance)
        self.classifier = classifier
        var ports = [Self.sshPort]
        for p in agentPorts where !ports.contains(p) { ports.append(p) }
        defaultExcludedPorts = ports
    }

    /// flower parses real headers (IPv4 options, IPv6 extension headers); u32 is everywhere.
    var usesFlower: Bool { classifier == "flower" || classifier == "auto" && host.trafficControl?["flower"] == true }

    public func availability() -> KindAvailability {
        let tc = host.trafficControl ?? [:]
        if !host.netlink {
            return KindAvailability(kind: kind, available: false, reason: "no rtnetlink socket could be opened")
        }
        if host.euid != 0 && !host.capabilities.contains("CAP_NET_ADMIN") {
            return KindAvailability(kind: kind, available: false, reason: "the agent lacks CAP_NET_ADMIN")
        }
        let missing = ["netem", "prio", usesFlower ? "flower" : "u32"].filter { tc[$0] != true }
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
        guard let nsInode = Self.inode(of: namespace) else { throw AgentError.refused("\(namespace) does not exist") }
        let nl = try Self.open(namespace)
        guard let ifindex = try Self.call({ try nl.linkIndex(named: spec.interface) }) else {
            throw AgentError.refused("no interface '\(spec.interface)' in \(namespace)", field: "spec.interface")
        }
        let excluded = (spec.noDefaultExclusions ? [] : defaultExcludedPorts) + spec.excludePorts
        let selector = spec.selector
        if let port = selector.port, excluded.contains(port),
            spec.noDefaultExclusions || !defaultExcludedPorts.contains(port) || selector.ipProtocol != .udp
        {
            throw AgentError.refused(
                "port \(port) is excluded (\(spec.noDefaultExclusions ? "--exclude-port" : "the lock-out guard: SSH and the agent's listener")), so the fault would touch nothing; \(defaultExcludedPorts.contains(port) ? "pass noDefaultExclusions (--no-default-exclusions) to fault it on purpose" : "drop it from excludePort")",
                field: "spec.port")
        }
        if let to = selector.to, let cover = spec.excludeTo.first(where: { $0.contains(to) }) {
            throw AgentError.refused("\(to) lies inside excludeTo \(cover), so the fault would touch nothing", field: "spec.to")
        }

        // Faults already on this tree: the new one must target disjoint traffic and gets a free band.
        let siblings = context.livePlans.compactMap { id, json in (try? json.decode(Plan.self)).map { (id, $0) } }
            .filter { $0.1.namespaceInode == nsInode && $0.1.ifindex == ifindex && $0.1.ingress == ingress }
            .sorted { $0.0 < $1.0 }
        let where_ = "\(spec.interface) (\(spec.direction.rawValue))"
        if let (id, other) = siblings.first(where: { $0.1.selector.overlaps(selector) }) {
            throw AgentError.conflict(
                "\(where_) already carries network fault \(id) on \(other.selector), which overlaps \(selector); target disjoint traffic (--to/--from/--port/--protocol) or revert it first")
        }
        let used = Set(siblings.map(\.1.slot))
        let claimPrefix = "netdev:\(nsInode):\(ifindex):\(spec.direction.rawValue):slot"
        guard let slot = (0..<Self.slots).first(where: { !used.contains($0) && context.heldClaims["\(claimPrefix)\($0)"] == nil }) else {
            throw AgentError.conflict("\(where_) already carries \(Self.slots) network faults, the most one interface takes")
        }

        var snapshot: Qdisc?
        if let first = siblings.first {
            snapshot = first.1.snapshot  // the tree is ours already; every fault on it carries the original root
        } else {
            snapshot = try Self.checkUntouched(nl, spec: spec, ifindex: ifindex, ingress: ingress, marks)
        }
        let rules = try Self.rules(
            selector, excludedPorts: excluded, tcpOnly: spec.noDefaultExclusions ? [] : Set(defaultExcludedPorts),
            excludeTo: spec.excludeTo, slot: slot, flower: usesFlower, marks: marks)
        let plan = Plan(
            namespace: namespace, namespaceInode: nsInode, interface: spec.interface, ifindex: ifindex, ingress: ingress,
            slot: slot, selector: selector, snapshot: snapshot,
            netem: spec.isRateOnly ? nil : try Self.netem(spec), tbf: spec.isRateOnly ? Self.tbf(spec) : nil,
            rules: rules, excludedPorts: excluded, marks: marks)
        if spec.noDefaultExclusions {
            logger.warning(
                "network fault WITHOUT default exclusions: SSH (port 22) and the agent's listener will be faulted too",
                metadata: ["event": "lockout-guard-off", "owner": "\(context.owner)", "interface": "\(spec.interface)"])
        }
        let target: JSONValue = [
            "interface": .string(spec.interface), "ifindex": .number(Double(ifindex)), "namespace": .string("\(namespace)"),
            "direction": .string(spec.direction.rawValue), "device": .string(ingress ? marks.ifbName(ifindex) : spec.interface),
            "traffic": .string(selector.description),
            "qdisc": .string(plan.netem != nil ? "netem" : "tbf"),
            "handle": .string(TCHandle.describe(marks.faultHandle(slot: slot))),
            "band": .string(TCHandle.describe(marks.faultClass(slot: slot))),
            "previousRoot": .string(snapshot.map { "\($0.kind) \(TCHandle.describe($0.handle))" } ?? "kernel default"),
            "sharedWith": .array(siblings.map { .string($0.0) }),
            "excludedPorts": .array(excluded.map { .number(Double($0)) }),
            "classifier": .string(usesFlower ? "flower" : "u32"),
            "rules": .number(Double(plan.rules.count)),
        ]
        return PreparedFault(target: target, plan: try JSONValue.from(plan), claims: ["\(claimPrefix)\(slot)"])
    }

    /// For the first fault on a tree: what is there must be something we can restore, and not ours. Returns the root
    /// to snapshot (nil for the kernel's default).
    static func checkUntouched(
        _ nl: RTNetlink, spec: NetworkSpec, ifindex: Int32, ingress: Bool, _ m: TreeMarks = .legacy
    ) throws -> Qdisc? {
        let all = try call { try nl.qdiscs(ifindex: ifindex) }
        if ingress {
            if let hook = all.first(where: { $0.parent == TCHandle.ingress }) {
                throw AgentError.refused(
                    "\(spec.interface) already has an \(hook.kind) qdisc (someone else's ingress hook); it is left untouched")
            }
            if try call({ try nl.linkIndex(named: m.ifbName(ifindex)) }) != nil {
                throw AgentError.conflict(
                    "\(m.ifbName(ifindex)) exists but no active fault owns it; the agent removes it at its next start, or `chaos-agentd reap`")
            }
            return nil
        }
        guard let root = all.first(where: { $0.isRoot }), !root.isKernelDefault else { return nil }
        if TCHandle.major(root.handle) == m.rootMajor {
            throw AgentError.conflict(
                "\(spec.interface) carries a chaos-agent qdisc (handle \(m.describeRoot)) that no active fault owns; the agent removes it at its next start, or `chaos-agentd reap`")
        }
        if AgentInstance.isAgentRootMajor(TCHandle.major(root.handle)) {
            throw AgentError.conflict(
                "\(spec.interface) carries another chaos-agent instance's fault tree (root \(root.kind) \(TCHandle.describe(root.handle))); this agent leaves it alone")
        }
        if let why = root.restoreLimitation {
            throw AgentError.refused(
                "\(spec.interface) has a root qdisc '\(root.kind)' (handle \(TCHandle.describe(root.handle))) that the agent cannot restore faithfully: \(why); it is left untouched")
        }
        if root.handle != 0, let child = all.first(where: { !$0.isRoot && TCHandle.major($0.parent) == TCHandle.major(root.handle) }) {
            throw AgentError.refused(
                "\(spec.interface)'s root qdisc '\(root.kind)' has a child qdisc '\(child.kind)' under \(TCHandle.describe(child.parent)); the agent snapshots only single qdiscs, so it is left untouched")
        }
        return root
    }

    public func apply(plan json: JSONValue) async throws -> PreparedFault? {
        let plan = try json.decode(Plan.self)
        try Self.treeLock.withLock { try applyLocked(plan) }
        return nil
    }

    func applyLocked(_ plan: Plan) throws {
        let m = plan.treeMarks
        let nl = try Self.open(plan.namespace)
        var device = plan.ifindex
        if plan.ingress {
            let name = m.ifbName(plan.ifindex)
            if let ifb = try Self.call({ try nl.linkIndex(named: name) }) {
                device = ifb
            } else {
                try Self.call { try nl.createIFB(named: name) }
                guard let ifb = try Self.call({ try nl.linkIndex(named: name) }) else {
                    throw AgentError.failed("created \(name) but cannot find it")
                }
                try Self.call { try nl.setLinkUp(index: ifb) }
                device = ifb
            }
        }
        // Root, band qdisc and filters go to the kernel in one datagram.
        var batch = NetlinkBatch()
        let root = try Self.call { try nl.qdiscs(ifindex: device) }.first(where: { $0.isRoot })
        if let root, TCHandle.major(root.handle) == m.rootMajor {
            guard root.kind == "prio", case .prio(let bands, _)? = root.options, bands == Self.bands else {
                throw AgentError.failed("\(plan.interface)'s root \(m.describeRoot) is a \(root.kind), not the agent's 16-band prio")
            }
        } else {
            // The root must still be what prepare saw (another tool may have changed it since).
            let now = root.flatMap { $0.isKernelDefault ? nil : $0 }
            if now?.kind != plan.snapshot?.kind || now?.handle != plan.snapshot?.handle {
                throw AgentError.failed(
                    "\(plan.interface)'s root qdisc changed since the fault was prepared (now \(now.map { "\($0.kind) \(TCHandle.describe($0.handle))" } ?? "the kernel default")); nothing applied")
            }
            try Self.call {
                try batch.addQdisc(
                    ifindex: device, parent: TCHandle.root, handle: m.rootHandle,
                    options: .prio(bands: Self.bands, priomap: QdiscOptions.defaultPriomap),
                    mode: plan.snapshot == nil ? .exclusive : .replace)
            }
        }
        let options: QdiscOptions = plan.netem.map { .netem($0) } ?? .tbf(plan.tbf!)
        try Self.call {
            try batch.addQdisc(
                ifindex: device, parent: m.faultClass(slot: plan.slot), handle: m.faultHandle(slot: plan.slot),
                options: options, mode: .exclusive)
        }
        for r in plan.rules {
            try Self.call {
                if r.classifier == "flower" {
                    try batch.addFlowerFilter(
                        ifindex: device, parent: m.rootHandle, priority: r.priority, protocol: r.etherType, match: r.match,
                        classID: r.classID, action: nil)
                } else {
                    try batch.addU32Filter(
                        ifindex: device, parent: m.rootHandle, priority: r.priority, protocol: r.etherType, match: r.match,
                        classID: r.classID, action: nil)
                }
            }
        }
        if plan.ingress, device != plan.ifindex {
            // Last: only once the ifb's tree is complete does the interface's ingress start flowing through it.
            let hooked = try Self.call { try nl.qdiscs(ifindex: plan.ifindex) }.contains { $0.parent == TCHandle.ingress }
            var redirected = false
            if hooked {
                redirected = try Self.call { try nl.filters(ifindex: plan.ifindex, parent: TCHandle.clsactIngress) }
                    .contains { $0.actions.contains(.mirredRedirectEgress(toIfindex: device)) }
            }
            if !hooked { try Self.call { try batch.addClsact(ifindex: plan.ifindex) } }
            if !redirected {
                try Self.call {
                    try batch.addU32Filter(
                        ifindex: plan.ifindex, parent: TCHandle.clsactIngress, priority: 1, protocol: EtherType.all,
                        match: .all, classID: nil, action: .mirredRedirectEgress(toIfindex: device))
                }
            }
        }
        try Self.call { try nl.perform(batch) }
        try verify(plan, nl, treeIndex: device)
    }

    /// Reads the tree back from the kernel and compares it with what was asked: a mismatch fails the apply.
    func verify(_ plan: Plan, _ nl: RTNetlink, treeIndex: Int32) throws {
        let m = plan.treeMarks
        if plan.ingress {
            let hook = try Self.call { try nl.filters(ifindex: plan.ifindex, parent: TCHandle.clsactIngress) }
            guard hook.contains(where: { $0.actions.contains(.mirredRedirectEgress(toIfindex: treeIndex)) }) else {
                throw AgentError.failed("verify: no mirred redirect from \(plan.interface)'s ingress to \(m.ifbName(plan.ifindex))")
            }
        }
        let qdiscs = try Self.call { try nl.qdiscs(ifindex: treeIndex) }
        guard let root = qdiscs.first(where: { $0.isRoot }), root.handle == m.rootHandle, root.kind == "prio" else {
            throw AgentError.failed("verify: the root qdisc of \(plan.interface) is not our prio \(m.describeRoot) after apply")
        }
        let handle = m.faultHandle(slot: plan.slot), band = m.faultClass(slot: plan.slot)
        guard let child = qdiscs.first(where: { $0.handle == handle }), child.parent == band else {
            throw AgentError.failed(
                "verify: no fault qdisc \(TCHandle.describe(handle)) under \(TCHandle.describe(band)) on \(plan.interface)")
        }
        switch (plan.netem, plan.tbf, child.options) {
        case (let want?, nil, .netem(let got)?):
            guard want.matches(dumped: got) else { throw AgentError.failed("verify: the kernel holds netem \(got), not \(want)") }
        case (nil, let want?, .tbf(let got)?):
            guard want.matches(dumped: got) else { throw AgentError.failed("verify: the kernel holds tbf \(got), not \(want)") }
        default:
            throw AgentError.failed("verify: the fault qdisc on \(plan.interface) is \(child.kind), not what was asked")
        }
        let filters = try Self.call { try nl.filters(ifindex: treeIndex, parent: m.rootHandle) }
        for r in plan.rules {
            guard filters.contains(where: { $0.priority == r.priority && $0.classID == r.classID && $0.kind == r.classifier })
            else {
                throw AgentError.failed(
                    "verify: \(r.classifier) filter prio \(r.priority) to \(TCHandle.describe(r.classID)) is missing on \(plan.interface)")
            }
        }
    }

    public func revert(plan json: JSONValue) async throws {
        let plan = try json.decode(Plan.self)
        try Self.treeLock.withLock { try revertLocked(plan) }
    }

    func revertLocked(_ plan: Plan) throws {
        let m = plan.treeMarks
        let nl: RTNetlink
        do { nl = try Self.open(plan.namespace) } catch let e as AgentError where e.status == 422 {
            return  // the namespace is gone, and the tree with it
        }
        guard Self.inode(of: plan.namespace) == plan.namespaceInode else {
            return  // the name or pid now leads to another namespace: ours is gone, and the tree with it
        }
        guard let name = try Self.call({ try nl.linkName(index: plan.ifindex) }), name == plan.interface else {
            if plan.ingress, let ifb = try Self.call({ try nl.linkIndex(named: m.ifbName(plan.ifindex)) }) {
                try Self.call { try nl.deleteLink(index: ifb) }
            }
            return  // the interface is gone (or was replaced): nothing of ours is left on it
        }
        let device: Int32
        if plan.ingress {
            guard let ifb = try Self.call({ try nl.linkIndex(named: m.ifbName(plan.ifindex)) }) else {
                try Self.removeIngressHook(nl, ifindex: plan.ifindex, m)  // a redirect to nowhere must not stay
                return
            }
            device = ifb
        } else {
            device = plan.ifindex
        }
        let othersRemain = try Self.removeSlot(plan.slot, nl, device: device, m)
        if othersRemain { return }
        if plan.ingress {
            try Self.removeIngressHook(nl, ifindex: plan.ifindex, m)
            return
        }
        try Self.restoreRoot(plan, nl)
    }

    /// Removes slot `slot`'s filters (first: no packet may be classified into a band without its qdisc) and its
    /// qdisc from the tree on `device`. Returns whether other slots still carry faults there.
    static func removeSlot(_ slot: Int, _ nl: RTNetlink, device: Int32, _ m: TreeMarks = .legacy) throws -> Bool {
        let qdiscs = try call { try nl.qdiscs(ifindex: device) }
        guard qdiscs.contains(where: { $0.isRoot && $0.handle == m.rootHandle }) else { return false }
        let present = try call { try nl.filters(ifindex: device, parent: m.rootHandle) }
        var filters = NetlinkBatch()
        var seen = Set<[UInt16]>()
        for f in present where priorities(slot: slot).contains(f.priority) && seen.insert([f.priority, f.protocol]).inserted {
            filters.deleteFilter(ifindex: device, parent: m.rootHandle, priority: f.priority, protocol: f.protocol)
        }
        try call { try nl.perform(filters) }
        let handle = m.faultHandle(slot: slot)
        if qdiscs.contains(where: { $0.handle == handle }) {
            try call { try nl.deleteQdisc(ifindex: device, parent: m.faultClass(slot: slot), handle: handle) }
        }
        return qdiscs.contains { $0.handle != handle && TCHandle.major($0.parent) == m.rootMajor && m.slot(ofHandle: $0.handle) != nil }
    }

    /// Re-creates a snapshotted root: nil when the kernel took it, the kernel's refusal when retrying cannot change it
    /// (EINVAL, ENOENT: no such kind, EOPNOTSUPP); other errors are thrown.
    static func putBack(_ snap: Qdisc, mode: QdiscMode, _ nl: RTNetlink) throws -> NetlinkError? {
        let refusal: NetlinkError
        do {
            try nl.addQdisc(raw: snap, mode: mode)
            return nil
        } catch {
            refusal = error  // typed: addQdisc throws only NetlinkError
        }
        guard [EINVAL, ENOENT, EOPNOTSUPP].contains(refusal.errno) else { throw AgentError.failed("\(refusal)") }
        return refusal
    }

    /// The last fault on an egress tree: delete our root and bring back the snapshot, byte for byte.
    static func restoreRoot(_ plan: Plan, _ nl: RTNetlink) throws {
        let m = plan.treeMarks
        let before = try call { try nl.qdiscs(ifindex: plan.ifindex) }
        if before.contains(where: { $0.isRoot && $0.handle == m.rootHandle }) {
            try call { try nl.deleteQdisc(ifindex: plan.ifindex, parent: TCHandle.root, handle: m.rootHandle) }
        }
        if let snap = plan.snapshot {
            let now = try call { try nl.qdiscs(ifindex: plan.ifindex) }.first(where: { $0.isRoot })
            if now?.handle != snap.handle || now?.kind != snap.kind {
                let mode: QdiscMode = now?.isKernelDefault ?? true ? .exclusive : .replace
                if let e = try putBack(snap, mode: mode, nl) {
                    // The kernel refuses the old root itself (its kind is gone after a kernel change, its options
                    // are invalid now): retrying can never help. Once our tree is proven gone the lease ends as
                    // failed, loudly, instead of retrying for ever.
                    let root = try call { try nl.qdiscs(ifindex: plan.ifindex) }.first(where: { $0.isRoot })
                    if let root, TCHandle.major(root.handle) == m.rootMajor { throw AgentError.failed("\(e)") }
                    let current = root.map { "\($0.kind) \(TCHandle.describe($0.handle))" } ?? "the kernel default"
                    throw PermanentRevertFailure(
                        "the fault's tree on \(plan.interface) is removed, but its previous root \(snap.kind) "
                            + "\(TCHandle.describe(snap.handle)) cannot be put back (\(e)); \(plan.interface) has \(current) "
                            + "now: restore it by hand")
                }
            }
            let restored = try call { try nl.qdiscs(ifindex: plan.ifindex) }.first(where: { $0.isRoot })
            guard let r = restored, r.kind == snap.kind, r.handle == snap.handle, r.rawOptions == snap.rawOptions else {
                throw AgentError.failed("restore: \(plan.interface)'s root is \(restored?.kind ?? "none"), not the \(snap.kind) it had")
            }
        } else {
            let root = try call { try nl.qdiscs(ifindex: plan.ifindex) }.first(where: { $0.isRoot })
            if let root, TCHandle.major(root.handle) == m.rootMajor {
                throw AgentError.failed("restore: our qdisc is still the root of \(plan.interface)")
            }
        }
    }

    /// Removes what carries this instance's marks (its majors, its ifb names; never another instance's) and no live
    /// lease explains, in the agent's namespace, every namespace
    /// under /run/netns, and every other network namespace a process is in: whole trees (and ingress ifbs) on
    /// interfaces without a live fault, and single bands (qdisc and filters) on trees that still carry live ones. The
    /// root a lost tree replaced is not known (its snapshot was in the lost journal entry), so the kernel's default
    /// comes back; said so in the line.
    public func reconcileOrphans(livePlans: [JSONValue]) async -> [String] {
        guard host.netlink else { return [] }
        return Self.treeLock.withLock { reconcileLocked(livePlans.compactMap { try? $0.decode(Plan.self) }) }
    }

    func reconcileLocked(_ live: [Plan]) -> [String] {
        let m = marks
        var removed: [String] = []
        for ns in Self.allNamespaces() {
            guard let inode = Self.inode(of: ns), let nl = try? RTNetlink(namespace: ns), let links = try? nl.links() else { continue }
            func liveSlots(_ ifindex: Int32, ingress: Bool) -> Set<Int> {
                Set(live.filter { $0.namespaceInode == inode && $0.ifindex == ifindex && $0.ingress == ingress && $0.treeMarks == m }
                    .map(\.slot))
            }
            for link in links {
                let ifbOf = m.ifindex(ofIFB: link.name)
                let slots = liveSlots(ifbOf ?? link.index, ingress: ifbOf != nil)
                if let real = ifbOf, slots.isEmpty {
                    do {
                        try Self.removeIngressHook(nl, ifindex: real, m)
                        removed.append("ingress redirect of ifindex \(real) to \(link.name), and \(link.name), in \(ns)")
                    } catch {
                        removed.append("FAILED to remove \(link.name) in \(ns): \(error)")
                    }
                    continue
                }
                guard let qdiscs = try? nl.qdiscs(ifindex: link.index),
                    let root = qdiscs.first(where: { $0.isRoot }), TCHandle.major(root.handle) == m.rootMajor
                else { continue }
                if slots.isEmpty {
                    do {
                        try nl.deleteQdisc(ifindex: link.index, parent: TCHandle.root, handle: root.handle)
                        removed.append(
                            "\(root.kind) \(TCHandle.describe(root.handle)) root of \(link.name) in \(ns) (its previous root is unknown; the kernel default is back)")
                    } catch {
                        removed.append("FAILED to remove \(root.kind) \(TCHandle.describe(root.handle)) on \(link.name) in \(ns): \(error)")
                    }
                    continue
                }
                for q in qdiscs {
                    guard let slot = m.slot(ofHandle: q.handle), !slots.contains(slot) else { continue }
                    do {
                        _ = try Self.removeSlot(slot, nl, device: link.index, m)
                        removed.append("band \(TCHandle.describe(m.faultClass(slot: slot))) (\(q.kind)) of \(link.name) in \(ns)")
                    } catch {
                        removed.append("FAILED to remove band \(TCHandle.describe(m.faultClass(slot: slot))) on \(link.name) in \(ns): \(error)")
                    }
                }
            }
        }
        return removed
    }

    /// The legacy ifb name, `ca-ifb<ifindex>` (see `TreeMarks.ifbName`).
    static func ifbName(_ ifindex: Int32) -> String { TreeMarks.legacy.ifbName(ifindex) }

    /// Stops redirecting the interface's ingress, then deletes the ifb, in that order: an ingress redirected to a
    /// device that no longer exists drops every packet. The clsact hook is deleted (with its filters) unless a filter
    /// redirects to some other existing device (someone else's); then only our filter goes. The dump also lists u32's
    /// hash-table entries, which carry no action: only actions count.
    static func removeIngressHook(_ nl: RTNetlink, ifindex: Int32, _ m: TreeMarks = .legacy) throws {
        let ifb = try call { try nl.linkIndex(named: m.ifbName(ifindex)) }
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

    /// The inode of a namespace's file (`/proc/self/ns/net` for the agent's own): what identifies it.
    static func inode(of ns: NetworkNamespace) -> UInt64? { inode(ns.path ?? "/proc/self/ns/net") }

    static func inode(_ path: String) -> UInt64? {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    /// The agent's own namespace, the named ones, and one process per other namespace found in /proc.
    static func allNamespaces() -> [NetworkNamespace] {
        var out: [NetworkNamespace] = [.current]
        var seen = Set<UInt64>()
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

    /// Slot `slot`'s filters: its exclusions (lower priority numbers win), each narrowed to the slot's own target so
    /// that it never exempts another fault's traffic, then the target itself; per IP version the target needs.
    /// Ports in `tcpOnly` (the default SSH exclusion: SSH and the agent's listener are TCP) are excluded for TCP only,
    /// the others (`--exclude-port`) for TCP and UDP.
    /// With flower, a port without a protocol becomes one TCP and one UDP filter (flower parses real headers; u32
    /// assumes IPv4 without options and IPv6 without extension headers).
    static func rules(
        _ target: TrafficSelector, excludedPorts: [UInt16], tcpOnly: Set<UInt16> = [], excludeTo: [CIDR], slot: Int,
        flower: Bool, marks: TreeMarks = .legacy
    ) throws -> [Rule] {
        let passClass = marks.passClass
        var rules: [Rule] = []
        let range = priorities(slot: slot)
        var prio = range.lowerBound
        let families: [CIDR.Family] = target.family.map { [$0] } ?? [.ipv4, .ipv6]
        func add(_ family: CIDR.Family, _ sel: TrafficSelector, sourcePort: UInt16? = nil, _ classID: UInt32) {
            let v6 = family == .ipv6
            let ether = v6 ? EtherType.ipv6 : EtherType.ipv4
            let protocols: [UInt8?]
            if let p = sel.ipProtocol {
                protocols = [p.number(ipv6: v6)]
            } else if flower, sel.port != nil || sourcePort != nil {
                protocols = [6, 17]
            } else {
                protocols = [nil]
            }
            for proto in protocols {
                let match = U32Match(
                    source: sel.from.map(prefix), destination: sel.to.map(prefix), ipProtocol: proto, sourcePort: sourcePort,
                    destinationPort: sel.port)
                // Every rule has its own priority: the kernel keeps one protocol per priority.
                rules.append(Rule(priority: prio, etherType: ether, match: match, classID: classID, classifier: flower ? "flower" : "u32"))
                prio += 1
            }
        }
        for port in excludedPorts {
            var base = target
            if tcpOnly.contains(port) {
                guard target.ipProtocol == nil || target.ipProtocol == .tcp else { continue }  // disjoint from TCP
                base.ipProtocol = .tcp
            } else if target.ipProtocol == .icmp {
                continue  // ICMP has no ports
            }
            for family in families {
                if base.port == nil {
                    var sel = base
                    sel.port = port
                    add(family, sel, passClass)
                }
                add(family, base, sourcePort: port, passClass)
            }
        }
        for cidr in excludeTo where families.contains(cidr.family) {
            var sel = target
            if let to = target.to {
                guard to.overlaps(cidr) else { continue }  // disjoint: nothing of the target to exempt
                sel.to = to.prefix >= cidr.prefix ? to : cidr
            } else {
                sel.to = cidr
            }
            add(cidr.family, sel, passClass)
        }
        for family in families { add(family, target, marks.faultClass(slot: slot)) }
        guard prio <= range.upperBound else {
            throw AgentError.badRequest(
                "the exclusions and target need \(rules.count) filters; one fault may have at most \(range.count)", field: "spec")
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
