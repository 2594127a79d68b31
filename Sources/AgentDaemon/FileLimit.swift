import AgentAPI
import AgentCore
import CShims
import Foundation
import Logging

/// RLIMIT_NOFILE at start-up. The agent's revert path needs file descriptors (pidfds, netlink sockets, cgroup
/// files) exactly when something else may be using many; so it runs with a high limit and keeps its connections well
/// under it (`ConnectionBudget`).
enum FileLimit {
    struct Outcome: Sendable, Equatable {
        var softBefore: UInt64
        var hardBefore: UInt64
        var soft: UInt64
        var hard: UInt64
        /// Why the wanted limit could not be had (the limit in force is then `soft`).
        var problem: String?
    }

    /// The default soft limit when `[connections] open-files` is not set and the hard limit is lower.
    static let defaultTarget: UInt64 = 65536

    /// Sets the soft limit: `wanted` exactly when given, else max(hard limit, 65536). The hard limit is raised first
    /// when the target is above it (root with CAP_SYS_RESOURCE may, up to fs.nr_open); when it cannot be, the soft
    /// limit goes to the hard limit.
    static func apply(wanted: UInt64?) -> Outcome {
        var soft: UInt64 = 0
        var hard: UInt64 = 0
        guard cshim_get_nofile(&soft, &hard) == 0 else {
            return Outcome(softBefore: 0, hardBefore: 0, soft: 0, hard: 0, problem: "getrlimit: \(errorText())")
        }
        var out = Outcome(softBefore: soft, hardBefore: hard, soft: soft, hard: hard, problem: nil)
        var target = wanted ?? max(hard, defaultTarget)
        if let nrOpen = (try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8))
            .flatMap({ UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }), target > nrOpen
        {
            out.problem = "fs.nr_open is \(nrOpen)"
            target = nrOpen
        }
        if target > hard {
            if cshim_set_nofile(target, target) == 0 {
                out.soft = target
                out.hard = target
                return out
            }
            out.problem = "cannot raise the hard limit \(hard) to \(target): \(errorText())"
            target = hard
        }
        guard cshim_set_nofile(target, hard) == 0 else {
            out.problem = "setrlimit(\(target), \(hard)): \(errorText())"
            return out
        }
        out.soft = target
        return out
    }

    /// File descriptors open now (what the connection budget cannot count on).
    static func openNow() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 64
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }

    /// Raises the limit, fits the connection caps into it and logs both.
    static func prepare(_ config: AgentConfig, logger: Logger) -> ConnectionBudget {
        let c = config.connections
        let limit = apply(wanted: c.openFiles)
        var metadata: Logger.Metadata = [
            "event": "fd-limit", "soft": "\(limit.soft)", "hard": "\(limit.hard)", "softBefore": "\(limit.softBefore)",
            "hardBefore": "\(limit.hardBefore)", "reserve": "\(c.fdReserve)",
        ]
        if let problem = limit.problem { metadata["problem"] = "\(problem)" }
        logger.notice("open-file limit set", metadata: metadata)
        // Some 32 more for what start-up opens after this (journal, netlink, probes) besides what is open now.
        let budget = ConnectionBudget.fit(
            c, limit: limit.soft, inUse: openNow() + 32, remoteOn: config.remote != nil, metricsOn: config.metricsListen != nil)
        let caps: Logger.Metadata = [
            "event": "connection-caps", "socket": "\(budget.socket)", "remote": "\(budget.remote)",
            "metrics": "\(budget.metrics)", "perPeer": "\(budget.perPeer)", "handshakes": "\(budget.handshakes)",
            "handshakeTimeout": "\(Units.formatDuration(c.handshakeTimeout))",
            "idleTimeout": "\(Units.formatDuration(c.idleTimeout))",
        ]
        if budget.lowered {
            logger.warning(
                "connection caps lowered to keep \(c.fdReserve) file descriptors free of connections", metadata: caps)
        } else {
            logger.info("connection caps", metadata: caps)
        }
        return budget
    }
}
