import AgentAPI
import AgentCore
import CShims
import Cgroups
import Foundation

/// `disk-fill`: one file (`.chaos-agent-fill-<uuid>` in the given directory) allocated with fallocate(2) (or written
/// with zeros where the file system cannot preallocate) until `size` bytes are used or only `leaveFree` bytes remain
/// free for unprivileged users. Removed at revert. Refused when it would leave less than the safety reserve
/// (`[policy] resource-reserve`). One fill per file system at a time (409), so two fills never race for the same space.
public struct DiskFillDriver: FaultDriver {
    public let kind = "disk-fill"
    static let filePrefix = ".chaos-agent-fill-"
    let reserve: UInt64
    /// Every fill file this agent created, on persistent storage: the journal lives on tmpfs, so after a reboot only
    /// this names a fill file left on a persistent file system.
    let registry: LeftoverRegistry
    /// `[disk-fill] allow-memory-backed`: fills on tmpfs/devtmpfs/ramfs/hugetlbfs (RAM, not disk) are refused unless
    /// set, and then bounded by the memory reserve.
    let allowMemoryBacked: Bool
    /// Where MemTotal and MemAvailable come from (tests point it elsewhere).
    let memInfoPath: String

    struct Plan: Codable, Sendable, Equatable {
        var path: String
        var file: String
        var bytes: UInt64
        var freeBefore: UInt64
        var device: UInt64
    }

    struct Target: Codable, Sendable, Equatable {
        var path: String
        var file: String
        var bytes: UInt64
        var freeBefore: UInt64
        var freeAfter: UInt64?
        var method: String?
    }

    /// `registryDir`: where the registry goes (created if missing; `StateDirectory=chaos-agent` under systemd). One
    /// file per state directory, so agents with different state directories never touch each other's fills.
    public init(
        reserve: UInt64, registryDir: String? = "/var/lib/chaos-agent", stateDir: String = "/run/chaos-agent",
        allowMemoryBacked: Bool = false, memInfoPath: String = "/proc/meminfo"
    ) {
        self.reserve = reserve
        registry = LeftoverRegistry(directory: registryDir, name: "disk-fill", stateDir: stateDir)
        self.allowMemoryBacked = allowMemoryBacked
        self.memInfoPath = memInfoPath
    }

    /// File systems whose blocks are memory (statfs f_type magic): devtmpfs reports tmpfs's magic (or ramfs's).
    static let memoryBackedTypes: [Int: String] = [
        0x0102_1994: "tmpfs (or devtmpfs)", 0x8584_58f6: "ramfs", 0x9584_58f6: "hugetlbfs",
    ]

    /// Memory a memory-backed fill must leave available: max(10% of MemTotal, 256 MiB).
    static func memoryReserve(total: UInt64) -> UInt64 { max(total / 10, 256 << 20) }

    /// (MemTotal, MemAvailable) in bytes from a /proc/meminfo-format file.
    static func memInfo(_ path: String) -> (total: UInt64, available: UInt64)? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        var total: UInt64?, available: UInt64?
        for line in text.split(separator: "\n") {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == ":" })
            guard parts.count >= 2, let kib = UInt64(parts[1]) else { continue }
            if parts[0] == "MemTotal" { total = kib * 1024 }
            if parts[0] == "MemAvailable" { available = kib * 1024 }
        }
        guard let total, let available else { return nil }
        return (total, available)
    }

    /// Refuses a fill on a memory-backed file system unless allowed, and then (given `bytes`) unless the memory
    /// reserve stays available.
    func checkMemoryBacked(_ path: String, _ space: Space, bytes: UInt64? = nil, field: String = "spec.size") throws {
        guard let name = Self.memoryBackedTypes[space.fsType] else { return }
        guard allowMemoryBacked else {
            throw AgentError.refused(
                "\(path) is on \(name) (statfs f_type 0x\(String(space.fsType, radix: 16))): its blocks are memory, not "
                    + "disk, so filling it takes RAM; refused unless [disk-fill] allow-memory-backed = true", field: "spec.path")
        }
        guard let bytes else { return }
        guard let mem = Self.memInfo(memInfoPath) else {
            throw AgentError.refused("\(path) is memory-backed and \(memInfoPath) cannot be read to bound the fill", field: field)
        }
        let keep = Self.memoryReserve(total: mem.total)
        guard mem.available >= keep, mem.available - keep >= bytes else {
            throw AgentError.refused(
                "filling \(Self.show(bytes)) on \(name) at \(path) takes memory: \(Self.show(mem.available)) is available "
                    + "and the agent keeps at least \(Self.show(keep)) (max of 10% of MemTotal and 256MiB)", field: field)
        }
    }

    public func availability() -> KindAvailability { KindAvailability(kind: kind, available: true) }

    /// Free space as an unprivileged writer sees it (f_bavail), the file system's flags, its device.
    struct Space {
        var available: UInt64
        var readOnly: Bool
        var device: UInt64
        /// statfs f_type (the file system's magic number).
        var fsType: Int = 0
    }

    static func space(_ path: String) throws -> Space {
        var v = statvfs()
        guard statvfs(path, &v) == 0 else {
            throw AgentError.refused("cannot stat the file system of \(path): \(String(cString: strerror(errno)))", field: "spec.path")
        }
        var st = stat()
        _ = stat(path, &st)
        var fsType: Int64 = 0
        let type = cshim_statfs_type(path, &fsType) == 0 ? Int(fsType) : 0
        return Space(
            available: UInt64(v.f_bavail) * UInt64(v.f_frsize), readOnly: v.f_flag & UInt(ST_RDONLY) != 0,
            device: UInt64(st.st_dev), fsType: type)
    }

    public func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        let reader = try SpecReader(spec, kind: kind, allowed: ["path", "size", "leaveFree"])
        let path = try ResourcePaths.directory(reader)
        let sizeText = try reader.string("size")
        let leaveText = try reader.string("leaveFree")
        guard (sizeText == nil) != (leaveText == nil) else {
            throw AgentError.badRequest(
                sizeText == nil ? "give size (bytes to fill) or leaveFree (bytes to leave free)" : "give only one of size and leaveFree",
                field: sizeText == nil ? "spec.size" : "spec.leaveFree")
        }
        let space = try Self.space(path)
        if space.readOnly {
            throw AgentError.refused("\(path) is on a read-only file system", field: "spec.path")
        }
        try checkMemoryBacked(path, space)
        let bytes: UInt64
        if let sizeText {
            guard let n = Units.parseSize(sizeText), n > 0 else {
                throw AgentError.badRequest("size '\(sizeText)' is not a size above zero (e.g. 512MiB, 2GiB)", field: "spec.size")
            }
            guard n <= space.available, space.available - n >= reserve else {
                throw AgentError.refused(
                    "filling \(Self.show(n)) would leave \(n > space.available ? "nothing" : Self.show(space.available - n)) free on the file system of \(path) "
                        + "(\(Self.show(space.available)) free now); the agent keeps at least \(Self.show(reserve)) free ([policy] resource-reserve)",
                    field: "spec.size")
            }
            bytes = n
        } else {
            let leaveText = leaveText!
            guard let leave = Units.parseSize(leaveText) else {
                throw AgentError.badRequest("leaveFree '\(leaveText)' is not a size (e.g. 100MiB)", field: "spec.leaveFree")
            }
            guard leave >= reserve else {
                throw AgentError.refused(
                    "leaveFree \(Self.show(leave)) is below the safety reserve of \(Self.show(reserve)) ([policy] resource-reserve)",
                    field: "spec.leaveFree")
            }
            guard space.available > leave else {
                throw AgentError.refused(
                    "the file system of \(path) has only \(Self.show(space.available)) free, not more than the \(Self.show(leave)) to leave free",
                    field: "spec.leaveFree")
            }
            bytes = space.available - leave
        }
        try checkMemoryBacked(path, space, bytes: bytes, field: sizeText == nil ? "spec.leaveFree" : "spec.size")
        let file = (path as NSString).appendingPathComponent(Self.filePrefix + UUID().uuidString.lowercased())
        let plan = Plan(path: path, file: file, bytes: bytes, freeBefore: space.available, device: space.device)
        let target = Target(path: path, file: file, bytes: bytes, freeBefore: space.available)
        return PreparedFault(
            target: try JSONValue.from(target), plan: try JSONValue.from(plan), claims: ["disk-fill:dev:\(space.device)"])
    }

    public func apply(plan json: JSONValue) async throws -> PreparedFault? {
        let plan = try json.decode(Plan.self)
        try registry.append(plan.file)
        let fd = open(plan.file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AgentError.failed("cannot create \(plan.file): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var method = "fallocate"
        if cshim_fallocate(fd, 0, Int64(plan.bytes)) != 0 {
            let e = errno
            guard e == EOPNOTSUPP || e == ENOSYS else {
                throw AgentError.failed("fallocate of \(Self.show(plan.bytes)) in \(plan.path) failed: \(String(cString: strerror(e)))")
            }
            method = "write"
            try await Self.writeZeros(fd: fd, bytes: plan.bytes, file: plan.file)
        }
        guard fsync(fd) == 0 else { throw AgentError.failed("fsync of \(plan.file) failed: \(String(cString: strerror(errno)))") }
        // Proof: the blocks are allocated, and the file system's free space went down by about that much.
        var st = stat()
        fstat(fd, &st)
        let allocated = UInt64(st.st_blocks) * 512
        guard allocated >= plan.bytes else {
            throw AgentError.failed("\(plan.file) holds \(allocated) bytes of blocks, not the \(plan.bytes) asked for")
        }
        let after = try Self.space(plan.path).available
        let target = Target(
            path: plan.path, file: plan.file, bytes: plan.bytes, freeBefore: plan.freeBefore, freeAfter: after, method: method)
        return PreparedFault(target: try JSONValue.from(target), plan: json, claims: ["disk-fill:dev:\(plan.device)"])
    }

    /// Fill files the registry names that no live lease holds (the journal was lost, e.g. by a reboot: /run is
    /// tmpfs) are removed; the registry keeps the live ones.
    public func reconcileOrphans(livePlans: [JSONValue]) async -> [String] {
        let live = Set(livePlans.compactMap { try? $0.decode(Plan.self) }.map(\.file))
        return registry.reconcile(live: live) { file in
            // Only ever our own names.
            guard (file as NSString).lastPathComponent.hasPrefix(Self.filePrefix), unlink(file) == 0 else { return [] }
            return ["removed orphan disk-fill file \(file)"]
        }
    }

    static func writeZeros(fd: Int32, bytes: UInt64, file: String) async throws {
        let chunk = [UInt8](repeating: 0, count: 1 << 20)
        var left = bytes
        while left > 0 {
            let n = Int(min(left, UInt64(chunk.count)))
            let w = chunk.withUnsafeBytes { write(fd, $0.baseAddress, n) }
            guard w > 0 else { throw AgentError.failed("writing \(file) failed: \(String(cString: strerror(errno)))") }
            left -= UInt64(w)
            if left % (64 << 20) == 0 { await Task.yield() }
        }
    }

    public func revert(plan json: JSONValue) async throws {
        let plan = try json.decode(Plan.self)
        try Self.removeOwnFile(plan.file)
        registry.remove(plan.file)
    }

    /// Removes the fill file a plan names, and only that: a regular file whose name this driver makes
    /// (`<dir>/.chaos-agent-fill-<uuid>`). A name it could never have created (control bytes, another form) and a
    /// file that is gone (or never was) are reverted already; a directory or anything else there is never touched.
    /// Returns whether a file was removed.
    @discardableResult
    static func removeOwnFile(_ file: String) throws -> Bool {
        guard isOwnFileName(file) else { return false }
        var st = stat()
        guard lstat(file, &st) == 0 else {
            let e = errno
            if e == ENOENT || e == ENOTDIR { return false }
            throw AgentError.failed("cannot inspect \(file): \(String(cString: strerror(e)))")
        }
        // Not a regular file: not something this driver created (it creates with O_EXCL); leave it alone.
        guard st.st_mode & S_IFMT == S_IFREG else { return false }
        if unlink(file) != 0 {
            let e = errno
            if e == ENOENT { return false }
            throw AgentError.failed("cannot remove \(file): \(String(cString: strerror(e)))")
        }
        return true
    }

    /// An absolute path free of control bytes whose last component is `.chaos-agent-fill-<something>`.
    static func isOwnFileName(_ file: String) -> Bool {
        guard file.hasPrefix("/"), ResourcePaths.controlByte(in: file) == nil else { return false }
        let name = (file as NSString).lastPathComponent
        return name.hasPrefix(filePrefix) && name.count > filePrefix.count && !name.contains("/")
    }

    static func show(_ n: UInt64) -> String {
        let units: [(UInt64, String)] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        for (size, name) in units where n >= size { return String(format: "%.1f%@", Double(n) / Double(size), name) }
        return "\(n)B"
    }
}

/// Paths named by resource faults (`disk-fill`, `io`).
enum ResourcePaths {
    /// The `path` field: required, absolute, an existing directory.
    static func directory(_ reader: SpecReader) throws -> String {
        guard let raw = try reader.path("path"), !raw.isEmpty else {
            throw AgentError.badRequest("path is required: the directory whose file system to use", field: "spec.path")
        }
        // A NUL ends the name the kernel sees (`/tmp\u{0}x` is /tmp): such a path never names what it says.
        if let bad = controlByte(in: raw) {
            throw AgentError.badRequest(
                "path holds a control character (U+\(String(format: "%04X", bad))); give a plain absolute directory path",
                field: "spec.path")
        }
        guard raw.hasPrefix("/") else { throw AgentError.badRequest("path '\(raw)' must be absolute", field: "spec.path") }
        let path = (raw as NSString).standardizingPath
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw AgentError.refused("\(path) does not exist", field: "spec.path")
        }
        guard isDir.boolValue else { throw AgentError.refused("\(path) is not a directory", field: "spec.path") }
        return path
    }

    /// The first NUL or other control character (C0, DEL, C1) in `s`, if any.
    static func controlByte(in s: String) -> UInt32? {
        s.unicodeScalars.first { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }?.value
    }
}
