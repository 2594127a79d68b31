import AgentCore
import Cgroups
import Foundation

/// An append-only list, on persistent storage, of files a fault creates on the host's file systems (disk-fill files,
/// io worker files). The lease journal lives on tmpfs (/run), so after a reboot mid-fault only this names what a
/// persistent file system kept. One file per kind and state directory (`<dir>/<name>-<hash>.list`), so agents with
/// different state directories never touch each other's files. nil directory: no registry.
struct LeftoverRegistry: Sendable {
    let path: String?

    init(directory: String?, name: String, stateDir: String) {
        path = directory.map { "\($0)/\(name)-\(AgentSubtree.hash(stateDir)).list" }
    }

    /// Appends `entry` and fsyncs, before the thing it names is created (a crash in between leaves a line naming
    /// nothing, which `reconcile` drops).
    func append(_ entry: String) throws {
        guard let path else { return }
        let dir = (path as NSString).deletingLastPathComponent
        if mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw AgentError.failed("cannot create \(dir) for the leftover registry: \(String(cString: strerror(errno)))")
        }
        try locked { fd in
            let line = Array((entry + "\n").utf8)
            let end = lseek(fd, 0, SEEK_END)
            guard end >= 0 else { throw AgentError.failed("cannot append to \(path): \(String(cString: strerror(errno)))") }
            guard write(fd, line, line.count) == line.count, fsync(fd) == 0 else {
                let e = errno
                // A partial line (a full disk) would glue the next entry onto itself: cut it back off.
                _ = ftruncate(fd, end)
                throw AgentError.failed("cannot append to \(path): \(String(cString: strerror(e)))")
            }
        }
    }

    /// Drops `entry` (its file was removed at revert); the registry goes when it is empty.
    func remove(_ entry: String) {
        try? rewrite { entries in entries.filter { $0 != entry } }
    }

    /// Calls `remove` for every entry not in `live` (it returns lines for the report), then keeps only the live
    /// entries (the registry goes when none is left).
    func reconcile(live: Set<String>, remove: (String) -> [String]) -> [String] {
        var out: [String] = []
        try? rewrite { entries in
            for entry in Set(entries).sorted() where !live.contains(entry) && entry.hasPrefix("/") { out += remove(entry) }
            return entries.filter { live.contains($0) }
        }
        return out
    }

    /// Runs `body` on the registry's fd under an exclusive flock (appends and rewrites of concurrent leases).
    private func locked(_ body: (Int32) throws -> Void) throws {
        guard let path else { return }
        while true {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw AgentError.failed("cannot open \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            guard flock(fd, LOCK_EX) == 0 else {
                throw AgentError.failed("cannot lock \(path): \(String(cString: strerror(errno)))")
            }
            defer { flock(fd, LOCK_UN) }
            // A rewrite may have unlinked the file while this waited for the lock: then start over on the new one.
            var mine = stat()
            var named = stat()
            guard fstat(fd, &mine) == 0, stat(path, &named) == 0, mine.st_ino == named.st_ino, mine.st_dev == named.st_dev
            else { continue }
            try body(fd)
            return
        }
    }

    /// Replaces the entries with `transform(entries)` in place, under the lock; unlinks the file when none is left.
    private func rewrite(_ transform: ([String]) -> [String]) throws {
        guard let path, FileManager.default.fileExists(atPath: path) else { return }
        try locked { fd in
            var data = [UInt8]()
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = pread(fd, &buf, buf.count, off_t(data.count))
                if n <= 0 { break }
                data += buf[0..<n]
            }
            let entries = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
            let keep = transform(entries)
            if keep.isEmpty {
                unlink(path)
                return
            }
            let bytes = Array(keep.map { $0 + "\n" }.joined().utf8)
            guard ftruncate(fd, 0) == 0, pwrite(fd, bytes, bytes.count, 0) == bytes.count else {
                throw AgentError.failed("cannot rewrite \(path): \(String(cString: strerror(errno)))")
            }
            _ = fsync(fd)
        }
    }
}
