import CShims
import Foundation

/// Where the agent keeps its own cgroups: one per lease (`lease-<id>`), never inside anybody else's subtree.
///
/// - Under systemd with `Delegate=yes` the agent's own cgroup is its to manage: the agent moves itself into the leaf
///   `<own>/agent` (the no-internal-process rule forbids controllers for children of a cgroup holding processes) and
///   creates lease cgroups beside it, `<own>/lease-<id>`.
/// - Otherwise (run by hand, or by systemd without delegation) it creates its own subtree under the root,
///   `/chaos-agent-<hash of its state directory>`, so two agents with different state directories never share one.
public struct AgentSubtree: Sendable, Equatable {
    public static let controllers = ["cpu", "memory", "io", "pids"]
    public static let leasePrefix = "lease-"

    /// The cgroup that holds the lease cgroups.
    public let base: String
    /// True when `base` is the agent's own delegated cgroup (the agent then lives in `base/agent`).
    public let delegated: Bool

    public init(base: String, delegated: Bool) {
        self.base = base
        self.delegated = delegated
    }

    /// Decides where the subtree goes. `ownCgroup` from /proc/self/cgroup; `delegated` when systemd delegated it
    /// (see `isDelegated`). An agent already living in `<X>/agent` (a previous set-up) keeps `<X>` as its base.
    public static func locate(ownCgroup: String?, delegated: Bool, stateDir: String) -> AgentSubtree {
        if delegated, let own = ownCgroup, own != "/" {
            let base = own.hasSuffix("/agent") ? String(own.dropLast("/agent".count)) : own
            return AgentSubtree(base: base.isEmpty ? "/" : base, delegated: true)
        }
        return AgentSubtree(base: "/chaos-agent-" + hash(stateDir), delegated: false)
    }

    /// systemd (v251+) marks a cgroup it delegated with the `trusted.delegate` extended attribute.
    public static func isDelegated(_ fs: CgroupFS, _ cgroup: String) -> Bool {
        var buf = [UInt8](repeating: 0, count: 8)
        for name in ["trusted.delegate", "user.delegate"] {
            let n = cshim_getxattr(fs.directory(cgroup), name, &buf, UInt(buf.count))
            if n > 0, buf[0] == UInt8(ascii: "1") { return true }
        }
        return false
    }

    /// FNV-1a of the state directory, 8 hex digits: stable across runs and releases.
    public static func hash(_ s: String) -> String {
        var h: UInt32 = 0x811c_9dc5
        for b in s.utf8 {
            h ^= UInt32(b)
            h = h &* 0x0100_0193
        }
        return String(format: "%08x", h)
    }

    /// Creates the subtree and enables the controllers for lease cgroups. Delegated: moves `selfPID` into
    /// `base/agent` first. By hand: enables the controllers top-down from the root.
    public func setUp(_ fs: CgroupFS, selfPID: Int32, controllers wanted: [String] = controllers) throws {
        if delegated {
            let leaf = base == "/" ? "/agent" : base + "/agent"
            try fs.create(leaf)
            if fs.procs(leaf).contains(selfPID) == false { try fs.write(leaf, "cgroup.procs", String(selfPID)) }
            // Anything else systemd started in the unit's cgroup (there should be nothing) goes to the leaf too.
            for pid in fs.procs(base) { try? fs.write(leaf, "cgroup.procs", String(pid)) }
            try fs.enable(wanted.filter { fs.controllers(base).contains($0) }, in: base)
        } else {
            let available = Set(fs.controllers("/"))
            let usable = wanted.filter { available.contains($0) }
            try fs.enable(usable, in: "/")
            try fs.create(base)
            try fs.enable(usable, in: base)
        }
    }

    public func lease(_ id: String) -> String { (base == "/" ? "" : base) + "/" + Self.leasePrefix + id }

    /// The lease cgroups that exist now.
    public func leases(_ fs: CgroupFS) -> [String] {
        fs.children(base).filter { $0.hasPrefix(Self.leasePrefix) }.map { (base == "/" ? "" : base) + "/" + $0 }
    }
}
