import AgentAPI
import AgentCore
import Cgroups
import Foundation

/// Resolves `cgroup` / `unit` in a spec to a cgroup of the v2 hierarchy, refusing the ones no fault may touch: the
/// root, and the agent's own cgroup and its ancestors (freezing or squeezing those would hit the agent itself).
struct CgroupTargeting: Sendable {
    let fs: CgroupFS?
    /// The agent's own cgroup (from /proc/self/cgroup).
    let ownCgroup: String?

    init(mount: String?, ownCgroup: String? = CgroupFS.cgroup(ofPID: getpid())) {
        fs = mount.map { CgroupFS(mount: $0) }
        self.ownCgroup = ownCgroup
    }

    static let keys: Set<String> = ["cgroup", "unit"]

    /// Which of the two the spec uses (nil when neither).
    static func given(_ reader: SpecReader) -> String? { keys.sorted().first { reader.has($0) } }

    func resolve(_ reader: SpecReader) throws -> (fs: CgroupFS, cgroup: String) {
        // Malformed names are 400s whatever the host: read (and check) both fields before anything else.
        _ = try reader.path("cgroup")
        _ = try reader.path("unit", maxLength: 255)
        guard let fs else {
            throw AgentError.unsupported("this host has no cgroup v2 hierarchy mounted, so there is no cgroup to select")
        }
        let cgroup: String
        if let raw = try reader.path("cgroup") {
            guard !raw.isEmpty else { throw AgentError.badRequest("cgroup must not be empty", field: "spec.cgroup") }
            do { cgroup = try fs.relative(raw) } catch { throw AgentError.badRequest("\(error)", field: "spec.cgroup") }
            guard fs.exists(cgroup) else {
                throw AgentError.refused("there is no cgroup \(fs.directory(cgroup))", field: "spec.cgroup")
            }
        } else if let unit = try reader.path("unit", maxLength: 255) {
            guard !unit.isEmpty, !unit.contains("/"), unit.contains(".") else {
                throw AgentError.badRequest(
                    "unit '\(unit)' is not a systemd unit name (e.g. nginx.service, batch.slice)", field: "spec.unit")
            }
            guard let found = fs.unitCgroup(unit) else {
                throw AgentError.refused(
                    "no cgroup for unit \(unit) under \(fs.mount): it is not running, or systemd does not manage this host",
                    field: "spec.unit")
            }
            cgroup = found
        } else {
            throw AgentError.badRequest("give cgroup or unit", field: "spec.cgroup")
        }
        let field = reader.has("cgroup") ? "spec.cgroup" : "spec.unit"
        guard cgroup != "/" else { throw AgentError.refused("the root cgroup may not be targeted", field: field) }
        if let own = ownCgroup, own == cgroup || own.hasPrefix(cgroup + "/") {
            throw AgentError.refused("\(cgroup) holds the agent itself (its cgroup is \(own)) and may not be targeted", field: field)
        }
        return (fs, cgroup)
    }
}
