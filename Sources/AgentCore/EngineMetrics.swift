import CoreMetrics
import Foundation

/// The lease engine's metrics, through swift-metrics: whatever backend the process bootstrapped (the daemon uses
/// swift-prometheus; unit tests get the no-op default). Names and labels are documented in docs/metrics.md.
enum EngineMetrics {
    static func activeFaults(kind: String, count: Int) {
        Gauge(label: "chaos_agent_active_faults", dimensions: [("kind", kind)]).record(count)
    }

    static func applied(kind: String, duration: Duration) {
        Counter(label: "chaos_agent_applies_total", dimensions: [("kind", kind)]).increment()
        CoreMetrics.Timer(label: "chaos_agent_apply_duration_seconds", dimensions: [("kind", kind)])
            .recordNanoseconds(nanoseconds(duration))
    }

    /// An inject that got as far as the host and failed there (`code` is the error code, e.g. `apply-failed`).
    static func applyFailed(kind: String, code: String) {
        Counter(label: "chaos_agent_apply_failures_total", dimensions: [("kind", kind), ("code", code)]).increment()
    }

    static func reverted(kind: String, reason: String) {
        Counter(label: "chaos_agent_reverts_total", dimensions: [("kind", kind), ("reason", normalize(reason))])
            .increment()
    }

    static func revertFailed(kind: String) {
        Counter(label: "chaos_agent_revert_failures_total", dimensions: [("kind", kind)]).increment()
    }

    /// Time from the deadline (TTL expiry or heartbeat due) to the fault being gone from the host.
    static func revertLag(kind: String, seconds: Double) {
        CoreMetrics.Timer(label: "chaos_agent_revert_lag_seconds", dimensions: [("kind", kind)])
            .recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }

    static func heartbeatMissed(kind: String) {
        Counter(label: "chaos_agent_heartbeat_misses_total", dimensions: [("kind", kind)]).increment()
    }

    static func idempotentReplay() {
        Counter(label: "chaos_agent_idempotent_replays_total").increment()
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let (s, atto) = d.components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }

    /// `revoked by unix:root` -> `revoked`: label values must stay a small set.
    static func normalize(_ reason: String) -> String {
        reason.hasPrefix("revoked") ? "revoked" : reason
    }
}
