import CShims
import Foundation

/// A process as `/proc/PID` shows it at one instant.
public struct HostProcess: Sendable, Equatable {
    public var pid: Int32
    public var ppid: Int32
    /// Field 22 of /proc/PID/stat: clock ticks since boot. With `pid` it names one process for good.
    public var startTime: UInt64
    /// The kernel's short name (comm), up to 15 bytes.
    public var comm: String
    /// argv as NUL-separated in /proc/PID/cmdline (empty for kernel threads and zombies).
    public var cmdline: [String]
    /// Field 3 of /proc/PID/stat: R, S, D, T (stopped), t (traced), Z, ...
    public var state: Character
    /// Field 9 of /proc/PID/stat.
    public var flags: UInt32
    public var uid: UInt32

    public var identity: ProcessIdentity { ProcessIdentity(pid: pid, startTime: startTime) }

    /// PF_KTHREAD, or a child of kthreadd.
    public var isKernelThread: Bool { flags & 0x0020_0000 != 0 || ppid == 2 || pid == 2 }

    /// Stopped by a signal (not traced).
    public var isStopped: Bool { state == "T" }

    /// The command line joined by spaces, or `[comm]` when there is none.
    public var commandLine: String { cmdline.isEmpty ? "[\(comm)]" : cmdline.joined(separator: " ") }

    /// The command line joined by spaces, cut after about `maxBytes` UTF-8 bytes (a name pattern looks at no more).
    public func commandLine(maxBytes: Int) -> String {
        var out = ""
        for (k, arg) in cmdline.enumerated() {
            if k > 0 { out += " " }
            if out.utf8.count + arg.utf8.count > maxBytes {
                out += String(decoding: arg.utf8.prefix(max(0, maxBytes - out.utf8.count)), as: UTF8.self)
                break
            }
            out += arg
        }
        return out
    }
}

/// (pid, start time): a process identity that a recycled PID cannot impersonate.
public struct ProcessIdentity: Codable, Sendable, Hashable, CustomStringConvertible {
    public var pid: Int32
    public var startTime: UInt64
    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }
    public var description: String { "pid \(pid) (start \(startTime))" }

    private enum CodingKeys: String, CodingKey { case pid, startTime }

    /// Also reads a bare pid (plans journaled before identities were recorded): start time 0, "unknown".
    public init(from decoder: any Decoder) throws {
        if let single = try? decoder.singleValueContainer(), let pid = try? single.decode(Int32.self) {
            self.init(pid: pid, startTime: 0)
            return
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(pid: try c.decode(Int32.self, forKey: .pid), startTime: try c.decode(UInt64.self, forKey: .startTime))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(pid, forKey: .pid)
        try c.encode(startTime, forKey: .startTime)
    }
}

/// Where `ProcFS` gets its processes from when not from the procfs mount (tests simulate PID reuse with one).
public protocol ProcessSource: Sendable {
    func pids() -> [Int32]
    func process(_ pid: Int32) -> HostProcess?
}

/// Reads processes from a procfs mount (injectable for tests).
public struct ProcFS: Sendable {
    public var root: String
    /// Replaces the procfs mount when set.
    public var source: (any ProcessSource)?

    public init(root: String = "/proc", source: (any ProcessSource)? = nil) {
        self.root = root
        self.source = source
    }

    /// The process with this pid, or nil when there is none (or it vanished while being read).
    public func process(_ pid: Int32) -> HostProcess? {
        if let source { return source.process(pid) }
        guard let stat = readSmallFile("\(root)/\(pid)/stat"), var p = Self.parseStat(stat) else { return nil }
        if let raw = readSmallFile("\(root)/\(pid)/cmdline", binary: true) {
            p.cmdline = raw.split(separator: "\0", omittingEmptySubsequences: true).map(String.init)
        }
        if let status = readSmallFile("\(root)/\(pid)/status"),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") })
        {
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            if fields.count > 1, let uid = UInt32(fields[1]) { p.uid = uid }
        }
        return p
    }

    /// Every process (not threads) on the host.
    public func all() -> [HostProcess] { pids().compactMap { process($0) } }

    /// The pids of every process (not threads), ascending.
    public func pids() -> [Int32] {
        if let source { return source.pids() }
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: root) else { return [] }
        return entries.compactMap { Int32($0) }.sorted()
    }

    /// pid's ancestors, nearest first, up to and including pid 1.
    public func ancestors(of pid: Int32) -> [Int32] { lineage(of: pid).dropFirst().map(\.pid) }

    /// The process with this pid and its ancestors, nearest first, each as (pid, start time): a process that later
    /// gets one of these pids is a different process.
    public func lineage(of pid: Int32) -> [ProcessIdentity] {
        var out: [ProcessIdentity] = []
        var current = pid
        while let p = process(current), out.count < 4096 {
            out.append(p.identity)
            guard p.ppid > 0 else { break }
            current = p.ppid
        }
        return out
    }

    /// Parses /proc/PID/stat. comm may hold spaces and parentheses, so fields are taken after the LAST ')'.
    public static func parseStat(_ text: String) -> HostProcess? {
        guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")"), open < close,
            let pid = Int32(text[..<open].trimmingCharacters(in: .whitespaces))
        else { return nil }
        let comm = String(text[text.index(after: open)..<close])
        // Fields from 3 (state) on.
        let rest = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // rest[0] = field 3 (state), rest[1] = field 4 (ppid), rest[6] = field 9 (flags), rest[19] = field 22.
        guard rest.count >= 20, let state = rest[0].first, let ppid = Int32(rest[1]), let flags = UInt32(rest[6]),
            let start = UInt64(rest[19])
        else { return nil }
        return HostProcess(
            pid: pid, ppid: ppid, startTime: start, comm: comm, cmdline: [], state: state, flags: flags, uid: 0)
    }

    private func readSmallFile(_ path: String, binary: Bool = false) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            data.append(contentsOf: buf[0..<n])
            if data.count > 1 << 20 { break }
        }
        return String(decoding: data, as: UTF8.self)
    }
}
