import AgentAPI
import CCap
import CMNL
import CShims
import Foundation
import Netlink
import Processes

/// Learns at start-up what this host lets the agent do: effective capabilities (libcap), pidfd support, the cgroup v2
/// mount and its controllers, and whether an rtnetlink socket opens (libmnl).
public enum HostProbe {
    static let interestingCaps: [(cap_value_t, String)] = [
        (CAP_KILL, "CAP_KILL"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"), (CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"), (CAP_CHOWN, "CAP_CHOWN"),
        (CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE"), (CAP_SETPCAP, "CAP_SETPCAP"),
    ]

    public static func probe(cgroupRoot: String = "/sys/fs/cgroup") -> HostFacts {
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let (mount, controllers) = cgroup2(root: cgroupRoot)
        return HostFacts(
            kernel: release, euid: geteuid(), capabilities: effectiveCapabilities(),
            pidfd: ProcessSignaller.pidfdSupported, cgroup2Mount: mount, cgroupControllers: controllers,
            netlink: netlinkOpens(), trafficControl: TrafficControlProbe.run() ?? trafficControl(release: release))
    }

    /// The kernel objects each traffic-control piece needs, by module name.
    static let tcModules: [String: String] = [
        "netem": "sch_netem", "prio": "sch_prio", "tbf": "sch_tbf", "u32": "cls_u32", "flower": "cls_flower",
        "ifb": "ifb", "mirred": "act_mirred", "clsact": "sch_ingress",
    ]

    /// Which traffic-control pieces this kernel has, when the kernel cannot be asked directly (`TrafficControlProbe`
    /// needs CAP_SYS_ADMIN): loaded (/sys/module), built in (modules.builtin) or loadable (a .ko under /lib/modules;
    /// the kernel loads it on first use). Without /lib/modules for the running kernel, only what /sys/module shows
    /// counts, which misses built-in pieces without parameters.
    static func trafficControl(release: String, modulesRoot: String = "/lib/modules") -> [String: Bool] {
        let dir = "\(modulesRoot)/\(release)"
        let builtin = (try? String(contentsOfFile: dir + "/modules.builtin", encoding: .utf8)) ?? ""
        let loadable = (try? String(contentsOfFile: dir + "/modules.dep", encoding: .utf8)) ?? ""
        var out: [String: Bool] = [:]
        for (name, module) in tcModules {
            let present =
                FileManager.default.fileExists(atPath: "/sys/module/\(module)")
                || builtin.contains("/\(module).ko") || loadable.contains("/\(module).ko")
            out[name] = present
        }
        return out
    }

    /// Names of the capabilities in `interestingCaps` that are in this process's effective set.
    static func effectiveCapabilities() -> [String] {
        guard let caps = cap_get_proc() else { return [] }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        var out: [String] = []
        for (cap, name) in interestingCaps {
            var value = CAP_CLEAR
            if cap_get_flag(caps, cap, CAP_EFFECTIVE, &value) == 0, value == CAP_SET { out.append(name) }
        }
        return out
    }

    /// The cgroup v2 mount (unified at the root, or hybrid under `unified/`) and its root's controllers.
    static func cgroup2(root: String) -> (String?, [String]) {
        let cgroup2Magic: Int64 = 0x6367_7270
        for candidate in [root, root + "/unified"] {
            guard cshim_fs_type(candidate) == cgroup2Magic else { continue }
            let text = (try? String(contentsOfFile: candidate + "/cgroup.controllers", encoding: .utf8)) ?? ""
            return (candidate, text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
        }
        return (nil, [])
    }

    static func netlinkOpens() -> Bool {
        guard let nl = mnl_socket_open(NETLINK_ROUTE) else { return false }
        mnl_socket_close(nl)
        return true
    }
}
