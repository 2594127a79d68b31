import AgentAPI
import Foundation
import TOMLKit

/// The agent's configuration: `/etc/chaos-agent/agent.toml` (TOML). Every key is optional and has a default;
/// unknown keys are an error, so a typo never silently does nothing.
public struct AgentConfig: Sendable, Equatable {
    public static let defaultPath = "/etc/chaos-agent/agent.toml"

    public var socket = "/run/chaos-agent/agent.sock"
    public var stateDir = "/run/chaos-agent"
    public var socketGroup = "chaos-agent"
    public var socketMode: UInt32 = 0o660
    public var maxBody = 64 * 1024
    public var maxTTL: Duration = .seconds(3600)
    public var protectedProcesses = ["sshd", "systemd-journald"]
    /// Which tc classifier network faults target traffic with: `auto` (flower where the kernel has it, else u32),
    /// `u32` or `flower`.
    public var networkClassifier = "auto"
    /// `[remote]`: the mutual-TLS listener; nil unless `listen` is set.
    public var remote: RemoteConfig?
    /// `[metrics] listen`: an optional plain-HTTP listener serving only `GET /metrics` (and `/healthz`).
    public var metricsListen: ListenAddress?
    /// Free space a `disk-fill` must leave on its file system, and memory a `memory` fault must leave available.
    public var resourceReserve: UInt64 = 64 << 20
    /// `[disk-fill] allow-memory-backed`: disk-fill on tmpfs, devtmpfs, ramfs (RAM, not disk) is refused unless true;
    /// then it is bounded by a memory reserve (max of 10% of MemTotal and 256 MiB stays available).
    public var diskFillAllowMemoryBacked = false
    /// `[connections]`: connection caps per listener and per peer, idle limits, and the file-descriptor budget.
    public var connections = ConnectionsConfig()

    /// The file this configuration was read from (nil: all defaults); SIGHUP re-reads it for `[remote.roles]`.
    public var sourcePath: String?

    public init() {}

    /// Loads `path`. A missing file at the default path means "all defaults"; a missing file named explicitly
    /// elsewhere is an error.
    public static func load(path: String?) throws -> AgentConfig {
        let p = path ?? defaultPath
        guard FileManager.default.fileExists(atPath: p) else {
            if p == defaultPath { return AgentConfig() }
            throw ConfigError("config file \(p) does not exist")
        }
        guard let text = try? String(contentsOfFile: p, encoding: .utf8) else {
            throw ConfigError("config file \(p) cannot be read")
        }
        var config = try parse(text, source: p)
        config.sourcePath = p
        return config
    }

    /// Parses TOML text.
    public static func parse(_ text: String, source: String = "config") throws -> AgentConfig {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw ConfigError("\(source): \(e.description) at line \(e.source.begin.line), column \(e.source.begin.column)")
        }
        var c = AgentConfig()
        try checkKeys(table, allowed: ["agent", "policy", "network", "remote", "metrics", "disk-fill", "connections"], section: nil, source: source)
        if let remote = try section(table, "remote", source) {
            c.remote = try RemoteConfig.parse(remote, source: source)
        }
        if let connections = try section(table, "connections", source) {
            c.connections = try ConnectionsConfig.parse(connections, source: source)
        }
        if let metrics = try section(table, "metrics", source) {
            try checkKeys(metrics, allowed: ["listen"], section: "metrics", source: source)
            if let v = try string(metrics, "listen", "metrics", source) {
                c.metricsListen = try ListenAddress.parse(v, what: "\(source): [metrics] listen")
            }
        }
        if let agent = try section(table, "agent", source) {
            try checkKeys(
                agent, allowed: ["socket", "state-dir", "socket-group", "socket-mode", "max-body"], section: "agent",
                source: source)
            if let v = try string(agent, "socket", "agent", source) { c.socket = v }
            if let v = try string(agent, "state-dir", "agent", source) { c.stateDir = v }
            if let v = try string(agent, "socket-group", "agent", source) { c.socketGroup = v }
            if let v = try string(agent, "socket-mode", "agent", source) {
                guard let mode = UInt32(v, radix: 8), mode <= 0o777 else {
                    throw ConfigError("\(source): [agent] socket-mode '\(v)' is not an octal mode like \"0660\"")
                }
                c.socketMode = mode
            }
            if let v = try string(agent, "max-body", "agent", source) {
                guard let n = Units.parseSize(v), n >= 1024, n <= 16 << 20 else {
                    throw ConfigError("\(source): [agent] max-body '\(v)' must be a size between 1KiB and 16MiB")
                }
                c.maxBody = Int(n)
            }
        }
        if let policy = try section(table, "policy", source) {
            try checkKeys(policy, allowed: ["max-ttl", "protected-processes", "resource-reserve"], section: "policy", source: source)
            if let v = try string(policy, "max-ttl", "policy", source) {
                guard let d = Units.parseDuration(v), d >= .seconds(1) else {
                    throw ConfigError("\(source): [policy] max-ttl '\(v)' is not a duration of at least 1s (e.g. \"1h\")")
                }
                c.maxTTL = d
            }
            if let raw = policy["protected-processes"] {
                guard let arr = raw.array else {
                    throw ConfigError("\(source): [policy] protected-processes must be an array of strings")
                }
                var names: [String] = []
                for item in arr {
                    guard let s = item.string, !s.isEmpty else {
                        throw ConfigError("\(source): [policy] protected-processes must be an array of non-empty strings")
                    }
                    names.append(s)
                }
                c.protectedProcesses = names
            }
            if let v = try string(policy, "resource-reserve", "policy", source) {
                guard let n = Units.parseSize(v) else {
                    throw ConfigError("\(source): [policy] resource-reserve '\(v)' is not a size (e.g. \"64MiB\", \"1GiB\")")
                }
                c.resourceReserve = n
            }
        }
        if let fill = try section(table, "disk-fill", source) {
            try checkKeys(fill, allowed: ["allow-memory-backed"], section: "disk-fill", source: source)
            if let v = fill["allow-memory-backed"] {
                guard let b = v.bool else {
                    throw ConfigError("\(source): [disk-fill] allow-memory-backed must be true or false")
                }
                c.diskFillAllowMemoryBacked = b
            }
        }
        if let network = try section(table, "network", source) {
            try checkKeys(network, allowed: ["classifier"], section: "network", source: source)
            if let v = try string(network, "classifier", "network", source) {
                guard ["auto", "u32", "flower"].contains(v) else {
                    throw ConfigError("\(source): [network] classifier '\(v)' must be \"auto\", \"u32\" or \"flower\"")
                }
                c.networkClassifier = v
            }
        }
        return c
    }

    static func section(_ t: TOMLTable, _ key: String, _ source: String) throws -> TOMLTable? {
        guard let v = t[key] else { return nil }
        guard let s = v.table else { throw ConfigError("\(source): '\(key)' must be a table ([\(key)])") }
        return s
    }

    static func string(_ t: TOMLTable, _ key: String, _ section: String, _ source: String) throws -> String? {
        guard let v = t[key] else { return nil }
        guard let s = v.string else { throw ConfigError("\(source): [\(section)] \(key) must be a string") }
        return s
    }

    static func checkKeys(_ t: TOMLTable, allowed: Set<String>, section: String?, source: String) throws {
        for key in t.keys where !allowed.contains(key) {
            let where_ = section.map { "[\($0)] " } ?? ""
            throw ConfigError(
                "\(source): unknown key \(where_)'\(key)'; known: \(allowed.sorted().joined(separator: ", "))")
        }
    }
}

public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
