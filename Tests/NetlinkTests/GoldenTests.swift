import CMNL
import Synchronization
import Foundation
import Testing

@testable import Netlink

@Suite("Golden request bytes")
struct GoldenTests {
    @Test("request matches its golden", arguments: goldenCases)
    func matchesGolden(_ c: GoldenCase) throws {
        let (nl, t) = recordingSession()
        try c.build(nl)
        let expected = golden(try #require(goldens[c.name], "no golden for \(c.name)"))
        let actual = goldenHex(t.lastRequest)
        if c.name == "netem_normal" {
            // The golden spells out the headers and the table's first entries; the rest is checked by size here
            // and by shape in NetemDistributionTests.
            #expect(actual.hasPrefix(expected))
            #expect(t.lastRequest.count == 16 + 20 + 12 + 4 + 24 + 12 + 12 + 4 + 4096 * 2)
        } else {
            #expect(actual == expected, "\(c.name) (\(c.command))")
        }
    }

    /// The TCA_OPTIONS payload of a qdisc request.
    func options(_ bytes: [UInt8]) throws -> ArraySlice<UInt8> {
        let attributes = Attribute.parse(bytes[36...])
        return try #require(attributes[NL.tcaOptions]).payload
    }

    @Test("netem requests that differ from tc's bytes decode to the same settings",
          arguments: ["netem_delay", "netem_jitter_corr", "netem_corrupt", "netem_reorder_gap"])
    func netemSameMeaningAsTC(_ name: String) throws {
        let c = try #require(goldenCases.first { $0.name == name })
        let (nl, t) = recordingSession()
        try c.build(nl)
        let tc = hexBytes(try #require(tcCaptures[name]))
        let ours = try #require(Netem(dumpedOptions: try options(t.lastRequest)))
        let theirs = try #require(Netem(dumpedOptions: try options(tc)))
        #expect(ours == theirs, "\(c.command)")
        // Same envelope: header (but length), tcmsg, kind.
        #expect(Array(t.lastRequest[4..<8]) == Array(tc[4..<8]))
        #expect(Array(t.lastRequest[16..<48]) == Array(tc[16..<48]))
    }

    @Test("tbf decodes to the same settings as tc's request (which adds a rate table)")
    func tbfSameMeaningAsTC() throws {
        let (nl, t) = recordingSession()
        try goldenCases.first { $0.name == "tbf" }!.build(nl)
        let tc = hexBytes(tcCaptures["tbf"]!)
        let ours = try #require(TBF(dumpedOptions: try options(t.lastRequest)))
        let theirs = try #require(TBF(dumpedOptions: try options(tc)))
        #expect(ours == theirs)
        #expect(ours == TBF(rate: 125_000, burst: 32 * 1024, limit: .bytes(64 * 1024)))
        // Same rate, limit, buffer ticks and mtu; only cell_log and the (ignored) rate table differ.
        let parms = { (b: [UInt8]) throws in Attribute.parse(try self.options(b))[TBFAttr.parms]!.payload }
        #expect(Array(try parms(t.lastRequest).dropFirst(1)) == Array(try parms(tc).dropFirst(1)))
    }

    @Test("prio options equal tc's struct (tc adds an empty compat nest after it)")
    func prioSameMeaningAsTC() throws {
        let (nl, t) = recordingSession()
        try goldenCases.first { $0.name == "prio" }!.build(nl)
        let tc = hexBytes(tcCaptures["prio"]!)
        #expect(Array(try options(t.lastRequest)) == Array(try options(tc).prefix(20)))
    }

    @Test("change and replace send every netem attribute explicitly; exclusive add only what is set")
    func netemExplicitOnChange() throws {
        var n = Netem()
        n.latency = 50_000_000
        for (mode, expected) in [(QdiscMode.exclusive, [10]), (.replace, [1, 3, 7, 4, 6, 10, 11]), (.change, [1, 3, 7, 4, 6, 10, 11])] {
            let (nl, t) = recordingSession()
            try nl.addQdisc(ifindex: 1, parent: TCHandle.root, handle: 0x504d_0000, options: .netem(n), mode: mode)
            let types = Attribute.parse(try options(t.lastRequest).dropFirst(24)).map { Int($0.type) }
            #expect(types == expected, "\(mode)")
            #expect(t.lastRequest.hostInteger(UInt16.self, at: 6)! == NL.request | NL.ack | mode.flags)
        }
    }

    @Test("netem round-trips through its own decoder")
    func netemRoundTrip() throws {
        var n = Netem()
        n.latency = 123_456_789
        n.jitter = 2_000_000
        n.delayCorrelation = pct(10)
        n.loss = .gilbertElliott(.init(p: 0.02, r: 0.3)!)
        n.duplicate = pct(1)
        n.duplicateCorrelation = pct(2)
        n.corrupt = pct(3)
        n.corruptCorrelation = pct(4)
        n.reorder = pct(5)
        n.reorderCorrelation = pct(6)
        n.gap = 3
        n.rate = 10_000_000_000
        n.packetOverhead = -4
        n.cellSize = 53
        n.cellOverhead = 5
        n.ecn = true
        n.limit = 77
        for mode in [QdiscMode.exclusive, .change] {
            let (nl, t) = recordingSession()
            try nl.addQdisc(ifindex: 1, parent: TCHandle.root, handle: 0, options: .netem(n), mode: mode)
            let back = try #require(Netem(dumpedOptions: try options(t.lastRequest)))
            #expect(n.matches(dumped: back))
        }
    }

    @Test("invalid settings are refused before anything is sent")
    func refusals() throws {
        let (nl, t) = recordingSession()
        var reorderNoDelay = Netem()
        reorderNoDelay.reorder = pct(10)
        var tableNoJitter = Netem()
        tableNoJitter.latency = 1
        tableNoJitter.distribution = .pareto
        for options in [QdiscOptions.netem(reorderNoDelay), .netem(tableNoJitter), .prio(bands: 1, priomap: QdiscOptions.defaultPriomap),
                        .prio(bands: 3, priomap: [UInt8](repeating: 3, count: 16)), .tbf(TBF(rate: 0, burst: 1, limit: .bytes(1)))] {
            #expect(throws: NetlinkError.self) {
                try nl.addQdisc(ifindex: 1, parent: TCHandle.root, handle: 0, options: options, mode: .exclusive)
            }
        }
        #expect(throws: NetlinkError.self) {  // mixed families
            try nl.addU32Filter(ifindex: 1, parent: 1, priority: 1, protocol: EtherType.ipv4,
                match: U32Match(source: IPPrefix("10.0.0.0/8"), destination: IPPrefix("::1")), classID: nil, action: nil)
        }
        #expect(throws: NetlinkError.self) {  // port keys need a known IP version
            try nl.addU32Filter(ifindex: 1, parent: 1, priority: 1, protocol: EtherType.all,
                match: U32Match(destinationPort: 80), classID: nil, action: nil)
        }
        #expect(throws: NetlinkError.self) {  // flower ports need tcp/udp
            try nl.addFlowerFilter(ifindex: 1, parent: 1, priority: 1, protocol: EtherType.ipv4,
                match: U32Match(destinationPort: 80), classID: nil, action: nil)
        }
        #expect(t.state.withLock { $0.sent.isEmpty })
        #expect(Probability(percent: 101) == nil)
        #expect(IPPrefix("10.0.0.0/33") == nil)
        #expect(IPPrefix("10.1.2.3/16")?.description == "10.1.0.0/16")
        #expect(IPPrefix("2001:db8::1/32")?.description == "2001:db8::/32")
    }
}

@Suite("Replies and errors")
struct ReplyTests {
    @Test("an NLMSG_ERROR with extended ACK becomes a NetlinkError carrying the kernel's message")
    func extendedAck() throws {
        let (nl, t) = recordingSession()
        t.state.withLock { $0.nextError = (-22, "netem: invalid attributes len") }
        var n = Netem()
        n.latency = 1
        let error = try #require(throws: NetlinkError.self) {
            try nl.addQdisc(ifindex: 2, parent: TCHandle.root, handle: 0, options: .netem(n), mode: .exclusive)
        }
        #expect(error.errno == 22)
        #expect(error.kernelMessage == "netem: invalid attributes len")
        #expect(error.description == "add qdisc netem on ifindex 2: Invalid argument (kernel: \"netem: invalid attributes len\")")
    }

    @Test("replies with another sequence number or port are skipped")
    func strays() throws {
        let (nl, t) = recordingSession()
        t.state.withLock {
            // A stale error for sequence 999 arrives first; it must not be taken for our answer.
            var payload = [UInt8]()
            withUnsafeBytes(of: Int32(-1)) { payload.append(contentsOf: $0) }
            payload.append(contentsOf: [UInt8](repeating: 0, count: 16))
            $0.pending.append(RecordingTransport.message(type: 2, flags: 0x100, seq: 999, pid: 4242, payload: payload))
        }
        try nl.setLinkUp(index: 3)
    }

    @Test("libmnl/kernel header constants agree with ours")
    func constants() {
        #expect(Int(NL.newQdisc) == Int(RTM_NEWQDISC) && Int(NL.getFilter) == Int(RTM_GETTFILTER) && Int(NL.newLink) == Int(RTM_NEWLINK))
        #expect(Int(NL.tcaKind) == Int(TCA_KIND) && Int(NL.tcaOptions) == Int(TCA_OPTIONS))
        #expect(Int(NL.tcaStab) == Int(TCA_STAB) && Int(NL.tcaIngressBlock) == Int(TCA_INGRESS_BLOCK))
        #expect(Int(NetemAttr.latency64) == Int(TCA_NETEM_LATENCY64) && Int(NetemAttr.rate64) == Int(TCA_NETEM_RATE64))
        #expect(Int(NetemAttr.ecn) == Int(TCA_NETEM_ECN) && Int(NetemAttr.lossGE) == Int(NETEM_LOSS_GE))
        #expect(Int(TBFAttr.burst) == Int(TCA_TBF_BURST) && Int(TBFAttr.pburst) == Int(TCA_TBF_PBURST))
        #expect(Int(FilterAttr.u32Sel) == Int(TCA_U32_SEL) && Int(FilterAttr.u32Act) == Int(TCA_U32_ACT))
        #expect(Int(FilterAttr.flowerFlags) == Int(TCA_FLOWER_FLAGS) && Int(FilterAttr.flowerEthType) == Int(TCA_FLOWER_KEY_ETH_TYPE))
        #expect(Int(FilterAttr.flowerUDPDst) == Int(TCA_FLOWER_KEY_UDP_DST))
        #expect(Int(FilterAttr.mirredParms) == Int(TCA_MIRRED_PARMS) && Int(FilterAttr.egressRedirect) == Int(TCA_EGRESS_REDIR))
        #expect(Int(FilterAttr.actStolen) == Int(TC_ACT_STOLEN) && Int(NL.iflaInfoKind) == Int(IFLA_INFO_KIND))
        #expect(MemoryLayout<tc_netem_qopt>.size == 24 && MemoryLayout<tc_tbf_qopt>.size == 36 && MemoryLayout<tc_mirred>.size == 28)
        #expect(MemoryLayout<tc_u32_sel>.size == 16 && MemoryLayout<tc_u32_key>.size == 16 && MemoryLayout<tc_netem_rate>.size == 16)
    }
}

func hexBytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = hex.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}
