import AsyncHTTPClient
import Foundation
import NIOCore

/// Where the agent is and how to reach it. Everything transport-specific (URL scheme, TLS, timeouts) lives here,
/// so a later `--host https://HOST:PORT --cert --key --ca` is one more case and one more branch in `makeHTTPClient`.
public struct AgentEndpoint: Sendable, CustomStringConvertible {
    public enum Transport: Sendable, Equatable {
        /// HTTP/1.1 over a local Unix domain socket (the only transport of this release).
        case unixSocket(path: String)
    }

    public static let defaultSocketPath = "/run/chaos-agent/agent.sock"
    public static let socketEnvironmentVariable = "CHAOS_AGENT_SOCKET"

    public var transport: Transport
    /// Time allowed to establish a connection.
    public var connectTimeout: TimeAmount
    /// Time allowed for an ordinary request to get its answer head (event streams have no limit).
    public var requestTimeout: TimeAmount

    public init(transport: Transport, connectTimeout: TimeAmount = .seconds(5), requestTimeout: TimeAmount = .seconds(60))
    {
        self.transport = transport
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
    }

    public static func unixSocket(_ path: String) -> AgentEndpoint {
        AgentEndpoint(transport: .unixSocket(path: path))
    }

    /// `--socket` if given, else `$CHAOS_AGENT_SOCKET`, else `/run/chaos-agent/agent.sock`.
    public static func resolveSocketPath(
        _ explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        if let env = environment[socketEnvironmentVariable], !env.isEmpty { return env }
        return defaultSocketPath
    }

    /// What to show the user when the agent cannot be reached: the socket path (or, later, the host URL).
    public var description: String {
        switch transport {
        case .unixSocket(let path): return path
        }
    }

    /// The absolute URL for an API path such as `/v1/faults`.
    func url(for uri: String) throws -> String {
        switch transport {
        case .unixSocket(let path):
            guard let url = URL(httpURLWithSocketPath: path, uri: uri) else {
                throw AgentClientError.unreachable(path: path, reason: "not a usable socket path")
            }
            return url.absoluteString
        }
    }

    /// A client configured for this endpoint. Connection failures are reported at once (no retry with backoff: a
    /// CLI should say "cannot connect" immediately), and there is no read timeout so event streams can idle.
    func makeHTTPClient() -> HTTPClient {
        var config = HTTPClient.Configuration()
        config.timeout = .init(connect: connectTimeout, read: nil)
        config.connectionPool.retryConnectionEstablishment = false
        config.redirectConfiguration = .disallow
        config.decompression = .disabled
        switch transport {
        case .unixSocket:
            break  // later: config.tlsConfiguration = ... for .https
        }
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
    }
}
