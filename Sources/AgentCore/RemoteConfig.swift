import Foundation
import TOMLKit

/// What a caller may do. Ordered: each role may do everything the roles below it may.
public enum Role: String, Sendable, Comparable, CaseIterable, Codable {
    /// Read: status, list, get, events, metrics.
    case viewer
    /// Also inject, renew, heartbeat and revert one fault (its own or anyone's).
    case `operator`
    /// Also revert every fault at once (`DELETE /v1/faults`) and policy overrides (network `noDefaultExclusions`).
    case admin

    var rank: Int {
        switch self {
        case .viewer: return 0
        case .operator: return 1
        case .admin: return 2
        }
    }

    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}

/// `host:port` for a TCP listener. IPv6 hosts are written in brackets: `[::1]:7410`.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public static func parse(_ text: String, what: String) throws -> ListenAddress {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ConfigError("\(what) '\(text)' is not [IPv6]:port")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw ConfigError("\(what) '\(text)' needs a port: host:port, e.g. \"0.0.0.0:7410\"")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { throw ConfigError("\(what) '\(text)' has no host; use 0.0.0.0 for every address") }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw ConfigError("\(what) '\(text)': the port must be a number from 1 to 65535")
        }
        return ListenAddress(host: String(host), port: port)
    }
}

/// `[remote]` and `[remote.roles]`: the mutual-TLS listener and who may do what over it.
public struct RemoteConfig: Sendable, Equatable {
    public var listen: ListenAddress
    /// PEM server certificate chain, its private key, and the CA that client certificates must chain to.
    public var certificate: String
    public var privateKey: String
    public var clientCA: String
    /// Certificate identity (the subject CN, or a SAN: DNS name, URI or e-mail) -> role. Anyone else gets 403.
    public var roles: [String: Role]

    public init(listen: ListenAddress, certificate: String, privateKey: String, clientCA: String, roles: [String: Role]) {
        self.listen = listen
        self.certificate = certificate
        self.privateKey = privateKey
        self.clientCA = clientCA
        self.roles = roles
    }

    static func parse(_ t: TOMLTable, source: String) throws -> RemoteConfig? {
        let keys: Set<String> = ["listen", "certificate", "private-key", "client-ca", "roles"]
        try AgentConfig.checkKeys(t, allowed: keys, section: "remote", source: source)
        var roles: [String: Role] = [:]
        if let raw = t["roles"] {
            guard let table = raw.table else { throw ConfigError("\(source): [remote.roles] must be a table") }
            for key in table.keys.sorted() {
                guard let s = table[key]?.string, let role = Role(rawValue: s) else {
                    throw ConfigError(
                        "\(source): [remote.roles] \"\(key)\" must be one of viewer, operator, admin")
                }
                guard !key.isEmpty else { throw ConfigError("\(source): [remote.roles] has an empty identity") }
                roles[key] = role
            }
        }
        guard let listenText = try AgentConfig.string(t, "listen", "remote", source) else {
            if t.keys.contains(where: { $0 != "roles" }) || !roles.isEmpty {
                throw ConfigError("\(source): [remote] has settings but no listen; set listen = \"0.0.0.0:7410\" to enable it")
            }
            return nil
        }
        let listen = try ListenAddress.parse(listenText, what: "\(source): [remote] listen")
        var files: [String: String] = [:]
        for key in ["certificate", "private-key", "client-ca"] {
            guard let v = try AgentConfig.string(t, key, "remote", source), !v.isEmpty else {
                throw ConfigError(
                    "\(source): [remote] \(key) is required with listen: the listener is mutual TLS only (see docs/security.md)")
            }
            files[key] = v
        }
        return RemoteConfig(
            listen: listen, certificate: files["certificate"]!, privateKey: files["private-key"]!,
            clientCA: files["client-ca"]!, roles: roles)
    }
}
