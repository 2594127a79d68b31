import AgentAPI
import AgentCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SwiftASN1
import X509
import ServiceLifecycle
import Synchronization

/// Maps a client certificate's names to a role with `[remote.roles]`. Pure, so it is unit-tested.
public struct CertificateRoles: Sendable {
    public var roles: [String: Role]

    public init(roles: [String: Role]) { self.roles = roles }

    /// The caller for a verified certificate whose names are `names` (CN first, then SANs): the highest role any of
    /// them maps to. A certificate none of whose names is in the table is refused (403): a valid certificate from
    /// the right CA proves who someone is, not that they may do anything here.
    public func caller(names: [String]) -> Result<Caller, AgentError> {
        let matches = names.compactMap { name in roles[name].map { (name, $0) } }
        guard let best = matches.max(by: { $0.1 < $1.1 }) else {
            let shown = names.isEmpty ? "no usable name" : names.joined(separator: ", ")
            return .failure(
                .forbidden("the client certificate (\(shown)) is valid but has no role here; add it to [remote.roles]"))
        }
        return .success(Caller(identity: "tls:\(best.0)", role: best.1))
    }

    /// The names a certificate identifies its holder by: the subject CN(s), then DNS, URI and e-mail SANs, read from
    /// the DER with swift-certificates (never from a text rendering, where a crafted subject field could pose as a CN).
    static func names(of certificate: NIOSSLCertificate) -> [String] {
        guard let der = try? certificate.toDERBytes(), let cert = try? Certificate(derEncoded: der) else { return [] }
        var out: [String] = []
        func add(_ name: String) { if !name.isEmpty && !out.contains(name) { out.append(name) } }
        for rdn in cert.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                if let cn = String(attribute.value) { add(cn) }
            }
        }
        for san in (try? cert.extensions.subjectAlternativeNames) ?? SubjectAlternativeNames() {
            switch san {
            case .dnsName(let n), .uniformResourceIdentifier(let n), .rfc822Name(let n): add(n)
            default: break
            }
        }
        return out
    }
}

/// The remote listener: HTTP/1.1 over mutual TLS (TLS 1.2 at least; 1.3 when the client offers it). A client must
/// present a certificate that chains to `[remote] client-ca`; without one the handshake fails and nothing is served.
/// The certificate's names select a role through `[remote.roles]`. `reload()` (SIGHUP) swaps in the certificate, key
/// and CA from disk for new connections; open connections and every lease are untouched.
public final class TLSServer: Service, Sendable {
    public struct Options: Sendable {
        public var listen: ListenAddress
        public var certificate: String
        public var privateKey: String
        public var clientCA: String
        public var roles: [String: Role]
        public var limits: ConnectionLimits
        /// Most connections held at once, from one IP address, and still in their TLS handshake.
        public var maxConnections: Int
        public var perPeer: Int
        public var handshakes: Int
        /// A handshake not complete within this is closed.
        public var handshakeTimeout: Duration

        public init(
            remote: RemoteConfig, limits: ConnectionLimits, maxConnections: Int = 512, perPeer: Int = 32,
            handshakes: Int = 64, handshakeTimeout: Duration = .seconds(5)
        ) {
            listen = remote.listen
            certificate = remote.certificate
            privateKey = remote.privateKey
            clientCA = remote.clientCA
            roles = remote.roles
            self.limits = limits
            self.maxConnections = maxConnections
            self.perPeer = perPeer
            self.handshakes = handshakes
            self.handshakeTimeout = handshakeTimeout
        }
    }

    let options: Options
    let http: HTTPService
    let logger: Logger
    let gate: ConnectionGate
    private let roles: Mutex<CertificateRoles>
    private let context: Mutex<NIOSSLContext>
    private let boundPort = Mutex<Int?>(nil)

    /// Loads the certificate, key and CA now, so a bad file stops the agent at start-up with a clear message.
    public init(options: Options, router: APIRouter, logger: Logger) throws {
        self.options = options
        self.logger = logger
        self.roles = Mutex(CertificateRoles(roles: options.roles))
        self.http = HTTPService(handle: { await router.handle($0, caller: $1) }, limits: options.limits, logger: logger)
        self.gate = ConnectionGate(
            listener: "remote", total: options.maxConnections, perPeer: options.perPeer, handshakes: options.handshakes,
            logger: logger)
        self.context = Mutex(try Self.makeContext(options))
    }

    /// The port bound (useful with port 0 in tests), once listening.
    public var port: Int? { boundPort.withLock { $0 } }

    static func makeContext(_ o: Options) throws -> NIOSSLContext {
        func load<T>(_ what: String, _ path: String, _ body: () throws -> T) throws -> T {
            do { return try body() } catch {
                throw AgentError.failed("[remote] \(what) \(path) cannot be loaded: \(error)")
            }
        }
        let chain = try load("certificate", o.certificate) { try NIOSSLCertificate.fromPEMFile(o.certificate) }
        guard !chain.isEmpty else { throw AgentError.failed("[remote] certificate \(o.certificate) holds no certificate") }
        let key = try load("private-key", o.privateKey) { try NIOSSLPrivateKey(file: o.privateKey, format: .pem) }
        let cas = try load("client-ca", o.clientCA) { try NIOSSLCertificate.fromPEMFile(o.clientCA) }
        guard !cas.isEmpty else { throw AgentError.failed("[remote] client-ca \(o.clientCA) holds no certificate") }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        // Client certificates are required and must chain to the client CA (no hostname check: clients are not
        // hosts). NIOSSL's server side fails the handshake when the client sends none.
        tls.certificateVerification = .noHostnameVerification
        tls.trustRoots = .certificates(cas)
        tls.sendCANameList = true
        return try load("configuration", o.certificate) { try NIOSSLContext(configuration: tls) }
    }

    /// Re-reads the certificate, key and CA, and takes `roles` (a re-read `[remote.roles]`) when given. On error
    /// nothing changes (the old certificates and roles stay in use) and the error is thrown.
    public func reload(roles newRoles: [String: Role]? = nil) throws {
        let fresh = try Self.makeContext(options)
        context.withLock { $0 = fresh }
        if let newRoles { roles.withLock { $0 = CertificateRoles(roles: newRoles) } }
        logger.notice(
            "TLS certificates reloaded",
            metadata: [
                "event": "tls-reload", "certificate": "\(options.certificate)", "clientCA": "\(options.clientCA)",
                "identities": "\(newRoles.map { "\($0.count)" } ?? "unchanged")",
            ])
    }

    public func run() async throws {
        let limits = options.limits
        let handshakeTimeout = TimeAmount(options.handshakeTimeout)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: options.listen.host, port: options.listen.port) { channel in
                channel.eventLoop.makeCompletedFuture { () -> Admitted<String> in
                    // Counted per IP address before any TLS work: a refused connection is closed without a byte.
                    let ip = channel.remoteAddress?.ipAddress ?? "?"
                    let gate = self.gate
                    guard gate.admit(channel, peer: ip, handshake: true) == nil else {
                        try channel.pipeline.syncOperations.addHandler(RefuseHandler(farewell: nil))
                        return .refused
                    }
                    let ssl = NIOSSLServerHandler(context: self.context.withLock { $0 })
                    try channel.pipeline.syncOperations.addHandler(ssl)
                    try channel.pipeline.syncOperations.addHandler(HandshakeGuard(timeout: handshakeTimeout, gate: gate))
                    let peer = channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                    return .serve(try HTTPService.configure(channel, limits: limits), peer)
                }
            }
        boundPort.withLock { $0 = server.channel.localAddress?.port }
        logger.info(
            "listening (mutual TLS)",
            metadata: [
                "address": "\(options.listen)", "port": "\(server.channel.localAddress?.port ?? 0)",
                "identities": "\(options.roles.count)", "maxConnections": "\(options.maxConnections)",
                "perPeer": "\(options.perPeer)", "handshakes": "\(options.handshakes)",
            ])
        try await HTTPService.acceptLoop(server) { connection, peer in await self.serve(connection, peer: peer) }
    }

    private func serve(_ connection: HTTPService.Connection, peer: String) async {
        let channel = connection.channel.channel
        await http.serve(connection, peer: "tls:\(peer)") {
            // A request head has been decoded, so the handshake (and the certificate check) is done.
            guard let certificate = try? await channel.nioSSL_peerCertificate().get() else {
                return .failure(.forbidden("no client certificate"))
            }
            let names = CertificateRoles.names(of: certificate)
            return self.roles.withLock { $0.caller(names: names) }
        }
    }
}

/// `[metrics] listen`: plain HTTP for scrapers, serving `GET /metrics` and `GET /healthz` only. Meant for loopback or
/// a scrape network; it reveals counts, never faults or identities.
public final class MetricsServer: Service, Sendable {
    let listen: ListenAddress
    let http: HTTPService
    let logger: Logger
    let gate: ConnectionGate

    /// `maxConnections` in all and `perPeer` from one IP address; `idle`: see `ConnectionLimits`.
    public init(
        listen: ListenAddress, router: APIRouter, logger: Logger, maxConnections: Int = 64, perPeer: Int = 32,
        idle: Duration = .seconds(10)
    ) {
        self.listen = listen
        self.logger = logger
        self.gate = ConnectionGate(listener: "metrics", total: maxConnections, perPeer: perPeer, logger: logger)
        self.http = HTTPService(
            handle: { request, caller in
                let path = request.path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.path
                guard request.method == "GET" || request.method == "HEAD", path == "/metrics" || path == "/healthz" else {
                    return APIRouter.error(.notFound("this listener serves only GET /metrics and /healthz"))
                }
                return await router.handle(request, caller: caller)
            }, limits: ConnectionLimits(idle: TimeAmount(idle), maxBody: 1024), logger: logger)
    }

    public func run() async throws {
        let limits = http.limits
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: listen.host, port: listen.port) { channel in
                channel.eventLoop.makeCompletedFuture { () -> Admitted<String> in
                    if let refusal = self.gate.admit(channel, peer: channel.remoteAddress?.ipAddress ?? "?") {
                        try channel.pipeline.syncOperations.addHandler(
                            RefuseHandler(farewell: ConnectionGate.refusalResponse(refusal, listener: "metrics")))
                        return .refused
                    }
                    let peer = channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                    return .serve(try HTTPService.configure(channel, limits: limits), peer)
                }
            }
        logger.info("listening (metrics)", metadata: ["address": "\(listen)"])
        try await HTTPService.acceptLoop(server) { connection, peer in
            await self.http.serve(connection, peer: "metrics:\(peer)") {
                .success(Caller(identity: "metrics-scraper", role: .viewer))
            }
        }
    }
}
