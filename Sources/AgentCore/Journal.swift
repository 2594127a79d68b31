import AgentAPI
import CoreMetrics
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

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
        /// An idempotency key kept after its lease ended (written by compaction; intents carry the key otherwise).
        case key
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
    /// Heartbeat interval as written (`10s`), on intents of heartbeat leases.
    public var heartbeat: String?
    /// `Idempotency-Key` of the request that created the lease, and a digest of its body.
    public var idempotencyKey: String?
    public var requestHash: String?

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
    public var heartbeat: String?
    public var idempotencyKey: String?
    public var requestHash: String?

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
        r.heartbeat = heartbeat
        r.idempotencyKey = idempotencyKey
        r.requestHash = requestHash
        return r
    }
}

/// An `Idempotency-Key` the agent remembers: which fault it created and a digest of the request body.
public struct IdempotencyEntry: Sendable, Equatable {
    public var key: String
    public var faultID: String
    public var requestHash: String
    public var at: Date

    public init(key: String, faultID: String, requestHash: String, at: Date) {
        self.key = key
        self.faultID = faultID
        self.requestHash = requestHash
        self.at = at
    }

    var record: JournalRecord {
        var r = JournalRecord(type: .key, id: faultID, at: at)
        r.idempotencyKey = key
        r.requestHash = requestHash
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
    /// Idempotency keys still within their retention, oldest first.
    public var keys: [IdempotencyEntry] = []

    /// Leases whose fault may still be on the host.
    public var unreverted: [JournaledLease] { leases.filter { !$0.state.isFinal } }
}

/// The system calls the journal writes through; tests replace them to inject ENOSPC, EIO and short writes.
public struct JournalIO: Sendable {
    public var write: @Sendable (Int32, UnsafeRawPointer, Int) -> Int
    public var fdatasync: @Sendable (Int32) -> Int32
    public var ftruncate: @Sendable (Int32, off_t) -> Int32

    public init(
        write: @escaping @Sendable (Int32, UnsafeRawPointer, Int) -> Int,
        fdatasync: @escaping @Sendable (Int32) -> Int32,
        ftruncate: @escaping @Sendable (Int32, off_t) -> Int32
    ) {
        self.write = write
        self.fdatasync = fdatasync
        self.ftruncate = ftruncate
    }

    public static let system = JournalIO(
        write: { fd, p, n in Glibc.write(fd, p, n) }, fdatasync: { Glibc.fdatasync($0) },
        ftruncate: { Glibc.ftruncate($0, $1) })
}

/// An append-only, fsync'd, checksummed journal of lease intents and state changes under the state directory.
///
/// Each line is `CRC32HEX JSON\n`. A torn or corrupt line (power cut mid-write, a flipped bit) is skipped and
/// reported; every good line, before and after it, is kept (a good record glued to a torn fragment is found inside
/// it). An append that fails (ENOSPC, EIO, a short write, a failed fdatasync) is cut back off the file (ftruncate to
/// the last good offset), so the file holds exactly the good lines it held before; if even that fails the journal is
/// `broken` and refuses appends (each tries the repair again first) until the file is whole again. The file is compacted (rewritten with only the leases
/// that may still be on the host, then atomically renamed) when it has grown past `compactAfter` records.
public final class Journal: Sendable {
    public let path: String
    public let compactAfter: Int
    /// Idempotency keys are kept this long, and at most `maxKeys` of them (the oldest go first).
    public let keyRetention: TimeInterval
    public let maxKeys: Int
    private struct State {
        var fd: Int32
        var records: Int
        var live: [String: JournaledLease]
        var order: [String]
        var keys: [String: IdempotencyEntry] = [:]
        /// The file's length after the last good line: a failed append is truncated back to it.
        var goodOffset: off_t = 0
        /// Set when a failed append could not be cut back off the file; appends refuse until a repair works.
        var broken: String?
    }
    private let state: Mutex<State>
    private let io: JournalIO

    /// Opens (creating if needed) the journal in `directory` and replays it.
    public init(
        directory: String, compactAfter: Int = 4096, keyRetention: TimeInterval = 24 * 3600, maxKeys: Int = 10_000,
        io: JournalIO = .system
    ) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/journal.log"
        self.compactAfter = compactAfter
        self.keyRetention = keyRetention
        self.maxKeys = maxKeys
        self.io = io
        let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw JournalError.io("open \(path)", errno) }
        var st = stat()
        let size = fstat(fd, &st) == 0 ? st.st_size : 0
        state = Mutex(State(fd: fd, records: 0, live: [:], order: [], goodOffset: size))
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
        var keys: [String: IdempotencyEntry] = [:]
        let decoder = WireCoding.decoder()
        var start = data.startIndex
        var records: [JournalRecord] = []
        while start < data.endIndex {
            let end = data[start...].firstIndex(of: UInt8(ascii: "\n"))
            let line = data[start..<(end ?? data.endIndex)]
            start = end.map { $0 + 1 } ?? data.endIndex
            if end != nil, let record = Self.decodeLine(line, decoder: decoder) {
                records.append(record)
                continue
            }
            // A bad line never swallows a good one: a torn fragment (no newline) followed by a whole record reads as
            // one line, so look for a good record starting later inside it.
            let (found, skipped) = end == nil ? (nil, line.count) : Self.recover(line, decoder: decoder)
            if skipped > 0 || (end == nil && !line.isEmpty) {
                bad += 1
                badBytes += skipped
            }
            if let found { records.append(found) }
        }
        for record in records {
            good += 1
            if let entry = Self.keyEntry(record) { keys[entry.key] = entry }
            if record.type == .key { continue }
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
        // A lease whose apply failed never took effect: its key is free for a retry.
        keys = keys.filter { leases[$0.value.faultID]?.state != .failed }
        // A torn tail (no newline: a write cut short by a crash) is cut off, so the next append starts a line.
        let whole = off_t(data.lastIndex(of: UInt8(ascii: "\n")).map { $0 - data.startIndex + 1 } ?? 0)
        let kept = state.withLock { s in
            if whole < off_t(data.count), io.ftruncate(s.fd, whole) == 0 { _ = io.fdatasync(s.fd) }
            var st = stat()
            s.goodOffset = fstat(s.fd, &st) == 0 ? st.st_size : whole
            s.records = good
            s.live = leases.filter { !$0.value.state.isFinal }
            s.order = order.filter { s.live[$0] != nil }
            s.keys = keys
            pruneKeys(&s, now: Date())
            return s.keys.values.sorted { $0.at < $1.at }
        }
        var replay = JournalReplay(
            leases: order.compactMap { leases[$0] }, goodRecords: good, badLines: bad, badBytes: badBytes,
            orphanRecords: orphans)
        replay.keys = kept
        return replay
    }

    /// Appends one record and fsyncs it before returning. On any failure the file is cut back to what it was before
    /// (the error is thrown); if that cut fails too the journal is `broken` and refuses appends until a repair works.
    public func append(_ record: JournalRecord) throws {
        let line = try Self.encodeLine(record)
        try state.withLock { s in
            if let why = s.broken {
                // Try the repair again: the disk may have room now, or the error may have passed.
                guard io.ftruncate(s.fd, s.goodOffset) == 0, io.fdatasync(s.fd) == 0 else {
                    throw JournalError.broken(path, why)
                }
                s.broken = nil
            }
            do {
                try writeAll(fd: s.fd, line)
                let started = ContinuousClock.now
                guard io.fdatasync(s.fd) == 0 else { throw JournalError.io("fdatasync \(path)", errno) }
                CoreMetrics.Timer(label: "chaos_agent_journal_fsync_duration_seconds")
                    .recordNanoseconds(EngineMetrics.nanoseconds(ContinuousClock.now - started))
            } catch {
                // Nothing of this record may stay: a fragment would glue the next record onto itself.
                if io.ftruncate(s.fd, s.goodOffset) != 0 {
                    s.broken = "\(error); truncating back to \(s.goodOffset) bytes failed too: \(String(cString: strerror(errno)))"
                    throw JournalError.broken(path, s.broken!)
                }
                _ = io.fdatasync(s.fd)
                throw error
            }
            s.goodOffset += off_t(line.count)
            s.records += 1
            if let entry = Self.keyEntry(record) {
                s.keys[entry.key] = entry
                if s.keys.count > maxKeys { pruneKeys(&s, now: Date()) }
            }
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
            if s.records >= compactAfter + s.keys.count && s.records > 4 * max(s.live.count + s.keys.count, 1) {
                // The record is durable: a compaction that fails (no space for the copy) must not make it look lost.
                try? compactLocked(&s)
            }
        }
    }

    /// Rewrites the journal with only the leases that may still be on the host.
    public func compact() throws {
        try state.withLock { try compactLocked(&$0) }
    }

    /// Why appends are refused (a failed append could not be cut back off the file), or nil.
    public var brokenReason: String? { state.withLock { $0.broken } }

    /// Number of records in the file now.
    public var recordCount: Int { state.withLock { $0.records } }

    /// Leases the journal says may still be on the host.
    public var liveLeases: [JournaledLease] { state.withLock { s in s.order.compactMap { s.live[$0] } } }

    /// Forgets an idempotency key (its apply failed, so a retry may try again). Not journaled: replay drops keys of
    /// failed leases by itself.
    public func forgetKey(_ key: String) {
        state.withLock { _ = $0.keys.removeValue(forKey: key) }
    }

    /// Keys older than the retention, then the oldest beyond `maxKeys`.
    private func pruneKeys(_ s: inout State, now: Date) {
        let cutoff = now.addingTimeInterval(-keyRetention)
        s.keys = s.keys.filter { $0.value.at >= cutoff }
        if s.keys.count > maxKeys {
            let drop = s.keys.values.sorted { $0.at < $1.at }.prefix(s.keys.count - maxKeys)
            for e in drop { s.keys.removeValue(forKey: e.key) }
        }
    }

    static func keyEntry(_ r: JournalRecord) -> IdempotencyEntry? {
        guard r.type == .intent || r.type == .key, let key = r.idempotencyKey, let hash = r.requestHash else { return nil }
        return IdempotencyEntry(key: key, faultID: r.id, requestHash: hash, at: r.createdAt ?? r.at)
    }


    private func compactLocked(_ s: inout State) throws {
        s.order = s.order.filter { s.live[$0] != nil }
        pruneKeys(&s, now: Date())
        var body = Data()
        for id in s.order {
            if let lease = s.live[id] { body.append(try Self.encodeLine(lease.asIntent)) }
        }
        // Keys of leases that ended stay as key records, so a retry after the lease is gone is still recognised.
        for entry in s.keys.values.sorted(by: { $0.at < $1.at }) where s.live[entry.faultID]?.idempotencyKey != entry.key {
            body.append(try Self.encodeLine(entry.record))
        }
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw JournalError.io("open \(tmp)", errno) }
        do {
            try writeAll(fd: fd, body)
            guard io.fdatasync(fd) == 0 else { throw JournalError.io("fsync \(tmp)", errno) }
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw JournalError.io("rename \(tmp)", e)
        }
        Self.fsyncDirectory(of: path)
        let newFD = open(path, O_RDWR | O_APPEND | O_CLOEXEC)
        guard newFD >= 0 else { throw JournalError.io("reopen \(path)", errno) }
        close(s.fd)
        s.fd = newFD
        s.goodOffset = off_t(body.count)
        s.broken = nil
        s.records = s.order.count + s.keys.count
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

    /// The first good record that starts inside a bad line (after a torn fragment with no newline), and how many
    /// bytes before it (or of the whole line) are bad.
    static func recover(_ line: Data.SubSequence, decoder: JSONDecoder) -> (JournalRecord?, Int) {
        var i = line.startIndex + 1
        while i + 9 < line.endIndex {
            // A record starts with 8 hex digits, a space and '{'.
            if line[i + 8] == UInt8(ascii: " "), line[i + 9] == UInt8(ascii: "{"),
                line[i..<(i + 8)].allSatisfy({ Self.isHex($0) }), let r = decodeLine(line[i...], decoder: decoder)
            {
                return (r, i - line.startIndex)
            }
            i += 1
        }
        return (nil, line.count)
    }

    static func isHex(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46)
    }

    static func lease(fromIntent r: JournalRecord) -> JournaledLease? {
        guard let kind = r.kind, let createdAt = r.createdAt, let expiresAt = r.expiresAt else { return nil }
        return JournaledLease(
            id: r.id, kind: kind, spec: r.spec ?? .null, target: r.target ?? .null, plan: r.plan ?? .null,
            claims: r.claims ?? [], owner: r.owner ?? "unknown", labels: r.labels ?? [:], createdAt: createdAt,
            expiresAt: expiresAt, ttl: r.ttl ?? "", state: r.state ?? .applying, error: r.error, heartbeat: r.heartbeat,
            idempotencyKey: r.idempotencyKey, requestHash: r.requestHash)
    }

    static func apply(_ r: JournalRecord, to lease: inout JournaledLease) {
        switch r.type {
        case .intent, .key: break
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

    private func writeAll(fd: Int32, _ data: Data) throws {
        try data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = io.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw JournalError.io("write \(path)", errno)
                }
                // A write that makes no progress (a full device answering 0) would loop for ever.
                if n == 0 { throw JournalError.io("write \(path) (no progress)", ENOSPC) }
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
    /// A failed append could not be cut back off the file (path, why): appends are refused until it can.
    case broken(String, String)
    public var description: String {
        switch self {
        case .io(let what, let e): return "journal: \(what): \(String(cString: strerror(e)))"
        case .broken(let path, let why):
            return "journal \(path) is refusing writes: a failed append could not be removed (\(why))"
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
