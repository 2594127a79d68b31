import CoreMetrics
import Prometheus

/// The process's metrics backend: swift-metrics bootstrapped once with swift-prometheus, so every metric the lease
/// engine and the journal record (docs/metrics.md) is rendered by `GET /metrics`.
public enum PrometheusMetrics {
    private static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let fine: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
        ]
        factory.durationHistogramBuckets = [
            "chaos_agent_revert_lag_seconds": fine,
            "chaos_agent_apply_duration_seconds": fine,
            "chaos_agent_journal_fsync_duration_seconds": fine,
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    /// Installs the backend (once per process; later calls do nothing). Call before anything records a metric.
    public static func bootstrap() { _ = registry }

    /// The Prometheus text exposition of every metric recorded so far.
    public static func render() -> String { registry.emitToString() }
}
