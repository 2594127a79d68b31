/// Several change requests sent to the kernel in one `sendmsg` and acknowledged in one pass: what keeps a fault's
/// whole tree (root, fault qdisc, filters) to a single round trip instead of one per object.
///
/// The kernel handles the messages of a datagram in order and answers each with its own ACK; a failing message does
/// not stop the ones after it, so a batch is not a transaction: on failure the caller undoes what it asked for (the
/// network driver's revert is idempotent for exactly this). `RTNetlink.perform` throws the error of the first message
/// that failed, in batch order, with the kernel's extended-ACK text.
public struct NetlinkBatch: Sendable {
    struct Item: Sendable {
        var message: MessageBuilder
        var operation: String
    }
    var items: [Item] = []

    public init() {}

    public var count: Int { items.count }
    public var isEmpty: Bool { items.isEmpty }

    public mutating func addQdisc(
        ifindex: Int32, parent: UInt32, handle: UInt32, options: QdiscOptions, mode: QdiscMode
    ) throws(NetlinkError) {
        let m = try RTNetlink.addQdiscRequest(ifindex: ifindex, parent: parent, handle: handle, options: options, mode: mode)
        items.append(Item(message: m, operation: "\(RTNetlink.verb(mode)) qdisc \(options.kind) on ifindex \(ifindex)"))
    }

    public mutating func addQdisc(raw qdisc: Qdisc, mode: QdiscMode) {
        items.append(
            Item(
                message: RTNetlink.addRawQdiscRequest(qdisc, mode: mode),
                operation: "\(RTNetlink.verb(mode)) qdisc \(qdisc.kind) on ifindex \(qdisc.ifindex)"))
    }

    public mutating func deleteQdisc(ifindex: Int32, parent: UInt32, handle: UInt32) {
        items.append(
            Item(
                message: RTNetlink.deleteQdiscRequest(ifindex: ifindex, parent: parent, handle: handle),
                operation: "delete qdisc \(TCHandle.describe(handle)) (parent \(TCHandle.describe(parent))) on ifindex \(ifindex)"))
    }

    public mutating func addClsact(ifindex: Int32) throws(NetlinkError) {
        try addQdisc(ifindex: ifindex, parent: TCHandle.ingress, handle: TCHandle.clsactHandle, options: .clsact, mode: .exclusive)
    }

    public mutating func addU32Filter(
        ifindex: Int32, parent: UInt32, priority: UInt16, protocol: UInt16, match: U32Match, classID: UInt32?,
        action: FilterAction?
    ) throws(NetlinkError) {
        try addFilter("u32", ifindex, parent, priority, `protocol`, match, classID, action, RTNetlink.u32FilterRequest)
    }

    public mutating func addFlowerFilter(
        ifindex: Int32, parent: UInt32, priority: UInt16, protocol: UInt16, match: U32Match, classID: UInt32?,
        action: FilterAction?
    ) throws(NetlinkError) {
        try addFilter("flower", ifindex, parent, priority, `protocol`, match, classID, action, RTNetlink.flowerFilterRequest)
    }

    private mutating func addFilter(
        _ kind: String, _ ifindex: Int32, _ parent: UInt32, _ priority: UInt16, _ proto: UInt16, _ match: U32Match,
        _ classID: UInt32?, _ action: FilterAction?,
        _ build: (Int32, UInt32, UInt16, UInt16, U32Match, UInt32?, FilterAction?, String) throws(NetlinkError) -> MessageBuilder
    ) throws(NetlinkError) {
        let operation = "add \(kind) filter prio \(priority) on ifindex \(ifindex)"
        let m = try build(ifindex, parent, priority, proto, match, classID, action, operation)
        items.append(Item(message: m, operation: operation))
    }

    public mutating func deleteFilter(ifindex: Int32, parent: UInt32, priority: UInt16, protocol: UInt16) {
        items.append(
            Item(
                message: RTNetlink.deleteFilterRequest(ifindex: ifindex, parent: parent, priority: priority, protocol: `protocol`),
                operation: "delete filter prio \(priority) on ifindex \(ifindex)"))
    }
}

extension RTNetlink {
    /// Sends every request of `batch` in one datagram (each with NLM_F_ACK and its own sequence number) and waits for
    /// all their answers. Throws the first failure in batch order; the requests after it were still attempted.
    public func perform(_ batch: NetlinkBatch) throws(NetlinkError) {
        guard !batch.isEmpty else { return }
        if batch.count == 1 {
            _ = try request(batch.items[0].message, batch.items[0].operation)
            return
        }
        try exchangeBatch(batch.items.map { ($0.message, $0.operation) })
    }
}
