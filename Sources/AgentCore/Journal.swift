import AgentAPI
import Foundation
import Synchronization

/// One line of the journal. Intent records carry everything a revert needs; later records change one lease.
public struct JournalRecord: Codable, Sendable, Equatable {
    public enum RecordType: String, Codable, Sendable {
        /// Written and fsync'd before a fault is applied.
        case intent
        /// A state change (`active`, `reverting`, `reverted`, `failed`), with the error if any.
        case state
        /// A renew: the new deadline and TTL.
        case renew
        /// The revert plan changed after apply (for example what was really touched).
        case plan
    }

    public var type: RecordType
    public var id: String
    public var at: Date
    public var kind: String?
    public var spec: JSONValue?
    public var target: JSONValue?
    public var plan: JSONValue?
    public var claims: [String]?
    public var owner: String?
    public var labels: [String: String]?
    public var createdAt: Date?
    public var expiresAt: Date?
    public var ttl: String?
    public var state: FaultState?
    public var error: String?

    public init(type: RecordType, id: String, at: Date) {
        self.type = type
        self.id = id
        self.at = at
    }
}

/// A lease as the journal remembers it: the intent folded with every later record.
public struct JournaledLease: Sendable, Equatable {
    public var id: String
    public var kind: String
    public var spec: JSONValue
    public var target: JSONValue
    public var plan: JSONValue
    public var claims: [String]
    public var owner: String
    public var labels: [String: String]
    public var createdAt: Date
    public var expiresAt: Date
    public var ttl: String
    public var state: FaultState
    public var error: String?

    /// The intent record that recreates this lease as it is now (used by compaction).
    var asIntent: JournalRecord {
        var r = JournalRecord(type: .intent, id: id, at: createdAt)
        r.kind = kind
        r.spec = spec
        r.target = target
        r.plan = plan
        r.claims = claims
        r.owner = owner
        r.labels = labels
        r.createdAt = createdAt
        r.expiresAt = expiresAt
        r.ttl = ttl
        r.state = state
        r.error = error
        return r
    }
}

/// What reading the journal found.
public struct JournalReplay: Sendable {
    /// Every lease named by an intent, in journal order, folded to its latest state.
    public var leases: [JournaledLease]
    public var goodRecords: Int
    /// Lines that were torn (no newline at the end: a write cut short) or failed their checksum or decoding.
    public var badLines: Int
    public var badBytes: Int
    /// Records naming a lease with no intent.
    public var orphanRecords: Int

    /// Leases whose fault may still be on the host.
    public var unreverted: [JournaledLease] { leases.filter { !$0.state.isFinal } }
}

/// An append-only, fsync'd, checksummed journal of lease intents and state changes under the state directory.
///
/// Each line is `CRC32HEX JSON\n`. A torn or corrupt line (power cut mid-write, a flipped bit) is skipped and
/// reported; every good line, before and after it, is kept. The file is compacted (rewritten with only the leases
/// that may still be on the host, then atomically renamed) when it has grown past `compactAfter` records.
public final class Journal: Sendable {
    public let path: String
    public let compactAfter: Int
    private struct State {
        var fd: Int32
        var records: Int
        var live: [String: JournaledLease]
        var order: [String]
    }
    private let state: Mutex<State>

    /// Opens (creating if needed) the journal in `directory` and replays it.
    public init(directory: String, compactAfter: Int = 4096) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/journal.log"
        self.compactAfter = compactAfter
        let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw JournalError.io("open \(path)", errno) }
        state = Mutex(State(fd: fd, records: 0, live: [:], order: []))
    }

    deinit {
        _ = state.withLock { close($0.fd) }
    }

    /// Reads every record from disk. Call once after opening; then `compact()` to drop what is finished and any
    /// corrupt lines.
    public func replay() throws -> JournalReplay {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        var leases: [String: JournaledLease] = [:]
        var order: [String] = []
        var good = 0
        var bad = 0
        var badBytes = 0
        var orphans = 0
        let decoder = WireCoding.decoder()
        var start = data.startIndex
        while start < data.endIndex {
            let end = data[start...].firstIndex(of: UInt8(ascii: "\n"))
            let line = data[start..<(end ?? data.endIndex)]
            start = end.map { $0 + 1 } ?? data.endIndex
            guard end != nil, let record = Self.decodeLine(line, decoder: decoder) else {
                if !line.isEmpty || end == nil {
                    bad += 1
                    badBytes += line.count + (end == nil ? 0 : 1)
                }
                continue
            }
            good += 1
            if record.type == .intent {
                guard let lease = Self.lease(fromIntent: record) else {
                    bad += 1
                    continue
                }
                if leases[record.id] == nil { order.append(record.id) }
                leases[record.id] = lease
            } else if var lease = leases[record.id] {
                Self.apply(record, to: &lease)
                leases[record.id] = lease
            } else {
                orphans += 1
            }
        }
        state.withLock { s in
            s.records = good
            s.live = leases.filter { !$0.value.state.isFinal }
            s.order = order.filter { s.live[$0] != nil }
        }
        return JournalReplay(
            leases: order.compactMap { leases[$0] }, goodRecords: good, badLines: bad, badBytes: badBytes,
            orphanRecords: orphans)
    }

    /// Appends one record and fsyncs it before returning.
    public func append(_ record: JournalRecord) throws {
        let line = try Self.encodeLine(record)
        try state.withLock { s in
            try Self.writeAll(fd: s.fd, line)
            guard fdatasync(s.fd) == 0 else { throw JournalError.io("fdatasync \(path)", errno) }
            s.records += 1
            if record.type == .intent, let lease = Self.lease(fromIntent: record) {
                if s.live[record.id] == nil { s.order.append(record.id) }
                s.live[record.id] = lease
            } else if var lease = s.live[record.id] {
                Self.apply(record, to: &lease)
                if lease.state.isFinal {
                    s.live.removeValue(forKey: record.id)
                } else {
                    s.live[record.id] = lease
                }
            }
            if s.records >= compactAfter && s.records > 4 * max(s.live.count, 1) {
                try compactLocked(&s)
            }
        }
    }

    /// Rewrites the journal with only the leases that may still be on the host.
    public func compact() throws {
        try state.withLock { try compactLocked(&$0) }
    }

    /// Number of records in the file now.
    public var recordCount: Int { state.withLock { $0.records } }

    /// Leases the journal says may still be on the host.
    public var liveLeases: [JournaledLease] { state.withLock { s in s.order.compactMap { s.live[$0] } } }

    private func compactLocked(_ s: inout State) throws {
        s.order = s.order.filter { s.live[$0] != nil }
        var body = Data()
        for id in s.order {
            if let lease = s.live[id] { body.append(try Self.encodeLine(lease.asIntent)) }
        }
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw JournalError.io("open \(tmp)", errno) }
        do {
            try Self.writeAll(fd: fd, body)
            guard fsync(fd) == 0 else { throw JournalError.io("fsync \(tmp)", errno) }
        } catch {
            close(fd)
            throw error
        }
        close(fd)
        guard rename(tmp, path) == 0 else { throw JournalError.io("rename \(tmp)", errno) }
        Self.fsyncDirectory(of: path)
        let newFD = open(path, O_RDWR | O_APPEND | O_CLOEXEC)
        guard newFD >= 0 else { throw JournalError.io("reopen \(path)", errno) }
        close(s.fd)
        s.fd = newFD
        s.records = s.order.count
    }

    // MARK: - Encoding

    static func encodeLine(_ record: JournalRecord) throws -> Data {
        let json = try WireCoding.encoder().encode(record)
        var line = Data(String(format: "%08x ", CRC32.checksum(json)).utf8)
        line.append(json)
        line.append(UInt8(ascii: "\n"))
        return line
    }

    static func decodeLine(_ line: Data.SubSequence, decoder: JSONDecoder) -> JournalRecord? {
        guard line.count > 9, line[line.startIndex + 8] == UInt8(ascii: " "),
            let crc = UInt32(String(decoding: line.prefix(8), as: UTF8.self), radix: 16)
        else { return nil }
        let json = Data(line.dropFirst(9))
        guard CRC32.checksum(json) == crc else { return nil }
        return try? decoder.decode(JournalRecord.self, from: json)
    }

    static func lease(fromIntent r: JournalRecord) -> JournaledLease? {
        guard let kind = r.kind, let createdAt = r.createdAt, let expiresAt = r.expiresAt else { return nil }
        return JournaledLease(
            id: r.id, kind: kind, spec: r.spec ?? .null, target: r.target ?? .null, plan: r.plan ?? .null,
            claims: r.claims ?? [], owner: r.owner ?? "unknown", labels: r.labels ?? [:], createdAt: createdAt,
            expiresAt: expiresAt, ttl: r.ttl ?? "", state: r.state ?? .applying, error: r.error)
    }

    static func apply(_ r: JournalRecord, to lease: inout JournaledLease) {
        switch r.type {
        case .intent: break
        case .state:
            if let s = r.state { lease.state = s }
            lease.error = r.error
        case .renew:
            if let e = r.expiresAt { lease.expiresAt = e }
            if let t = r.ttl { lease.ttl = t }
        case .plan:
            if let p = r.plan { lease.plan = p }
            if let t = r.target { lease.target = t }
        }
    }

    private static func writeAll(fd: Int32, _ data: Data) throws {
        try data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw JournalError.io("write journal", errno)
                }
                offset += n
            }
        }
    }

    private static func fsyncDirectory(of path: String) {
        let dir = (path as NSString).deletingLastPathComponent
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}

public enum JournalError: Error, CustomStringConvertible, Sendable {
    case io(String, Int32)
    public var description: String {
        switch self {
        case .io(let what, let e): return "journal: \(what): \(String(cString: strerror(e)))"
        }
    }
}

/// CRC-32 (IEEE 802.3, the zlib polynomial) for journal lines.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ data: Data) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
