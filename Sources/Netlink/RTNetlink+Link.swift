/// A network interface as RTM_GETLINK reports it.
public struct Link: Sendable, Equatable, Hashable {
    public var index: Int32
    public var name: String
    /// IFLA_INFO_KIND (`veth`, `ifb`, `bridge`, ...); nil for physical devices and loopback.
    public var kind: String?
    /// IFF_UP is set (administratively up).
    public var isUp: Bool

    public init(index: Int32, name: String, kind: String?, isUp: Bool) {
        (self.index, self.name, self.kind, self.isUp) = (index, name, kind, isUp)
    }
}

extension RTNetlink {
    /// The index of interface `name` in this session's namespace, or nil if there is none.
    public func linkIndex(named name: String) throws(NetlinkError) -> Int32? {
        do {
            return try self.request(Self.getLinkRequest(name: name), "look up link \(name)").lazy.compactMap(Self.decodeLink).first?.index
        } catch where error.errno == 19 /* ENODEV */ {
            return nil
        }
    }

    /// The name of interface `index`, or nil if there is none.
    public func linkName(index: Int32) throws(NetlinkError) -> String? {
        do {
            return try self.request(Self.getLinkRequest(index: index), "look up link \(index)").lazy.compactMap(Self.decodeLink).first?.name
        } catch where error.errno == 19 /* ENODEV */ {
            return nil
        }
    }

    /// Every interface in this session's namespace.
    public func links() throws(NetlinkError) -> [Link] {
        try dump(Self.linkDumpRequest(), "list links").compactMap(Self.decodeLink)
    }

    /// Creates an ifb device (`ip link add NAME type ifb`), down.
    public func createIFB(named name: String) throws(NetlinkError) {
        _ = try request(Self.createLinkRequest(name: name, kind: "ifb"), "create ifb \(name)")
    }

    /// Sets IFF_UP on interface `index` (`ip link set dev X up`).
    public func setLinkUp(index: Int32) throws(NetlinkError) {
        _ = try request(Self.setLinkFlagsRequest(index: index, up: true), "set link \(index) up")
    }

    /// Clears IFF_UP on interface `index`.
    public func setLinkDown(index: Int32) throws(NetlinkError) {
        _ = try request(Self.setLinkFlagsRequest(index: index, up: false), "set link \(index) down")
    }

    /// Deletes interface `index` (`ip link del`).
    public func deleteLink(index: Int32) throws(NetlinkError) {
        var m = MessageBuilder(type: NL.delLink, flags: 0)
        m.ifinfomsg(index: index, flags: 0, change: 0)
        _ = try request(m, "delete link \(index)")
    }

    // MARK: - Messages

    static func getLinkRequest(name: String) -> MessageBuilder {
        var m = MessageBuilder(type: NL.getLink, flags: 0)
        m.ifinfomsg(index: 0, flags: 0, change: 0)
        m.attribute(NL.iflaExtMask, integer: NL.rtextFilterSkipStats)
        m.attribute(NL.iflaIfname, string: name)
        return m
    }

    static func getLinkRequest(index: Int32) -> MessageBuilder {
        var m = MessageBuilder(type: NL.getLink, flags: 0)
        m.ifinfomsg(index: index, flags: 0, change: 0)
        m.attribute(NL.iflaExtMask, integer: NL.rtextFilterSkipStats)
        return m
    }

    static func linkDumpRequest() -> MessageBuilder {
        var m = MessageBuilder(type: NL.getLink, flags: 0)
        m.ifinfomsg(index: 0, flags: 0, change: 0)
        m.attribute(NL.iflaExtMask, integer: NL.rtextFilterSkipStats)
        return m
    }

    /// RTM_NEWLINK CREATE|EXCL, IFLA_IFNAME, IFLA_LINKINFO { IFLA_INFO_KIND } (nest without NLA_F_NESTED, as ip sends).
    static func createLinkRequest(name: String, kind: String) -> MessageBuilder {
        var m = MessageBuilder(type: NL.newLink, flags: NL.create | NL.excl)
        m.ifinfomsg(index: 0, flags: 0, change: 0)
        m.attribute(NL.iflaIfname, string: name)
        // IFLA_INFO_KIND without the NUL, as ip sends it (NLA_STRING accepts both).
        m.nest(NL.iflaLinkinfo) { $0.attribute(NL.iflaInfoKind, Array(kind.utf8)) }
        return m
    }

    static func setLinkFlagsRequest(index: Int32, up: Bool) -> MessageBuilder {
        var m = MessageBuilder(type: NL.newLink, flags: 0)
        m.ifinfomsg(index: index, flags: up ? NL.iffUp : 0, change: NL.iffUp)
        return m
    }

    /// struct ifinfomsg (16 B) then IFLA_IFNAME and IFLA_LINKINFO/IFLA_INFO_KIND.
    static func decodeLink(_ message: ReceivedMessage) -> Link? {
        guard message.type == NL.newLink, let index = message.payload.hostInteger(Int32.self, at: 4),
            let flags = message.payload.hostInteger(UInt32.self, at: 8)
        else { return nil }
        let attributes = Attribute.parse(message.payload.dropFirst(16))
        guard let name = attributes[NL.iflaIfname]?.string else { return nil }
        let kind = attributes[NL.iflaLinkinfo]?.nested[NL.iflaInfoKind]?.string
        return Link(index: index, name: name, kind: kind, isUp: flags & NL.iffUp != 0)
    }
}

extension MessageBuilder {
    /// struct ifinfomsg (16 B): u8 family (AF_UNSPEC), u8 pad, u16 type, s32 index, u32 flags, u32 change.
    mutating func ifinfomsg(index: Int32, flags: UInt32, change: UInt32) {
        append(UInt32(0))
        append(index)
        append(flags)
        append(change)
    }
}
