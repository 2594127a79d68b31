import AgentAPI
import AgentCore
import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOTLS
import Synchronization

/// One listener's connection caps: at most `total` open connections, at most `perPeer` from one peer (a uid on the
/// Unix socket, an IP address over TCP). Checked when a connection is accepted: one over a cap is closed at once
/// (after a one-line 503 on plain HTTP), so a flood of idle connections costs the agent no file descriptor it keeps.
/// A slot is returned when the connection's channel closes.
final class ConnectionGate: Sendable {
    enum Refusal: String, Sendable {
        case listenerFull = "listener-full"
        case peerFull = "peer-full"
        case handshakesFull = "handshakes-full"
    }

    private struct State {
        var open = 0
        var privileged = 0
        var byPeer: [String: Int] = [:]
        var handshakes = 0
        var refusedSinceLog = 0
        var lastLog: ContinuousClock.Instant?
    }

    let listener: String
    let total: Int
    let perPeer: Int
    let handshakes: Int
    let logger: Logger
    private let state = Mutex(State())

    init(listener: String, total: Int, perPeer: Int, handshakes: Int = .max, logger: Logger) {
        self.listener = listener
        self.total = total
        self.perPeer = perPeer
        self.handshakes = handshakes
        self.logger = logger
    }

    /// Open connections (for tests and the gauge).
    var openCount: Int { state.withLock { $0.open + $0.privileged } }

    /// Takes a slot for `peer` on `channel` (returned when it closes), or says which cap refuses it. A `privileged`
    /// peer (root on the socket) is held to `perPeer` only, so a full listener never locks root out. With
    /// `handshake`, a handshake slot is taken too; release it with `handshakeDone` (closing the channel does as well).
    func admit(_ channel: any Channel, peer: String, privileged: Bool = false, handshake: Bool = false) -> Refusal? {
        let refusal = state.withLock { s -> Refusal? in
            let mine = s.byPeer[peer, default: 0]
            if mine >= perPeer { return .peerFull }
            if !privileged && s.open >= total { return .listenerFull }
            if handshake && s.handshakes >= handshakes { return .handshakesFull }
            s.byPeer[peer] = mine + 1
            if privileged { s.privileged += 1 } else { s.open += 1 }
            if handshake { s.handshakes += 1 }
            return nil
        }
        if let refusal {
            refused(refusal, peer: peer)
            return refusal
        }
        gauge()
        channel.closeFuture.whenComplete { _ in
            self.state.withLock { s in
                if privileged { s.privileged -= 1 } else { s.open -= 1 }
                let left = s.byPeer[peer, default: 1] - 1
                s.byPeer[peer] = left > 0 ? left : nil
            }
            self.gauge()
        }
        return nil
    }

    /// Returns a handshake slot taken by `admit(handshake: true)`.
    func handshakeDone() {
        state.withLock { $0.handshakes -= 1 }
    }

    private func gauge() {
        Gauge(label: "chaos_agent_connections", dimensions: [("listener", listener)]).record(openCount)
    }

    /// Counted always; logged at most once per 10 s per listener (a flood must not flood the log too).
    private func refused(_ refusal: Refusal, peer: String) {
        Counter(
            label: "chaos_agent_connections_refused_total", dimensions: [("listener", listener), ("reason", refusal.rawValue)]
        ).increment()
        let now = ContinuousClock.now
        let count = state.withLock { s -> Int? in
            s.refusedSinceLog += 1
            if let last = s.lastLog, now - last < .seconds(10) { return nil }
            s.lastLog = now
            defer { s.refusedSinceLog = 0 }
            return s.refusedSinceLog
        }
        guard let count else { return }
        logger.warning(
            "connection refused: over the connection cap",
            metadata: [
                "event": "connection-refused", "listener": "\(listener)", "peer": "\(peer)", "reason": "\(refusal.rawValue)",
                "refused": "\(count)", "open": "\(openCount)", "cap": "\(total)", "perPeer": "\(perPeer)",
            ])
    }

    /// What a refused plain-HTTP connection is told before it is closed: a 503 with a one-line JSON error.
    static func refusalResponse(_ refusal: Refusal, listener: String) -> ByteBuffer {
        let message =
            switch refusal {
            case .peerFull: "too many connections from this peer to the \(listener) listener; close some and retry"
            case .listenerFull: "the \(listener) listener holds as many connections as it may; retry shortly"
            case .handshakesFull: "too many TLS handshakes in progress; retry shortly"
            }
        let error = AgentError(status: 503, code: "too-many-connections", message: message)
        let json = (try? WireCoding.encoder().encode(error.body)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        let body = json.replacingOccurrences(of: "\n", with: "") + "\n"
        return ByteBuffer(
            string: "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\nServer: chaos-agentd\r\n\r\n\(body)")
    }
}

/// What a listener's child-channel initializer hands the accept loop: a connection to serve, or one that was over a
/// cap (a `RefuseHandler` closes it as soon as it is registered; the accept loop drops it).
enum Admitted<Extra: Sendable>: Sendable {
    case serve(HTTPService.Connection, Extra)
    case refused
}

/// Closes a refused connection as soon as it is active, after writing `farewell` (if any) to it.
final class RefuseHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let farewell: ByteBuffer?
    private var done = false

    init(farewell: ByteBuffer?) { self.farewell = farewell }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { refuse(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        refuse(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private func refuse(_ context: ChannelHandlerContext) {
        guard !done else { return }
        done = true
        let channel = context.channel
        guard let farewell else {
            channel.close(promise: nil)
            return
        }
        context.writeAndFlush(NIOAny(farewell)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Bounds a TLS handshake in time: closes the connection unless the handshake completes within `timeout`, and
/// returns the gate's handshake slot when it completes or the connection closes, whichever is first.
final class HandshakeGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let timeout: TimeAmount
    private let gate: ConnectionGate
    private var timer: Scheduled<Void>?
    private var holding = true

    init(timeout: TimeAmount, gate: ConnectionGate) {
        self.timeout = timeout
        self.gate = gate
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    private func release() {
        timer?.cancel()
        timer = nil
        if holding {
            holding = false
            gate.handshakeDone()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls { release() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { release() }
}

extension ConnectionLimits {
    /// `idle` as a `Duration` (callers that do not import NIO), the other limits at their defaults.
    public init(idle: Duration, maxBody: Int) {
        self.init(idle: TimeAmount(idle), maxBody: maxBody)
    }
}
