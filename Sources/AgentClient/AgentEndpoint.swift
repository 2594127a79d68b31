import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL

/// The client's side of mutual TLS: its certificate and key, and the CA the agent's certificate must chain to.
public struct ClientTLSFiles: Sendable, Equatable {
    public var certificate: String
    public var privateKey: String
    public var ca: String
    public init(certificate: String, privateKey: String, ca: String) {
        self.certificate = certificate
        self.privateKey = privateKey
        self.ca = ca
    }
}

/// Where the agent is and how to reach it. Everything transport-specific (URL scheme, TLS, timeouts) lives here.
public struct AgentEndpoint: Sendable, CustomStringConvertible {
    public enum Transport: Sendable, Equatable {
        /// HTTP/1.1 over a local Unix domain socket.
        case unixSocket(path: String)
        /// HTTP/1.1 over mutual TLS to a remote agent: `https://HOST:PORT` (no path).
        case https(base: String, tls: ClientTLSFiles)
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

    /// A remote agent at `https://HOST:PORT`. Checks the URL and that the three files exist.
    public static func https(_ url: String, tls: ClientTLSFiles) throws -> AgentEndpoint {
        guard let u = URL(string: url), u.scheme?.lowercased() == "https", let host = u.host, !host.isEmpty else {
            throw AgentClientError.usage("--host must be https://HOST:PORT (got '\(url)'); the remote listener is TLS only")
        }
        guard u.path.isEmpty || u.path == "/", u.query == nil else {
            throw AgentClientError.usage("--host takes no path: https://\(host)\(u.port.map { ":\($0)" } ?? "")")
        }
        for (flag, path) in [("--cert", tls.certificate), ("--key", tls.privateKey), ("--ca", tls.ca)] {
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw AgentClientError.usage("\(flag) \(path) does not exist or cannot be read")
            }
        }
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        return AgentEndpoint(transport: .https(base: base, tls: tls))
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
        case .https(let base, _): return base
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
        case .https(let base, _):
            return base + uri
        }
    }

    /// A client configured for this endpoint. Connection failures are reported at once (no retry with backoff: a
    /// CLI should say "cannot connect" immediately), and there is no read timeout so event streams can idle.
    func makeHTTPClient() throws -> HTTPClient {
        var config = HTTPClient.Configuration()
        config.timeout = .init(connect: connectTimeout, read: nil)
        config.connectionPool.retryConnectionEstablishment = false
        // Drop a kept-alive connection well before the agent closes idle ones ([connections] idle-timeout, 10 s by
        // default), so a request is never sent down a connection the agent is closing.
        config.connectionPool.idleTimeout = .seconds(4)
        config.redirectConfiguration = .disallow
        config.decompression = .disabled
        switch transport {
        case .unixSocket:
            break
        case .https(_, let files):
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(files.certificate).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: files.privateKey, format: .pem))
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(files.ca))
            } catch {
                throw AgentClientError.usage("cannot load the TLS files (--cert/--key/--ca): \(error)")
            }
            config.tlsConfiguration = tls
        }
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
    }
}
