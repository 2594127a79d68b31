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
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AgentError.failed("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let line = Array((entry + "\n").utf8)
        guard write(fd, line, line.count) == line.count, fsync(fd) == 0 else {
            throw AgentError.failed("cannot append to \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Calls `remove` for every entry not in `live` (it returns lines for the report), then rewrites the registry
    /// with the live entries only (removed when none is left).
    func reconcile(live: Set<String>, remove: (String) -> [String]) -> [String] {
        guard let path, let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        let entries = Set(text.split(separator: "\n").map(String.init))
        var out: [String] = []
        for entry in entries.sorted() where !live.contains(entry) && entry.hasPrefix("/") { out += remove(entry) }
        let keep = entries.intersection(live).sorted()
        if keep.isEmpty {
            unlink(path)
        } else {
            let tmp = path + ".tmp"
            if !FileManager.default.createFile(atPath: tmp, contents: Data(keep.map { $0 + "\n" }.joined().utf8))
                || rename(tmp, path) != 0
            {
                unlink(tmp)
            }
        }
        return out
    }
}
