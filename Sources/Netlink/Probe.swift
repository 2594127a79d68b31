import CShims
import Foundation

/// Asks the kernel which traffic-control pieces it has, by trying each one: in a fresh, empty network namespace
/// (unshare on a thread that exits afterwards, so the namespace goes with it), on its loopback device. The kernel's
/// answer is exact whether a piece is built in, loaded or loadable on demand (a module is loaded by the attempt, as
/// any use would), and it needs no /lib/modules. Needs CAP_SYS_ADMIN (unshare) and CAP_NET_ADMIN.
public enum TrafficControlProbe {
    /// Each piece -> whether the kernel accepted it; nil when the probe itself cannot run (no privilege).
    public static func run() -> [String: Bool]? {
        let result = ProbeResult()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            // This thread alone enters the new namespace and goes back before it reports (as MNLSocket's namespace
            // threads do), so no thread is in it once `run` returns; the namespace ends with the probe's socket.
            let original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
            if original >= 0, cshim_unshare_net() == 0 {
                if let nl = try? RTNetlink(namespace: .current) { result.value = probe(nl) }
                if cshim_setns_net(original) != 0 { result.value = nil }
            }
            if original >= 0 { close(original) }
            done.signal()
        }
        thread.name = "tc-probe"
        thread.start()
        done.wait()
        return result.value
    }

    static func probe(_ nl: RTNetlink) -> [String: Bool] {
        let lo: Int32 = 1  // the only device of a new namespace
        let handle = TCHandle.make(major: 0x4341, minor: 0)
        func accepted(_ body: () throws -> Void) -> Bool {
            do { try body(); return true } catch { return false }
        }
        func rootQdisc(_ options: QdiscOptions) -> Bool {
            let ok = accepted { try nl.addQdisc(ifindex: lo, parent: TCHandle.root, handle: handle, options: options, mode: .exclusive) }
            if ok { _ = accepted { try nl.deleteQdisc(ifindex: lo, parent: TCHandle.root, handle: handle) } }
            return ok
        }
        var out: [String: Bool] = [:]
        var netem = Netem()
        netem.latency = 1_000_000
        out["netem"] = rootQdisc(.netem(netem))
        out["prio"] = rootQdisc(.prio(bands: 3, priomap: QdiscOptions.defaultPriomap))
        out["tbf"] = rootQdisc(.tbf(TBF(rate: 125_000, burst: 16 * 1024, limit: .latency(50_000_000))))
        let clsact = accepted { try nl.addClsact(ifindex: lo) }
        out["clsact"] = clsact
        func filter(_ priority: UInt16, _ add: (UInt16) throws -> Void) -> Bool {
            clsact && accepted { try add(priority) }
        }
        out["u32"] = filter(1) { p in
            try nl.addU32Filter(ifindex: lo, parent: TCHandle.clsactIngress, priority: p, protocol: EtherType.ipv4, match: .all, classID: nil, action: nil)
        }
        out["flower"] = filter(2) { p in
            try nl.addFlowerFilter(ifindex: lo, parent: TCHandle.clsactIngress, priority: p, protocol: EtherType.ipv4, match: .all, classID: nil, action: nil)
        }
        // mirred rides on whichever classifier worked.
        out["mirred"] = filter(3) { p in
            if out["u32"] == true {
                try nl.addU32Filter(
                    ifindex: lo, parent: TCHandle.clsactIngress, priority: p, protocol: EtherType.ipv4, match: .all, classID: nil,
                    action: .mirredRedirectEgress(toIfindex: lo))
            } else {
                try nl.addFlowerFilter(
                    ifindex: lo, parent: TCHandle.clsactIngress, priority: p, protocol: EtherType.ipv4, match: .all, classID: nil,
                    action: .mirredRedirectEgress(toIfindex: lo))
            }
        }
        out["ifb"] = accepted { try nl.createIFB(named: "ca-probe0") }
        return out
    }
}

private final class ProbeResult: @unchecked Sendable {
    var value: [String: Bool]?
}
