/// Which network namespace an `RTNetlink` socket talks to.
public enum NetworkNamespace: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The namespace of the calling process.
    case current
    /// A namespace bind-mounted at `/run/netns/NAME` (what `ip netns add NAME` creates).
    case named(String)
    /// The namespace of process `PID` (`/proc/PID/ns/net`), e.g. a container's.
    case pid(Int32)

    /// The file to open and setns(2) into; nil for `.current`.
    public var path: String? {
        switch self {
        case .current: return nil
        case .named(let name): return "/run/netns/\(name)"
        case .pid(let pid): return "/proc/\(pid)/ns/net"
        }
    }

    public var description: String {
        switch self {
        case .current: return "current netns"
        case .named(let name): return "netns \(name)"
        case .pid(let pid): return "netns of pid \(pid)"
        }
    }

    /// Names a namespace we will open: rejects names that would escape /run/netns.
    var validated: NetworkNamespace? {
        switch self {
        case .current: return self
        case .named(let name):
            return name.isEmpty || name.contains("/") || name == "." || name == ".." ? nil : self
        case .pid(let pid): return pid > 0 ? self : nil
        }
    }
}
