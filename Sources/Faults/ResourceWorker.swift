import CCap
import CShims
import Cgroups
import Foundation
import Synchronization

/// What a stress worker does: the agent's own executable re-executed as `chaos-agentd worker KIND ...` (hidden), born
/// inside its lease cgroup, with no capabilities, ending by itself at its deadline or when the agent dies.
public struct WorkerArguments: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case cpu, memory, io }

    public var kind: Kind
    /// cpu: spinning threads; io: writer (or reader) threads.
    public var threads: Int = 1
    /// memory: what memory.current of `cgroup` must reach; io: the size of each worker file.
    public var bytes: UInt64 = 0
    /// io: the directory for the worker files.
    public var path: String?
    /// io: "write" or "read" per thread (writes when nil).
    public var mode: String?
    /// Absolute directory of the lease cgroup (memory reads its memory.current there).
    public var cgroup: String?
    /// io: names the worker files (`<path>/.chaos-agent-io-<tag>-<n>`), so revert and reconciliation find them.
    public var tag: String?
    /// Unix time at which the worker exits whatever happens (unless `deadlineFile` moves it later).
    public var deadline: Double
    /// A file holding a later deadline when the lease is renewed (the agent rewrites it); read every 250 ms.
    public var deadlineFile: String?

    public init(
        kind: Kind, threads: Int = 1, bytes: UInt64 = 0, path: String? = nil, mode: String? = nil, cgroup: String? = nil,
        tag: String? = nil, deadline: Double, deadlineFile: String? = nil
    ) {
        self.tag = tag
        self.deadlineFile = deadlineFile
        self.kind = kind
        self.threads = threads
        self.bytes = bytes
        self.path = path
        self.mode = mode
        self.cgroup = cgroup
        self.deadline = deadline
    }

    /// argv after the executable: `worker cpu --threads 2 --deadline 1790000000.5`.
    public var argv: [String] {
        var a = ["worker", kind.rawValue, "--threads", String(threads), "--deadline", String(format: "%.3f", deadline)]
        if bytes > 0 { a += ["--bytes", String(bytes)] }
        if let path { a += ["--path", path] }
        if let mode { a += ["--mode", mode] }
        if let cgroup { a += ["--cgroup", cgroup] }
        if let tag { a += ["--tag", tag] }
        if let deadlineFile { a += ["--deadline-file", deadlineFile] }
        return a
    }

    /// Names of the files an io worker writes: `<path>/.chaos-agent-io-<tag>-<n>`.
    public static let ioFilePrefix = ".chaos-agent-io-"
}

/// The worker side: runs in the child process, never returns.
public enum ResourceWorker {
    public static func run(_ args: WorkerArguments) -> Never {
        // The kernel's OOM killer takes a worker first and the agent last.
        try? "1000".write(toFile: "/proc/self/oom_score_adj", atomically: false, encoding: .utf8)
        dropCapabilities()
        let deadline = WorkerDeadline(args.deadline, file: args.deadlineFile)
        @Sendable func now() -> Double { Date().timeIntervalSince1970 }
        guard now() < deadline.value else { exit(0) }
        switch args.kind {
        case .cpu:
            for _ in 0..<max(1, args.threads) {
                Thread.detachNewThread {
                    // Spin: cpu.max of the lease cgroup decides how much of this the scheduler delivers.
                    // (The clock read is the loop's work: a vDSO call the optimizer cannot drop.)
                    while now() < deadline.value {}
                    exit(0)
                }
            }
        case .memory:
            fillMemory(target: args.bytes, cgroup: args.cgroup, deadline: deadline)
        case .io:
            for i in 0..<max(1, args.threads) {
                let file = (args.path ?? "/tmp") + "/" + WorkerArguments.ioFilePrefix + "\(args.tag ?? String(getpid()))-\(i)"
                let mode = args.mode ?? "write"
                Thread.detachNewThread { ioLoop(file: file, size: max(args.bytes, 1 << 20), read: mode == "read", deadline: deadline) }
            }
        }
        while now() < deadline.value { usleep(UInt32(min(200_000, max(1000, (deadline.value - now()) * 1e6)))) }
        exit(0)
    }

    /// The spawner emptied the bounding set before exec, so the worker should hold no capability: clear this
    /// thread's sets anyway (libcap) and check the result; a worker that still holds one refuses to run.
    static func dropCapabilities() {
        _ = cshim_no_new_privs()
        if let empty = cap_init() {
            _ = cap_set_proc(empty)
            cap_free(UnsafeMutableRawPointer(empty))
        }
        guard let caps = cap_get_proc() else { exit(72) }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        for flag in [CAP_EFFECTIVE, CAP_PERMITTED] {
            for cap in 0...cap_value_t(CAP_LAST_CAP) {
                var v = CAP_CLEAR
                if cap_get_flag(caps, cap, flag, &v) == 0, v == CAP_SET {
                    FileHandle.standardError.write(Data("chaos-agentd worker: still holds capability \(cap); exiting\n".utf8))
                    exit(72)
                }
            }
        }
    }

    /// Allocates anonymous memory, populated by the kernel at mmap time (MAP_POPULATE: one call faults in every page
    /// of a chunk, far cheaper than touching them one by one), until the cgroup's memory.current reaches `target`
    /// (or, without a cgroup, until `target` bytes are allocated). Chunks shrink near the target, so it never
    /// overshoots by more than a page.
    static func fillMemory(target: UInt64, cgroup: String?, deadline: WorkerDeadline) {
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        func current() -> UInt64? {
            guard let cgroup, let t = try? String(contentsOfFile: cgroup + "/memory.current", encoding: .utf8) else { return nil }
            return UInt64(t.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        var allocated: UInt64 = 0
        while Date().timeIntervalSince1970 < deadline.value {
            let have = current() ?? allocated
            guard have + page <= target else { break }
            let size = Int(min(target - have, 64 << 20) / page * page)
            guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0),
                p != MAP_FAILED
            else { break }
            // MAP_POPULATE is best effort: a page it could not fault in is faulted by its first write instead, and the
            // loop goes on by memory.current, not by what was mapped.
            let bytes = p.assumingMemoryBound(to: UInt8.self)
            bytes[0] = 1
            bytes[size - 1] = 1
            allocated += UInt64(size)
        }
    }

    /// Writes (or reads) `file` in 1 MiB blocks with O_DIRECT (the page cache would hide the device's rate), wrapping
    /// at `size`, until the deadline. io.max on the device paces it.
    static func ioLoop(file: String, size: UInt64, read: Bool, deadline: WorkerDeadline) {
        let block = 1 << 20
        var fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | 0o40000 /* O_DIRECT */, 0o600)
        if fd < 0 { fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | O_DSYNC, 0o600) }
        guard fd >= 0 else { return }
        var buf: UnsafeMutableRawPointer?
        guard posix_memalign(&buf, 4096, block) == 0, let buf else { return }
        memset(buf, 0x5a, block)
        if read {
            // Lay the file down once, then read it over and over.
            var off: UInt64 = 0
            while off < size, Date().timeIntervalSince1970 < deadline.value {
                if pwrite(fd, buf, block, off_t(off)) <= 0 { break }
                off += UInt64(block)
            }
        }
        var off: UInt64 = 0
        while Date().timeIntervalSince1970 < deadline.value {
            let n = read ? pread(fd, buf, block, off_t(off)) : pwrite(fd, buf, block, off_t(off))
            if n <= 0 { off = 0; if n < 0 { usleep(10_000) }; continue }
            off += UInt64(n)
            if off >= size { off = 0 }
        }
    }
}

/// A worker's deadline: the one it started with, moved later (never earlier) when the agent renews the lease and
/// rewrites the deadline file, which a watcher thread reads every 250 ms. Revert kills the worker whatever this says;
/// the deadline only matters when the agent cannot (hung, or gone in a way PR_SET_PDEATHSIG does not see).
final class WorkerDeadline: Sendable {
    private let bits: Atomic<UInt64>

    init(_ initial: Double, file: String?) {
        bits = Atomic(initial.bitPattern)
        if let file { Thread.detachNewThread { [self] in watch(file) } }
    }

    var value: Double { Double(bitPattern: bits.load(ordering: .relaxed)) }

    /// Takes the file's deadline when it is later than the current one.
    func refresh(from file: String) {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8),
            let later = Double(text.trimmingCharacters(in: .whitespacesAndNewlines)), later > value
        else { return }
        bits.store(later.bitPattern, ordering: .relaxed)
    }

    private func watch(_ file: String) {
        while true {
            refresh(from: file)
            usleep(250_000)
        }
    }
}
