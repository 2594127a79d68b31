/// tc handles and parents: 32-bit `major:minor` values.
public enum TCHandle {
    /// `major << 16 | minor` (TC_H_MAKE).
    public static func make(major: UInt16, minor: UInt16) -> UInt32 { UInt32(major) << 16 | UInt32(minor) }
    public static func major(_ handle: UInt32) -> UInt16 { UInt16(handle >> 16) }
    public static func minor(_ handle: UInt32) -> UInt16 { UInt16(handle & 0xFFFF) }

    /// Parent of a root qdisc (TC_H_ROOT).
    public static let root: UInt32 = 0xFFFF_FFFF
    /// Unspecified handle: the kernel picks one (TC_H_UNSPEC).
    public static let unspecified: UInt32 = 0
    /// Parent of an ingress or clsact qdisc (TC_H_INGRESS = TC_H_CLSACT).
    public static let ingress: UInt32 = 0xFFFF_FFF1
    /// The handle an ingress or clsact qdisc always has (ffff:).
    public static let clsactHandle: UInt32 = 0xFFFF_0000
    /// Filter parent for the ingress hook of a clsact qdisc (ffff:fff2, TC_H_MIN_INGRESS).
    public static let clsactIngress: UInt32 = 0xFFFF_FFF2
    /// Filter parent for the egress hook of a clsact qdisc (ffff:fff3, TC_H_MIN_EGRESS).
    public static let clsactEgress: UInt32 = 0xFFFF_FFF3

    /// `1:2`-style text, as tc prints it (`root`, `ingress` for the special parents).
    public static func describe(_ handle: UInt32) -> String {
        switch handle {
        case root: return "root"
        case ingress: return "ingress"
        default: return String(major(handle), radix: 16) + ":" + (minor(handle) == 0 ? "" : String(minor(handle), radix: 16))
        }
    }
}

/// Ethernet protocol numbers used as a filter's protocol (host order; sent big-endian in tcm_info).
public enum EtherType {
    public static let ipv4: UInt16 = 0x0800  // ETH_P_IP
    public static let ipv6: UInt16 = 0x86DD  // ETH_P_IPV6
    public static let all: UInt16 = 0x0003  // ETH_P_ALL
}

/// struct tcmsg (20 B): u8 family (AF_UNSPEC), u8 + u16 padding, s32 ifindex, u32 handle, u32 parent, u32 info.
extension MessageBuilder {
    mutating func tcmsg(ifindex: Int32, handle: UInt32, parent: UInt32, info: UInt32) {
        append(UInt32(0))
        append(ifindex)
        append(handle)
        append(parent)
        append(info)
    }
}

/// Decoded struct tcmsg.
struct TCMessageHeader {
    var ifindex: Int32
    var handle: UInt32
    var parent: UInt32
    var info: UInt32
    static let size = 20

    init?(_ payload: ArraySlice<UInt8>) {
        guard let ifindex = payload.hostInteger(Int32.self, at: 4), let handle = payload.hostInteger(UInt32.self, at: 8),
            let parent = payload.hostInteger(UInt32.self, at: 12), let info = payload.hostInteger(UInt32.self, at: 16)
        else { return nil }
        (self.ifindex, self.handle, self.parent, self.info) = (ifindex, handle, parent, info)
    }
}
