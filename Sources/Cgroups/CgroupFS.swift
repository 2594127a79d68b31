import CShims
import Foundation

/// An error from a cgroup file operation, with the path and the kernel's errno text.
public struct CgroupError: Error, Sendable, CustomStringConvertible, Equatable {
    public var description: String
    public var errno: Int32
    public init(_ d: String, errno: Int32 = 0) {
        description = d
        self.errno = errno
    }
}

/// The cgroup v2 hierarchy under one mount point. The mount is injectable, so every operation here runs in unit tests
/// against a plain temporary directory tree. Cgroups are named by their path relative to the mount, starting with
/// "/" ("/" is the root, "/system.slice/nginx.service" a unit), exactly as /proc/PID/cgroup shows them.
public struct CgroupFS: Sendable {
    public let mount: String

    public init(mount: String) { self.mount = mount.hasSuffix("/") && mount.count > 1 ? String(mount.dropLast()) : mount }

    /// Normalises a user-given cgroup path: "/sys/fs/cgroup/x/y", "x/y" and "/x/y" all name "/x/y". Refuses "..".
    public func relative(_ path: String) throws -> String {
        var p = path
        if p == mount { return "/" }
        if p.hasPrefix(mount + "/") { p = String(p.dropFirst(mount.count)) }
        let parts = p.split(separator: "/").map(String.init)
        guard !parts.contains(".."), !parts.contains(".") else {
            throw CgroupError("cgroup path '\(path)' must not contain '.' or '..'")
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Absolute directory of a cgroup.
    public func directory(_ cgroup: String) -> String { cgroup == "/" ? mount : mount + cgroup }

    public func exists(_ cgroup: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: directory(cgroup), isDirectory: &isDir) && isDir.boolValue
    }

    public func read(_ cgroup: String, _ file: String) throws -> String {
        let path = directory(cgroup) + "/" + file
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error("cannot read \(path)") }
        defer { close(fd) }
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 4096) }
            if n < 0 { throw Self.error("cannot read \(path)") }
            if n == 0 { break }
            data += buf[0..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// One write(2) of `value` (the kernel takes one PID, one controller list, one io.max line per write).
    public func write(_ cgroup: String, _ file: String, _ value: String) throws {
        let path = directory(cgroup) + "/" + file
        // O_CREAT only matters for the test tree; on cgroupfs the files exist or the write must fail.
        let fd = open(path, O_WRONLY | O_CLOEXEC | (isCgroupFS ? 0 : O_CREAT | O_TRUNC), 0o644)
        guard fd >= 0 else { throw Self.error("cannot open \(path) for writing") }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw Self.error("writing '\(value)' to \(path) failed") }
    }

    /// True when the mount really is cgroup2 (false for the test tree).
    public var isCgroupFS: Bool {
        cshim_fs_type(mount) == 0x6367_7270
    }

    /// Words of a space-separated file (cgroup.controllers, cgroup.subtree_control); empty when unreadable.
    public func words(_ cgroup: String, _ file: String) -> [String] {
        ((try? read(cgroup, file)) ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
    }

    public func controllers(_ cgroup: String) -> [String] { words(cgroup, "cgroup.controllers") }
    public func subtreeControl(_ cgroup: String) -> [String] { words(cgroup, "cgroup.subtree_control") }

    /// "key value" lines (cgroup.events, cpu.stat, memory.events, memory.stat).
    public func keyed(_ cgroup: String, _ file: String) throws -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for line in try read(cgroup, file).split(separator: "\n") {
            let kv = line.split(separator: " ")
            if kv.count == 2, let v = UInt64(kv[1]) { out[String(kv[0])] = v }
        }
        return out
    }

    /// PIDs in cgroup.procs.
    public func procs(_ cgroup: String) -> [Int32] {
        ((try? read(cgroup, "cgroup.procs")) ?? "").split(separator: "\n").compactMap { Int32($0) }
    }

    /// Enables controllers for the children of `cgroup` ("+cpu +memory"), skipping ones already enabled. Needs them
    /// enabled in every ancestor first (top-down), and `cgroup` must hold no processes unless it is the root.
    public func enable(_ wanted: [String], in cgroup: String) throws {
        let have = Set(subtreeControl(cgroup))
        let missing = wanted.filter { !have.contains($0) }
        guard !missing.isEmpty else { return }
        let available = Set(controllers(cgroup))
        if let absent = missing.first(where: { !available.contains($0) }) {
            throw CgroupError(
                "the \(absent) controller is not available in \(directory(cgroup)) (cgroup.controllers: "
                    + "\(available.sorted().joined(separator: " ")))")
        }
        if isCgroupFS {
            try write(cgroup, "cgroup.subtree_control", missing.map { "+" + $0 }.joined(separator: " "))
        } else {
            try write(cgroup, "cgroup.subtree_control", (have.sorted() + missing).joined(separator: " "))
        }
    }

    /// mkdir; an existing cgroup is fine. In the test tree, a fresh directory gets the files the kernel would create.
    public func create(_ cgroup: String) throws {
        let dir = directory(cgroup)
        if mkdir(dir, 0o755) != 0 && Glibc.errno != EEXIST { throw Self.error("cannot create cgroup \(dir)") }
        if !isCgroupFS {
            let parent = (cgroup as NSString).deletingLastPathComponent
            for f in ["cgroup.procs", "cgroup.subtree_control", "cgroup.freeze", "cgroup.kill"]
            where !FileManager.default.fileExists(atPath: dir + "/" + f) {
                try write(cgroup, f, f == "cgroup.freeze" ? "0\n" : "")
            }
            try write(cgroup, "cgroup.controllers", subtreeControl(parent).joined(separator: " ") + "\n")
            try write(cgroup, "cgroup.events", "populated 0\nfrozen 0\n")
        }
    }

    /// Kills whatever is left in `cgroup` (cgroup.kill, Linux 5.14; SIGKILL to each pid before that), waits for it to
    /// empty, then removes it. A missing cgroup is fine.
    public func remove(_ cgroup: String, timeout: Duration = .seconds(5)) async throws {
        guard exists(cgroup) else { return }
        precondition(cgroup != "/", "refusing to remove the cgroup root")
        if !procs(cgroup).isEmpty {
            if (try? write(cgroup, "cgroup.kill", "1")) == nil {
                for pid in procs(cgroup) { kill(pid, SIGKILL) }
            }
            let start = ContinuousClock.now
            while !procs(cgroup).isEmpty {
                if ContinuousClock.now - start > timeout {
                    throw CgroupError("processes \(procs(cgroup).map(String.init).joined(separator: " ")) are still in \(directory(cgroup)) after SIGKILL")
                }
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        let dir = directory(cgroup)
        if isCgroupFS {
            // The kernel may take a moment to let go of the last exited task.
            let start = ContinuousClock.now
            while rmdir(dir) != 0 {
                let e = Glibc.errno
                if e == ENOENT { return }
                if e != EBUSY || ContinuousClock.now - start > timeout { throw Self.error("cannot remove cgroup \(dir)") }
                try? await Task.sleep(for: .milliseconds(10))
            }
        } else {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// Child cgroups (directory names) of `cgroup`.
    public func children(_ cgroup: String) -> [String] {
        let dir = directory(cgroup)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { name in
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: dir + "/" + name, isDirectory: &isDir) && isDir.boolValue
        }.sorted()
    }

    /// Freezes (true) or thaws a cgroup and waits until cgroup.events says so ("frozen 1"/"frozen 0").
    public func freeze(_ cgroup: String, _ on: Bool, timeout: Duration = .seconds(5)) async throws {
        try write(cgroup, "cgroup.freeze", on ? "1" : "0")
        if !isCgroupFS { try write(cgroup, "cgroup.events", "populated 1\nfrozen \(on ? 1 : 0)\n") }
        let start = ContinuousClock.now
        while (try keyed(cgroup, "cgroup.events"))["frozen"] != (on ? 1 : 0) {
            if ContinuousClock.now - start > timeout {
                throw CgroupError("\(directory(cgroup)) did not report 'frozen \(on ? 1 : 0)' in cgroup.events within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The process's own cgroup from /proc/PID/cgroup text: the "0::/path" line (cgroup v2).
    public static func ownCgroup(procCgroup text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix("0::") {
            let p = String(line.dropFirst(3))
            return p.hasSuffix(" (deleted)") ? nil : p
        }
        return nil
    }

    /// The cgroup of a process (nil when it has none in the v2 hierarchy or is gone).
    public static func cgroup(ofPID pid: Int32, procRoot: String = "/proc") -> String? {
        guard let text = try? String(contentsOfFile: "\(procRoot)/\(pid)/cgroup", encoding: .utf8) else { return nil }
        return ownCgroup(procCgroup: text)
    }

    /// The cgroup systemd gives a unit: searched breadth-first under the slices (systemd names the directory after
    /// the unit: /system.slice/nginx.service, /user.slice/user-1000.slice/user@1000.service/app.slice/x.service).
    /// nil when no such directory exists (the unit is not running, or systemd does not manage this host).
    public func unitCgroup(_ unit: String, maxDepth: Int = 6) -> String? {
        var level = ["/"]
        for _ in 0..<maxDepth {
            var next: [String] = []
            for cg in level {
                for child in children(cg) {
                    let path = cg == "/" ? "/" + child : cg + "/" + child
                    if child == unit { return path }
                    if child.hasSuffix(".slice") || child.hasSuffix(".service") && child.hasPrefix("user@") { next.append(path) }
                }
            }
            level = next
        }
        return nil
    }

    static func error(_ what: String) -> CgroupError {
        let e = Glibc.errno
        return CgroupError("\(what): \(String(cString: strerror(e)))", errno: e)
    }
}
