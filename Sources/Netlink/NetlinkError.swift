import Glibc

/// A failed netlink operation: what was attempted, the errno, and the kernel's own explanation when it gave one
/// (the extended ACK's NLMSGERR_ATTR_MSG).
///
/// `description` reads like `add qdisc netem on eth0: Invalid argument (kernel: "netem: invalid attributes len")`.
public struct NetlinkError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What was attempted, e.g. `add qdisc netem on ifindex 3`.
    public var operation: String
    /// A positive errno value (EINVAL, ENOENT, ...).
    public var errno: Int32
    /// The kernel's extended-ACK message, if it sent one.
    public var kernelMessage: String?
    /// The kernel's NLMSGERR_ATTR_MISS_TYPE: the type of a required attribute that was missing, if reported.
    public var missingAttribute: UInt32?

    public init(operation: String, errno: Int32, kernelMessage: String? = nil, missingAttribute: UInt32? = nil) {
        self.operation = operation
        self.errno = errno
        self.kernelMessage = kernelMessage
        self.missingAttribute = missingAttribute
    }

    public var description: String {
        var text = "\(operation): \(String(cString: strerror(errno)))"
        if let kernelMessage, !kernelMessage.isEmpty { text += " (kernel: \"\(kernelMessage)\")" }
        if let missingAttribute { text += " (missing attribute \(missingAttribute))" }
        return text
    }

    /// An argument the caller passed cannot be encoded (EINVAL, detected before anything is sent).
    static func invalid(_ operation: String, _ why: String) -> NetlinkError {
        NetlinkError(operation: operation, errno: EINVAL, kernelMessage: nil).with(reason: why)
    }

    private func with(reason: String) -> NetlinkError {
        var copy = self
        copy.operation = "\(operation): \(reason)"
        return copy
    }
}
