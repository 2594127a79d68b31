import AgentAPI
import AgentCore
import Cgroups
import Foundation

/// `squeeze`: tighten the limits of an existing cgroup (a systemd unit's, or any path): cpu.max, memory.high,
/// memory.max, io.max, pids.max. The current value of every file the fault touches is read and journaled before the
/// first write, and written back exactly at revert. Two faults touching the same file of the same cgroup get 409.
public struct SqueezeDriver: FaultDriver {
    public let kind = "squeeze"
    let targeting: CgroupTargeting
    let controllers: [String]

    /// One interface file: what it held before, what the fault writes.
    struct Entry: Codable, Sendable, Equatable {
        var file: String
        var original: String
        var value: String
    }

    struct Plan: Codable, Sendable, Equatable {
        var mount: String
        var cgroup: String
        var entries: [Entry]
    }

    public init(mount: String?, controllers: [String], ownCgroup: String? = CgroupFS.cgroup(ofPID: getpid())) {
        targeting = CgroupTargeting(mount: mount, ownCgroup: ownCgroup)
        self.controllers = controllers
    }

    public func availability() -> KindAvailability {
        guard let fs = targeting.fs else {
            return KindAvailability(kind: kind, available: false, reason: "this host has no cgroup v2 hierarchy mounted")
        }
        guard controllers.contains(where: AgentSubtree.controllers.contains) else {
            return KindAvailability(
                kind: kind, available: false,
                reason: "the cgroup v2 hierarchy at \(fs.mount) offers none of the cpu, memory, io and pids controllers "
                    + "(it has: \(controllers.isEmpty ? "none" : controllers.joined(separator: " "))); a hybrid host keeps "
                    + "them in cgroup v1, so there are no limits to squeeze")
        }
        return KindAvailability(kind: kind, available: true)
    }

    static let fields = ["cpuMax", "memoryHigh", "memoryMax", "ioMax", "pidsMax"]

    public func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        let avail = availability()
        guard avail.available else { throw AgentError.unsupported(avail.reason ?? "squeeze is unavailable here") }
        let reader = try SpecReader(spec, kind: kind, allowed: CgroupTargeting.keys.union(Self.fields))
        if reader.has("cgroup") && reader.has("unit") {
            throw AgentError.badRequest("give only one of cgroup and unit", field: "spec.unit")
        }
        guard Self.fields.contains(where: reader.has) else {
            throw AgentError.badRequest(
                "say what to squeeze: cpuMax, memoryHigh, memoryMax, ioMax and/or pidsMax", field: "spec")
        }
        let (fs, cgroup) = try targeting.resolve(reader)
        var entries: [Entry] = []

        func current(_ file: String, controller: String, field: String) throws -> String {
            guard let text = try? fs.read(cgroup, file) else {
                throw AgentError.refused(
                    "\(fs.directory(cgroup)) has no \(file): the \(controller) controller is not enabled for it "
                        + "(see cgroup.subtree_control of its parent)", field: "spec.\(field)")
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        if let text = try reader.string("cpuMax") {
            guard let share = Units.parsePercent(text), share > 0 else {
                throw AgentError.badRequest(
                    "cpuMax '\(text)' is not a percentage of one CPU above zero (20% = a fifth of a CPU, 200% = two CPUs)",
                    field: "spec.cpuMax")
            }
            // Bounded before it becomes a quota: an unchecked "1e300%" trapped in the Double-to-Int conversion.
            guard share <= 4096 else {
                throw AgentError.badRequest("cpuMax must be at most 409600% (4096 CPUs)", field: "spec.cpuMax")
            }
            let raw = try current("cpu.max", controller: "cpu", field: "cpuMax")
            guard let original = CPUMax(parsing: raw) else {
                throw AgentError.failed("cannot parse cpu.max '\(raw)' of \(fs.directory(cgroup))")
            }
            let value = CPUMax.forShare(share, period: original.period)
            entries.append(Entry(file: "cpu.max", original: original.description, value: value.description))
        }
        for (field, file) in [("memoryHigh", "memory.high"), ("memoryMax", "memory.max")] {
            guard let text = try reader.string(field) else { continue }
            guard let bytes = Units.parseSize(text), bytes >= 4096 else {
                throw AgentError.badRequest("\(field) '\(text)' is not a size of at least 4KiB (e.g. 256MiB)", field: "spec.\(field)")
            }
            let raw = try current(file, controller: "memory", field: field)
            guard Limit(parsing: raw) != nil else { throw AgentError.failed("cannot parse \(file) '\(raw)' of \(fs.directory(cgroup))") }
            // The kernel keeps memory limits in pages and reads them back so: write what it will show.
            let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
            entries.append(Entry(file: file, original: raw, value: String(bytes / page * page)))
        }
        if let n = try reader.integer("pidsMax", range: 1...4_194_304) {
            let raw = try current("pids.max", controller: "pids", field: "pidsMax")
            guard Limit(parsing: raw) != nil else { throw AgentError.failed("cannot parse pids.max '\(raw)' of \(fs.directory(cgroup))") }
            entries.append(Entry(file: "pids.max", original: raw, value: String(n)))
        }
        if let text = try reader.string("ioMax") {
            let wanted = try Self.parseIOMax(text)
            let raw = try current("io.max", controller: "io", field: "ioMax")
            guard let lines = IOMaxLine.parseFile(raw) else { throw AgentError.failed("cannot parse io.max of \(fs.directory(cgroup))") }
            let original = lines.first { $0.device == wanted.device } ?? IOMaxLine(device: wanted.device)
            var value = original
            for (k, v) in wanted.limits { value.limits[k] = v }
            entries.append(Entry(file: "io.max", original: original.description, value: value.description))
        }
        for e in entries where context.heldClaims[Self.claim(fs, cgroup, e.file)] != nil {
            throw AgentError.conflict(
                "\(e.file) of \(cgroup) is already squeezed by fault \(context.heldClaims[Self.claim(fs, cgroup, e.file)]!)")
        }
        let plan = Plan(mount: fs.mount, cgroup: cgroup, entries: entries)
        let json = try JSONValue.from(plan)
        return PreparedFault(target: json, plan: json, claims: entries.map { Self.claim(fs, cgroup, $0.file) })
    }

    static func claim(_ fs: CgroupFS, _ cgroup: String, _ file: String) -> String { "cgroup:\(fs.directory(cgroup)):\(file)" }

    /// "8:0 wbps=10MiB riops=200" or "/dev/vda rbps=1MB": a device (MAJ:MIN or a block device node) and limits;
    /// bps values are sizes per second, iops plain numbers.
    static func parseIOMax(_ text: String) throws -> IOMaxLine {
        let parts = text.split(separator: " ").map(String.init)
        guard let dev = parts.first, parts.count >= 2 else {
            throw AgentError.badRequest("ioMax '\(text)' must be 'DEVICE KEY=VALUE...', e.g. '8:0 wbps=10MiB'", field: "spec.ioMax")
        }
        var device = dev
        if dev.hasPrefix("/") {
            guard let d = BlockDevice.number(ofNode: dev) else {
                throw AgentError.badRequest("ioMax: \(dev) is not a block device", field: "spec.ioMax")
            }
            device = d
        } else if !IOMaxLine.isDevice(dev) {
            throw AgentError.badRequest("ioMax: '\(dev)' is neither MAJ:MIN nor a /dev path", field: "spec.ioMax")
        }
        var line = IOMaxLine(device: device)
        for p in parts.dropFirst() {
            let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, IOMaxLine.keys.contains(kv[0]) else {
                throw AgentError.badRequest("ioMax: '\(p)' is not one of rbps=, wbps=, riops=, wiops=", field: "spec.ioMax")
            }
            let n: UInt64? = kv[0].hasSuffix("bps") ? Units.parseSize(kv[1].replacingOccurrences(of: "/s", with: "")) : UInt64(kv[1])
            guard let n, n > 0 else { throw AgentError.badRequest("ioMax: '\(p)' needs a value above zero", field: "spec.ioMax") }
            line.limits[kv[0]] = n
        }
        return line
    }

    public func apply(plan json: JSONValue) async throws -> PreparedFault? {
        let plan = try json.decode(Plan.self)
        let fs = CgroupFS(mount: plan.mount)
        for e in plan.entries {
            do { try fs.write(plan.cgroup, e.file, e.value) } catch {
                throw AgentError.failed("writing '\(e.value)' to \(e.file) of \(plan.cgroup): \(error)")
            }
        }
        // Proof: read every file back.
        for e in plan.entries {
            let back = (try? fs.read(plan.cgroup, e.file)) ?? "(unreadable)"
            guard Self.same(e.file, back, e.value) else {
                throw AgentError.failed("\(e.file) of \(plan.cgroup) reads '\(back.trimmingCharacters(in: .whitespacesAndNewlines))' after writing '\(e.value)'")
            }
        }
        return nil
    }

    /// Whether the file's text shows `value` (io.max: the device's line).
    static func same(_ file: String, _ text: String, _ value: String) -> Bool {
        switch file {
        case "cpu.max": return CPUMax(parsing: text) != nil && CPUMax(parsing: text) == CPUMax(parsing: value)
        case "io.max":
            guard let want = IOMaxLine(parsing: value), let lines = IOMaxLine.parseFile(text) else { return false }
            let have = lines.first { $0.device == want.device } ?? IOMaxLine(device: want.device)
            return have == want
        default: return Limit(parsing: text) != nil && Limit(parsing: text) == Limit(parsing: value)
        }
    }

    public func revert(plan json: JSONValue) async throws {
        let plan = try json.decode(Plan.self)
        let fs = CgroupFS(mount: plan.mount)
        guard fs.exists(plan.cgroup) else { return }  // the unit stopped: its limits went with it
        var problems: [String] = []
        // Restore in reverse order; memory.max before memory.high is irrelevant (they are independent).
        for e in plan.entries.reversed() {
            do {
                try fs.write(plan.cgroup, e.file, e.original)
                let back = try fs.read(plan.cgroup, e.file)
                if !Self.same(e.file, back, e.original) {
                    problems.append("\(e.file) reads '\(back.trimmingCharacters(in: .whitespacesAndNewlines))', not the original '\(e.original)'")
                }
            } catch {
                if !fs.exists(plan.cgroup) { return }
                problems.append("\(e.file): \(error)")
            }
        }
        if !problems.isEmpty { throw AgentError.failed("restoring \(plan.cgroup): " + problems.joined(separator: "; ")) }
    }
}

/// Block device numbers as cgroup files write them ("MAJ:MIN").
enum BlockDevice {
    static func format(_ dev: UInt64) -> String {
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))
        let minor = (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))
        return "\(major):\(minor)"
    }

    /// The device a block special file names.
    static func number(ofNode path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFBLK else { return nil }
        return format(UInt64(st.st_rdev))
    }
}
