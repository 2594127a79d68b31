import AgentAPI
import Foundation
import TOMLKit

/// `[connections]`: how many connections each listener holds, per peer and in all, how long an idle one may stay,
/// and the process's file-descriptor budget. Connections are capped so that the revert path always finds file
/// descriptors: a flood of idle connections is refused at accept (the fd is returned at once), never queued.
public struct ConnectionsConfig: Sendable, Equatable {
    /// Most connections the Unix socket holds at once (root's own connections are counted against `perPeer` only,
    /// so root can always reach its agent).
    public var socket = 256
    /// Most connections the mutual-TLS listener holds at once.
    public var remote = 512
    /// Most connections the metrics listener holds at once.
    public var metrics = 64
    /// Most connections one peer holds on one listener: one uid on the socket, one IP address over TCP.
    public var perPeer = 32
    /// Most TLS connections still in their handshake at once (unauthenticated: nobody has shown a certificate yet).
    public var handshakes = 64
    /// A TLS handshake not finished within this is closed.
    public var handshakeTimeout: Duration = .seconds(5)
    /// A connection that sends no request head within this of connecting (or of its previous answer) is closed.
    public var idleTimeout: Duration = .seconds(10)
    /// RLIMIT_NOFILE soft limit to run with. nil: the hard limit, raised to 65536 first when it is lower (and the
    /// agent may raise it). A number sets exactly that soft limit (raising the hard limit if needed and allowed).
    public var openFiles: UInt64?
    /// File descriptors kept free of connections for everything else (journal, netlink sockets, pidfds, workers):
    /// the listeners' caps are lowered at start-up when their sum would not leave this many free.
    public var fdReserve = 256

    public init() {}

    static let keys: Set<String> = [
        "socket", "remote", "metrics", "per-peer", "handshakes", "handshake-timeout", "idle-timeout", "open-files",
        "fd-reserve",
    ]

    static func parse(_ t: TOMLTable, source: String) throws -> ConnectionsConfig {
        try AgentConfig.checkKeys(t, allowed: keys, section: "connections", source: source)
        var c = ConnectionsConfig()
        func count(_ key: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let v = t[key] else { return nil }
            guard let n = v.int, range.contains(n) else {
                throw ConfigError(
                    "\(source): [connections] \(key) must be an integer from \(range.lowerBound) to \(range.upperBound)")
            }
            return n
        }
        func duration(_ key: String, _ range: ClosedRange<Duration>) throws -> Duration? {
            guard let v = try AgentConfig.string(t, key, "connections", source) else { return nil }
            guard let d = Units.parseDuration(v), range.contains(d) else {
                throw ConfigError(
                    "\(source): [connections] \(key) '\(v)' must be a duration from "
                        + "\(Units.formatDuration(range.lowerBound)) to \(Units.formatDuration(range.upperBound))")
            }
            return d
        }
        if let n = try count("socket", 1...1_000_000) { c.socket = n }
        if let n = try count("remote", 1...1_000_000) { c.remote = n }
        if let n = try count("metrics", 1...1_000_000) { c.metrics = n }
        if let n = try count("per-peer", 1...1_000_000) { c.perPeer = n }
        if let n = try count("handshakes", 1...1_000_000) { c.handshakes = n }
        if let n = try count("open-files", 256...(1 << 30)) { c.openFiles = UInt64(n) }
        if let n = try count("fd-reserve", 64...(1 << 30)) { c.fdReserve = n }
        if let d = try duration("handshake-timeout", .milliseconds(100)...(.seconds(120))) { c.handshakeTimeout = d }
        if let d = try duration("idle-timeout", .milliseconds(100)...(.seconds(3600))) { c.idleTimeout = d }
        if let limit = c.openFiles, Int(limit) <= c.fdReserve {
            throw ConfigError(
                "\(source): [connections] open-files (\(limit)) must be larger than fd-reserve (\(c.fdReserve))")
        }
        return c
    }
}

/// The connection caps in force: `ConnectionsConfig` fitted into the file-descriptor limit the process has.
public struct ConnectionBudget: Sendable, Equatable {
    public var socket: Int
    public var remote: Int
    public var metrics: Int
    public var perPeer: Int
    public var handshakes: Int
    /// True when the configured caps had to be lowered to leave `fdReserve` free.
    public var lowered: Bool

    /// Fits the caps of the listeners that are on into `limit - inUse - reserve` descriptors. The socket's cap counts
    /// root's extra `perPeer` connections too. Caps are scaled down together (each at least 1) when they do not fit.
    public static func fit(
        _ c: ConnectionsConfig, limit: UInt64, inUse: Int, remoteOn: Bool, metricsOn: Bool
    ) -> ConnectionBudget {
        let available = max(0, Int(min(limit, UInt64(Int.max / 2))) - inUse - c.fdReserve)
        let wanted = c.socket + c.perPeer + (remoteOn ? c.remote : 0) + (metricsOn ? c.metrics : 0)
        guard wanted > available else {
            return ConnectionBudget(
                socket: c.socket, remote: c.remote, metrics: c.metrics, perPeer: c.perPeer, handshakes: c.handshakes,
                lowered: false)
        }
        let scale = Double(available) / Double(wanted)
        func fit(_ n: Int) -> Int { max(1, Int((Double(n) * scale).rounded(.down))) }
        let remote = fit(c.remote)
        return ConnectionBudget(
            socket: fit(c.socket), remote: remote, metrics: fit(c.metrics), perPeer: fit(c.perPeer),
            handshakes: min(c.handshakes, remote), lowered: true)
    }
}
