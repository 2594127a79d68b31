import AgentAPI
import AgentCore
import Cgroups
import Foundation
import Logging
import Processes

/// `cpu`, `memory` and `io`: stress workers in a cgroup of their own (`lease-<id>` in the agent's subtree), whose
/// limits make the effect exact:
/// - cpu: `cpus` spinning threads capped by cpu.max = load x cpus x period, so the host loses exactly that much CPU
///   whatever else runs (no sleep/spin duty cycle to drift under contention);
/// - memory: pages allocated and touched until the cgroup's memory.current reaches `size`; memory.max a little above;
/// - io: O_DIRECT writers (or readers) on files under `path`, paced by io.max on the file system's disk.
/// Revert kills the cgroup (cgroup.kill), reaps the workers, removes the cgroup and the io files.
public struct StressDriver: FaultDriver {
    public let kind: String
    let fs: CgroupFS?
    let controllers: [String]
    let subtree: AgentSubtree?
    let reserve: UInt64
    let logger: Logger
    /// io: the worker files' name prefixes, on persistent storage (see `LeftoverRegistry`).
    let registry: LeftoverRegistry
    /// Where each worker's deadline file lives (`<state-dir>/workers`), rewritten on renew; nil: fixed deadlines.
    let deadlineDir: String?

    static let period: Int64 = 100_000
    static let grace: Double = 5
    static let ioFileSize: UInt64 = 64 << 20

    struct Plan: Codable, Sendable, Equatable {
        var mount: String
        /// The lease cgroup, relative to `mount`.
        var cgroup: String
        var deadline: Double
        var worker: WorkerPlan
        var cpuMax: String?
        var memoryMax: String?
        var ioMax: String?
        /// cpu: CPUs of load; memory: bytes; io: bytes per second written + read.
        var load: Double?
        var size: UInt64?
        var path: String?
        var pid: Int32?
        var startTime: UInt64?
        /// The worker's deadline file (see `WorkerDeadline`).
        var deadlineFile: String?
    }

    struct WorkerPlan: Codable, Sendable, Equatable {
        var threads: Int
        var bytes: UInt64
        var path: String?
        var mode: String?
        var tag: String?
    }

    public init(
        kind: String, mount: String?, controllers: [String], stateDir: String, reserve: UInt64, logger: Logger,
        registryDir: String? = "/var/lib/chaos-agent"
    ) {
        self.kind = kind
        registry = LeftoverRegistry(directory: kind == "io" ? registryDir : nil, name: kind, stateDir: stateDir)
        deadlineDir = stateDir + "/workers"
        fs = mount.map { CgroupFS(mount: $0) }
        self.controllers = controllers
        self.reserve = reserve
        self.logger = logger
        if let fs {
            let own = CgroupFS.cgroup(ofPID: getpid())
            let delegated = own.map { AgentSubtree.isDelegated(fs, $0) } ?? false
            subtree = AgentSubtree.locate(ownCgroup: own, delegated: delegated, stateDir: stateDir)
        } else {
            subtree = nil
        }
    }

    /// Test seam: a given subtree and tree.
    init(kind: String, fs: CgroupFS, controllers: [String], subtree: AgentSubtree, reserve: UInt64) {
        self.kind = kind
        self.fs = fs
        self.controllers = controllers
        self.subtree = subtree
        self.reserve = reserve
        logger = Logger(label: "test")
        registry = LeftoverRegistry(directory: nil, name: kind, stateDir: "")
        deadlineDir = nil
    }

    var controller: String { kind }

    public func availability() -> KindAvailability {
        guard let fs else {
            return KindAvailability(kind: kind, available: false, reason: "this host has no cgroup v2 hierarchy mounted")
        }
        guard controllers.contains(controller) else {
            return KindAvailability(
                kind: kind, available: false,
                reason: "the cgroup v2 hierarchy at \(fs.mount) has no \(controller) controller (it has: "
                    + "\(controllers.isEmpty ? "none" : controllers.joined(separator: " "))); a hybrid host keeps it in cgroup v1, "
                    + "so the agent cannot confine and measure a \(kind) stress worker")
        }
        return KindAvailability(kind: kind, available: true)
    }

    public func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault {
        let avail = availability()
        guard avail.available, let fs, let subtree else { throw AgentError.unsupported(avail.reason ?? "\(kind) is unavailable") }
        let ttl = context.ttl ?? .seconds(60)
        let tag = "lease-" + String(UUID().uuidString.lowercased().prefix(12))
        let cgroup = (subtree.base == "/" ? "" : subtree.base) + "/" + tag
        let deadline = Date().timeIntervalSince1970 + ttl.seconds + Self.grace
        var plan = Plan(mount: fs.mount, cgroup: cgroup, deadline: deadline, worker: WorkerPlan(threads: 1, bytes: 0))
        plan.deadlineFile = deadlineDir.map { "\($0)/\(tag).deadline" }
        switch kind {
        case "cpu": try prepareCPU(spec, &plan)
        case "memory": try prepareMemory(spec, &plan)
        default: try prepareIO(spec, &plan, tag: tag)
        }
        let json = try JSONValue.from(plan)
        return PreparedFault(target: json, plan: json, claims: [])
    }

    static var onlineCPUs: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    func prepareCPU(_ spec: JSONValue, _ plan: inout Plan) throws {
        let r = try SpecReader(spec, kind: kind, allowed: ["load", "cpus"])
        guard let text = try r.string("load") else {
            throw AgentError.badRequest("load is required: the share of each CPU to take, e.g. 60%", field: "spec.load")
        }
        guard let load = Units.parsePercent(text), load > 0 else {
            throw AgentError.badRequest("load '\(text)' is not a percentage above zero (e.g. 60%)", field: "spec.load")
        }
        guard load <= 1 else {
            throw AgentError.refused("load \(text) is above 100% of a CPU; use --cpus for more CPUs", field: "spec.load")
        }
        let online = Self.onlineCPUs
        let cpus = Int(try r.integer("cpus", range: 1...4096) ?? Int64(online))
        guard cpus <= online else {
            throw AgentError.refused("cpus \(cpus) is more than the \(online) CPUs online", field: "spec.cpus")
        }
        plan.load = load * Double(cpus)
        plan.cpuMax = CPUMax.forShare(load * Double(cpus), period: Self.period).description
        plan.worker.threads = cpus
    }

    static func memAvailable(meminfo: String = "/proc/meminfo") -> UInt64? {
        guard let text = try? String(contentsOfFile: meminfo, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let f = line.split(separator: " ")
            if f.count >= 2, let kb = UInt64(f[1]) { return kb * 1024 }
        }
        return nil
    }

    /// memory.max for a fill of `size`: room for the worker's own pages above it.
    static func memoryCeiling(_ size: UInt64) -> UInt64 { size + max(size / 16, 64 << 20) }

    func prepareMemory(_ spec: JSONValue, _ plan: inout Plan) throws {
        let r = try SpecReader(spec, kind: kind, allowed: ["size"])
        guard let text = try r.string("size") else {
            throw AgentError.badRequest("size is required: how much memory to hold, e.g. 2GiB", field: "spec.size")
        }
        guard let size = Units.parseSize(text), size >= 1 << 20 else {
            throw AgentError.badRequest("size '\(text)' is not a size of at least 1MiB (e.g. 512MiB, 2GiB)", field: "spec.size")
        }
        let available = Self.memAvailable() ?? 0
        guard available > reserve, size <= available - reserve else {
            throw AgentError.refused(
                "size \(text) is more than MemAvailable (\(DiskFillDriver.show(available))) minus the reserve of "
                    + "\(DiskFillDriver.show(reserve)) ([policy] resource-reserve)", field: "spec.size")
        }
        plan.size = size
        plan.memoryMax = String(Self.memoryCeiling(size))
        plan.worker.bytes = size
    }

    func prepareIO(_ spec: JSONValue, _ plan: inout Plan, tag: String) throws {
        let r = try SpecReader(spec, kind: kind, allowed: ["path", "readRate", "writeRate", "workers"])
        let path = try ResourcePaths.directory(r)
        var limits: [String: UInt64] = [:]
        for (field, key) in [("writeRate", "wbps"), ("readRate", "rbps")] {
            guard let text = try r.string(field) else { continue }
            guard let n = Units.parseSize(text.replacingOccurrences(of: "/s", with: "")), n >= 4096 else {
                throw AgentError.badRequest("\(field) '\(text)' is not a rate of at least 4KiB/s (e.g. 50MB/s)", field: "spec.\(field)")
            }
            limits[key] = n
        }
        let workers = Int(try r.integer("workers", range: 1...64) ?? 1)
        guard !limits.isEmpty || r.has("workers") else {
            throw AgentError.badRequest("give writeRate and/or readRate (or workers for unthrottled IO)", field: "spec.writeRate")
        }
        guard !(limits["wbps"] != nil && limits["rbps"] != nil) else {
            throw AgentError.badRequest("give writeRate or readRate, not both, in one fault (inject two)", field: "spec.readRate")
        }
        let space = try DiskFillDriver.space(path)
        if space.readOnly { throw AgentError.refused("\(path) is on a read-only file system", field: "spec.path") }
        let need = Self.ioFileSize * UInt64(workers)
        guard space.available >= need + reserve else {
            throw AgentError.refused(
                "the IO workers need \(DiskFillDriver.show(need)) in \(path) and the file system has \(DiskFillDriver.show(space.available)) "
                    + "free (reserve \(DiskFillDriver.show(reserve)))", field: "spec.path")
        }
        if !limits.isEmpty {
            guard let disk = BlockDevice.disk(ofFileSystemDevice: space.device) else {
                throw AgentError.refused(
                    "\(path) is not on a block device (tmpfs, overlay, 9p or NFS), so io.max cannot pace IO there", field: "spec.path")
            }
            plan.ioMax = IOMaxLine(device: disk, limits: limits).description
        }
        plan.path = path
        plan.load = Double(limits.values.reduce(0, +))
        plan.worker = WorkerPlan(
            threads: workers, bytes: Self.ioFileSize, path: path, mode: limits["rbps"] != nil ? "read" : "write", tag: tag)
    }

    public func apply(plan json: JSONValue) async throws -> PreparedFault? {
        var plan = try json.decode(Plan.self)
        guard let subtree else { throw AgentError.unsupported("no cgroup v2 hierarchy") }
        let fs = CgroupFS(mount: plan.mount)
        do {
            try subtree.setUp(fs, selfPID: getpid(), controllers: [controller])
            try fs.create(plan.cgroup)
            if let v = plan.cpuMax { try fs.write(plan.cgroup, "cpu.max", v) }
            if let v = plan.memoryMax {
                try fs.write(plan.cgroup, "memory.max", v)
                try? fs.write(plan.cgroup, "memory.swap.max", "0")
            }
            if let v = plan.ioMax { try fs.write(plan.cgroup, "io.max", v) }
        } catch {
            throw AgentError.failed("setting up \(plan.cgroup): \(error)")
        }
        // Proof of the limits before anything runs under them.
        if let v = plan.cpuMax, CPUMax(parsing: (try? fs.read(plan.cgroup, "cpu.max")) ?? "") != CPUMax(parsing: v) {
            throw AgentError.failed("cpu.max of \(plan.cgroup) does not read back as '\(v)'")
        }
        if let v = plan.ioMax, !SqueezeDriver.same("io.max", (try? fs.read(plan.cgroup, "io.max")) ?? "", v) {
            throw AgentError.failed("io.max of \(plan.cgroup) does not read back as '\(v)'")
        }
        if let prefix = plan.ioFilePrefix { try registry.append(prefix) }
        if let file = plan.deadlineFile { try Self.writeDeadline(plan.deadline, to: file) }
        let args = WorkerArguments(
            kind: WorkerArguments.Kind(rawValue: kind)!, threads: plan.worker.threads, bytes: plan.worker.bytes,
            path: plan.worker.path, mode: plan.worker.mode, cgroup: fs.directory(plan.cgroup), tag: plan.worker.tag,
            deadline: plan.deadline, deadlineFile: plan.deadlineFile)
        let spawned: WorkerSpawner.Spawned
        do {
            spawned = try await WorkerSpawner.shared.spawn(
                executable: WorkerSpawner.executable, argv: args.argv, cgroupDir: fs.directory(plan.cgroup))
        } catch {
            throw AgentError.failed("\(error)")
        }
        plan.pid = spawned.pid
        plan.startTime = ProcFS().process(spawned.pid)?.startTime
        guard fs.procs(plan.cgroup).contains(spawned.pid) else {
            throw AgentError.failed("worker \(spawned.pid) is not in \(plan.cgroup)")
        }
        if kind == "memory", let size = plan.size {
            // Proof: the cgroup really holds the memory (memory.current), within 2 %.
            let limit = Duration.seconds(30 + Double(size) / Double(50 << 20))
            let start = ContinuousClock.now
            while true {
                let current = (try? fs.read(plan.cgroup, "memory.current")).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
                if Double(current) >= Double(size) * 0.98 { break }
                if fs.procs(plan.cgroup).isEmpty {
                    let events = (try? fs.keyed(plan.cgroup, "memory.events")) ?? [:]
                    throw AgentError.failed(
                        "the memory worker died at memory.current \(current) of \(size) (oom_kill \(events["oom_kill"] ?? 0))")
                }
                if ContinuousClock.now - start > limit {
                    throw AgentError.failed("memory.current of \(plan.cgroup) reached only \(current) of \(size) bytes in \(limit)")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        let updated = try JSONValue.from(plan)
        return PreparedFault(target: updated, plan: updated, claims: [])
    }

    public func revert(plan json: JSONValue) async throws {
        let plan = try json.decode(Plan.self)
        let fs = CgroupFS(mount: plan.mount)
        // Only a lease cgroup this driver creates (`.../lease-<id>`) is ever killed and removed.
        let ownCgroup = (plan.cgroup as NSString).lastPathComponent.hasPrefix(AgentSubtree.leasePrefix)
        if ownCgroup, fs.exists(plan.cgroup) {
            try? fs.write(plan.cgroup, "cgroup.kill", "1")
            // Collect the worker (the agent is its parent unless it restarted), so no zombie outlives the lease.
            if let pid = plan.pid { await WorkerSpawner.reap(pid, timeout: .seconds(5)) }
            do { try await fs.remove(plan.cgroup) } catch { throw AgentError.failed("removing \(plan.cgroup): \(error)") }
        } else if let pid = plan.pid {
            await WorkerSpawner.reap(pid, timeout: .seconds(5))
        }
        if let prefix = plan.ioFilePrefix {
            try Self.removeFiles(prefix: prefix)
            registry.remove(prefix)
        }
        if let file = plan.deadlineFile, (file as NSString).lastPathComponent.hasPrefix("lease-") { unlink(file) }
    }

    /// Renew: the worker lives until the new deadline plus the grace (its watcher reads the file within 250 ms; the
    /// old deadline is at least the grace away, since only an active fault is renewed).
    public func extend(plan json: JSONValue, until: Date) throws {
        let plan = try json.decode(Plan.self)
        guard let file = plan.deadlineFile else { return }
        try Self.writeDeadline(until.timeIntervalSince1970 + Self.grace, to: file)
    }

    /// Writes a deadline file atomically (a temp file renamed over it), so the worker never reads half a number.
    static func writeDeadline(_ deadline: Double, to file: String) throws {
        let dir = (file as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try String(format: "%.3f\n", deadline).write(toFile: file, atomically: true, encoding: .utf8)
        } catch {
            throw AgentError.failed("cannot write the worker's deadline file \(file): \(error)")
        }
    }

    /// Removes every file `<dir>/<name prefix>*` for a prefix `/dir/.chaos-agent-io-lease-...-`; returns their paths.
    @discardableResult
    static func removeFiles(prefix: String) throws -> [String] {
        let dir = (prefix as NSString).deletingLastPathComponent
        let start = (prefix as NSString).lastPathComponent
        // Only names this driver makes, in a directory named without control bytes (a NUL would cut the name short).
        guard start.hasPrefix(WorkerArguments.ioFilePrefix), start.count > WorkerArguments.ioFilePrefix.count,
            prefix.hasPrefix("/"), ResourcePaths.controlByte(in: prefix) == nil
        else { return [] }
        var removed: [String] = []
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() where name.hasPrefix(start) {
            // Only regular files: a worker creates nothing else, so a directory or link there is not ours.
            var st = stat()
            guard lstat(dir + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            if unlink(dir + "/" + name) != 0 && errno != ENOENT {
                throw AgentError.failed("cannot remove \(dir)/\(name): \(String(cString: strerror(errno)))")
            }
            removed.append(dir + "/" + name)
        }
        return removed
    }

    /// Lease cgroups in the agent's subtree that no live plan names: killed and removed (a crash lost their journal).
    public func reconcileOrphans(livePlans: [JSONValue]) async -> [String] {
        let plans = livePlans.compactMap { try? $0.decode(Plan.self) }
        var out = registry.reconcile(live: Set(plans.compactMap(\.ioFilePrefix))) { prefix in
            ((try? Self.removeFiles(prefix: prefix)) ?? []).map { "removed orphan io file \($0)" }
        }
        if let dir = deadlineDir {
            let liveFiles = Set(plans.compactMap(\.deadlineFile))
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            where name.hasPrefix("lease-") && name.hasSuffix(".deadline") && !liveFiles.contains("\(dir)/\(name)") {
                if unlink("\(dir)/\(name)") == 0 { out.append("removed orphan worker deadline file \(dir)/\(name)") }
            }
        }
        guard let fs, let subtree, fs.exists(subtree.base) else { return out }
        let live = Set(plans.map(\.cgroup))
        for cgroup in subtree.leases(fs) where !live.contains(cgroup) {
            // Every stress kind sees the same subtree; remove each orphan once (whoever gets there first).
            guard fs.exists(cgroup) else { continue }
            do {
                try await fs.remove(cgroup)
                out.append("removed orphan cgroup \(fs.directory(cgroup))")
            } catch {
                logger.warning("cannot remove orphan cgroup", metadata: ["cgroup": "\(cgroup)", "error": "\(error)"])
            }
        }
        return out
    }
}

extension BlockDevice {
    /// The whole disk ("MAJ:MIN") under a file system's st_dev: the device itself, or the disk holding a partition.
    /// nil when st_dev is not a block device (tmpfs, overlay, 9p, NFS: major 0).
    static func disk(ofFileSystemDevice dev: UInt64, sys: String = "/sys/dev/block") -> String? {
        let mm = format(dev)
        let dir = "\(sys)/\(mm)"
        guard FileManager.default.fileExists(atPath: dir) else { return nil }
        guard FileManager.default.fileExists(atPath: dir + "/partition") else { return mm }
        let parent = (dir as NSString).resolvingSymlinksInPath + "/.."
        guard let text = try? String(contentsOfFile: parent + "/dev", encoding: .utf8) else { return nil }
        let d = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return IOMaxLine.isDevice(d) ? d : nil
    }
}

extension StressDriver.Plan {
    /// io: `<path>/.chaos-agent-io-<tag>-`, what every worker file's path starts with.
    var ioFilePrefix: String? {
        guard let path = worker.path, let tag = worker.tag else { return nil }
        return path + "/" + WorkerArguments.ioFilePrefix + tag + "-"
    }
}
