import AgentCore
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import AgentServer

@Suite struct ConnectionGateTests {
    let logger = Logger(label: "test")

    @Test func capsPerPeerAndPerListenerAndSlotsComeBackOnClose() throws {
        let gate = ConnectionGate(listener: "socket", total: 3, perPeer: 2, logger: logger)
        let a1 = EmbeddedChannel(), a2 = EmbeddedChannel(), a3 = EmbeddedChannel(), b1 = EmbeddedChannel()
        let c1 = EmbeddedChannel()
        #expect(gate.admit(a1, peer: "uid=1") == nil)
        #expect(gate.admit(a2, peer: "uid=1") == nil)
        #expect(gate.admit(a3, peer: "uid=1") == .peerFull)
        #expect(gate.admit(b1, peer: "uid=2") == nil)
        #expect(gate.admit(c1, peer: "uid=3") == .listenerFull)
        // Root is held to its per-peer cap only: a full listener does not lock it out.
        let r1 = EmbeddedChannel(), r2 = EmbeddedChannel(), r3 = EmbeddedChannel()
        #expect(gate.admit(r1, peer: "uid=0", privileged: true) == nil)
        #expect(gate.admit(r2, peer: "uid=0", privileged: true) == nil)
        #expect(gate.admit(r3, peer: "uid=0", privileged: true) == .peerFull)
        #expect(gate.openCount == 5)
        // Closing returns the slot.
        _ = try? a1.finish()
        #expect(gate.openCount == 4)
        #expect(gate.admit(c1, peer: "uid=3") == nil)
        #expect(gate.admit(a3, peer: "uid=1") == .listenerFull)
        for c in [a2, b1, c1, r1, r2] { _ = try? c.finish() }
        #expect(gate.openCount == 0)
    }

    @Test func handshakeSlotsAreBoundedAndReturned() throws {
        let gate = ConnectionGate(listener: "remote", total: 100, perPeer: 100, handshakes: 2, logger: logger)
        let a = EmbeddedChannel(), b = EmbeddedChannel(), c = EmbeddedChannel()
        #expect(gate.admit(a, peer: "10.0.0.1", handshake: true) == nil)
        #expect(gate.admit(b, peer: "10.0.0.2", handshake: true) == nil)
        #expect(gate.admit(c, peer: "10.0.0.3", handshake: true) == .handshakesFull)
        // The guard returns the slot when the connection closes before finishing its handshake.
        try a.pipeline.syncOperations.addHandler(HandshakeGuard(timeout: .seconds(5), gate: gate))
        _ = try? a.finish()
        #expect(gate.admit(c, peer: "10.0.0.3", handshake: true) == nil)
        _ = try? b.finish()
        _ = try? c.finish()
    }

    @Test func handshakeGuardClosesAfterItsTimeout() throws {
        let gate = ConnectionGate(listener: "remote", total: 10, perPeer: 10, handshakes: 1, logger: logger)
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        #expect(gate.admit(channel, peer: "10.0.0.1", handshake: true) == nil)
        try channel.pipeline.syncOperations.addHandler(HandshakeGuard(timeout: .seconds(5), gate: gate))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        loop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        let next = EmbeddedChannel()
        #expect(gate.admit(next, peer: "10.0.0.2", handshake: true) == nil)
        _ = try? next.finish()
    }

    @Test func refusedPlainHTTPConnectionGetsA503ThenCloses() throws {
        let farewell = ConnectionGate.refusalResponse(.peerFull, listener: "socket")
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(RefuseHandler(farewell: farewell))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let out = try #require(try channel.readOutbound(as: ByteBuffer.self))
        let text = String(buffer: out)
        #expect(text.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(text.contains("Connection: close\r\n"))
        let body = try #require(text.components(separatedBy: "\r\n\r\n").last)
        #expect(body.hasSuffix("}\n") && body.filter { $0 == "\n" }.count == 1)
        #expect(body.contains(#""code":"too-many-connections""#))
        #expect(!channel.isActive)
    }

    @Test func peerGroupsDecideTheRoleNotEtcGroup() {
        let auth = PeerAuthorizer(writerGroup: 4242)
        #expect(auth.caller(uid: 5555, gid: 100, groups: [27, 4242], pid: 1).role == .operator)
        #expect(auth.caller(uid: 5555, gid: 100, groups: [27], pid: 1).role == .viewer)
        #expect(auth.caller(uid: 5555, gid: 4242, groups: [], pid: 1).role == .operator)
        // Zeros in the (zero-filled) SO_PEERGROUPS buffer are not groups.
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: MemoryLayout<Gids64>.size, alignment: 8)
        defer { raw.deallocate() }
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        raw.storeBytes(of: 7, toByteOffset: 0, as: UInt32.self)
        raw.storeBytes(of: 4242, toByteOffset: 4, as: UInt32.self)
        let gids = raw.load(as: Gids64.self)
        #expect(MemoryLayout<Gids64>.size == 64 * 4)
        #expect(MemoryLayout<Gids65536>.size == 65536 * 4)
        #expect(PeerIdentity.gids(gids) == [7, 4242])
    }
}

@Suite struct ConnectionsConfigTests {
    @Test func defaultsAndParsing() throws {
        let d = try AgentConfig.parse("")
        #expect(d.connections == ConnectionsConfig())
        #expect(d.connections.socket == 256 && d.connections.remote == 512 && d.connections.metrics == 64)
        #expect(d.connections.perPeer == 32 && d.connections.handshakes == 64 && d.connections.openFiles == nil)
        let c = try AgentConfig.parse(
            """
            [connections]
            socket = 10
            remote = 20
            metrics = 5
            per-peer = 2
            handshakes = 3
            handshake-timeout = "2s"
            idle-timeout = "500ms"
            open-files = 4096
            fd-reserve = 300
            """)
        let x = c.connections
        #expect(x.socket == 10 && x.remote == 20 && x.metrics == 5 && x.perPeer == 2 && x.handshakes == 3)
        #expect(x.handshakeTimeout == .seconds(2) && x.idleTimeout == .milliseconds(500))
        #expect(x.openFiles == 4096 && x.fdReserve == 300)
    }

    @Test func badValuesAndUnknownKeysAreRefused() {
        for text in [
            "[connections]\nsockets = 10", "[connections]\nsocket = 0", "[connections]\nsocket = \"10\"",
            "[connections]\nper-peer = -1", "[connections]\nhandshake-timeout = \"forever\"",
            "[connections]\nidle-timeout = 5", "[connections]\nopen-files = 100",
            "[connections]\nopen-files = 300\nfd-reserve = 300", "connections = 5",
        ] {
            #expect(throws: ConfigError.self, "\(text)") { try AgentConfig.parse(text) }
        }
    }

    @Test func capsFitUnderTheLimitLessTheReserve() {
        let c = ConnectionsConfig()
        let roomy = ConnectionBudget.fit(c, limit: 65536, inUse: 40, remoteOn: true, metricsOn: true)
        #expect(!roomy.lowered && roomy.socket == 256 && roomy.remote == 512 && roomy.metrics == 64)
        let tight = ConnectionBudget.fit(c, limit: 1024, inUse: 40, remoteOn: true, metricsOn: true)
        #expect(tight.lowered)
        let total = tight.socket + tight.perPeer + tight.remote + tight.metrics
        #expect(total <= 1024 - 40 - c.fdReserve)
        #expect(tight.handshakes <= tight.remote)
        // Only the listeners that are on count.
        let socketOnly = ConnectionBudget.fit(c, limit: 1024, inUse: 40, remoteOn: false, metricsOn: false)
        #expect(!socketOnly.lowered)
    }
}
