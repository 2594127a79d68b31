import Foundation

/// Who this agent is, as the marks on what it installs: every agent instance (one per state directory) owns a block of
/// tc qdisc majors and the ifb device names derived from it, so start-up and `reap` remove only their own leftovers and
/// two agents side by side never touch each other's faults. (Cgroups, fill and io files and worker deadline files are
/// per state directory already: `/chaos-agent-<hash>`, the leftover registries, `<state dir>/workers`.)
///
/// - The default state directory (`/run/chaos-agent`) keeps the historical marks: majors 4341:...434e:, `ca-ifb<n>`.
/// - Any other state directory gets a block of 16 majors in 4400:...7fff: (below the kernel's auto-assigned 8000:+),
///   chosen from a hash of the state directory, claimed in `/run/chaos-agent-instances/<major>` (a file naming the
///   state directory: a second instance whose hash lands on a claimed block takes the next free one), and persisted in
///   `<state dir>/instance.json`, so the same instance keeps its marks across restarts. Its ifb devices are
///   `ca<major>i<ifindex in hex>` (at most 15 characters, IFNAMSIZ).
public struct AgentInstance: Codable, Sendable, Equatable {
    public static let defaultStateDir = "/run/chaos-agent"
    public static let defaultClaimsDir = "/run/chaos-agent-instances"
    public static let legacyMajor: UInt16 = 0x4341
    /// A block holds the root and 13 fault qdisc majors.
    public static let blockSize: UInt16 = 16
    static let firstBlockMajor: UInt16 = 0x4400
    static let blockCount = Int((0x8000 - Int(firstBlockMajor)) / Int(blockSize))
    /// 0x504d is used by other tools (Pumba): its block is never handed out.
    static let avoidedMajors: [UInt16] = [0x504d]

    /// FNV-1a of the state directory (8 hex digits), the same hash the cgroup subtree and registries use.
    public var id: String
    /// The root qdisc's major; fault qdiscs use the next 13.
    public var tcMajor: UInt16
    public var stateDir: String

    public init(id: String, tcMajor: UInt16, stateDir: String) {
        self.id = id
        self.tcMajor = tcMajor
        self.stateDir = stateDir
    }

    /// The historical marks (the default state directory, and plans journaled before instances existed).
    public var isLegacy: Bool { tcMajor == Self.legacyMajor }

    /// Whether `major` is one a chaos-agent instance (any) would use for a root qdisc.
    public static func isAgentRootMajor(_ major: UInt16) -> Bool {
        major == legacyMajor || (major >= firstBlockMajor && major < 0x8000 && (major - firstBlockMajor) % blockSize == 0)
    }

    /// The ifb device that carries an interface's ingress tree.
    public func ifbName(_ ifindex: Int32) -> String {
        isLegacy ? "ca-ifb\(ifindex)" : String(format: "ca%04xi", tcMajor) + String(UInt32(bitPattern: ifindex), radix: 16)
    }

    /// The interface index an ifb of this instance serves, or nil when the name is not one of this instance's.
    public func ifindex(ofIFB name: String) -> Int32? {
        if isLegacy {
            guard name.hasPrefix("ca-ifb") else { return nil }
            return Int32(name.dropFirst(6))
        }
        let prefix = String(format: "ca%04xi", tcMajor)
        guard name.hasPrefix(prefix), let n = UInt32(name.dropFirst(prefix.count), radix: 16) else { return nil }
        return Int32(bitPattern: n)
    }

    public static func hash(_ s: String) -> UInt32 {
        var h: UInt32 = 0x811c_9dc5
        for b in s.utf8 {
            h ^= UInt32(b)
            h = h &* 0x0100_0193
        }
        return h
    }

    static func major(block: Int) -> UInt16 { firstBlockMajor + UInt16(block) * blockSize }

    static func usable(block: Int) -> Bool {
        let m = major(block: block)
        return !avoidedMajors.contains { $0 >= m && $0 < m + blockSize }
    }

    /// The marks a state directory gets when its preferred block is free (no claims consulted).
    public static func derive(stateDir: String) -> AgentInstance {
        let h = hash(stateDir)
        let id = String(format: "%08x", h)
        if stateDir == defaultStateDir { return AgentInstance(id: id, tcMajor: legacyMajor, stateDir: stateDir) }
        var block = Int(h % UInt32(blockCount))
        while !usable(block: block) { block = (block + 1) % blockCount }
        return AgentInstance(id: id, tcMajor: major(block: block), stateDir: stateDir)
    }

    /// This state directory's instance: the one persisted in `<stateDir>/instance.json`, or a new one (its preferred
    /// block, or the next one no other live instance claimed), persisted. `claimsDir` nil: no claims (tests).
    public static func load(stateDir: String, claimsDir: String? = defaultClaimsDir) -> AgentInstance {
        let file = stateDir + "/instance.json"
        if let data = FileManager.default.contents(atPath: file),
            let known = try? JSONDecoder().decode(AgentInstance.self, from: data), known.stateDir == stateDir,
            known.isLegacy || isAgentRootMajor(known.tcMajor)
        {
            if !known.isLegacy, let claimsDir { _ = claim(known.tcMajor, stateDir: stateDir, in: claimsDir) }
            return known
        }
        var instance = derive(stateDir: stateDir)
        if !instance.isLegacy, let claimsDir {
            let start = Int((instance.tcMajor - firstBlockMajor) / blockSize)
            for step in 0..<blockCount {
                let block = (start + step) % blockCount
                guard usable(block: block) else { continue }
                if claim(major(block: block), stateDir: stateDir, in: claimsDir) {
                    instance.tcMajor = major(block: block)
                    break
                }
            }
        }
        // Best effort: a state dir that cannot be written (full) must not keep the agent from starting and reverting;
        // the marks are derived the same way next time (the claim file, if any, names this state dir).
        try? FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        if let data = try? JSONEncoder().encode(instance),
            !FileManager.default.createFile(atPath: file + ".tmp", contents: data) || rename(file + ".tmp", file) != 0
        {
            unlink(file + ".tmp")
        }
        return instance
    }

    /// Claims a major block for `stateDir`: true when the claim file is (now) ours, or names a state directory that
    /// no longer exists (its instance is gone), or claims cannot be kept here at all (then the hash alone decides).
    static func claim(_ major: UInt16, stateDir: String, in dir: String) -> Bool {
        if mkdir(dir, 0o755) != 0 && errno != EEXIST { return true }
        let path = dir + "/" + String(format: "%04x", major)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd >= 0 {
            let bytes = Array(stateDir.utf8)
            _ = write(fd, bytes, bytes.count)
            _ = fsync(fd)
            close(fd)
            return true
        }
        guard errno == EEXIST else { return true }
        let owner = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        if owner == stateDir { return true }
        var isDir: ObjCBool = false
        if owner.isEmpty || !FileManager.default.fileExists(atPath: owner, isDirectory: &isDir) || !isDir.boolValue {
            // A stale claim: its state directory (and with it its journal) is gone; this instance takes the block and
            // with it the duty to clean up what is left under it.
            return (try? stateDir.write(toFile: path, atomically: true, encoding: .utf8)) != nil
        }
        return false
    }
}
