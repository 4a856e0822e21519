import CosiMessages
import DequeModule
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOPosix

/// The state engine's metrics (swift-metrics).
enum StateMetrics {
    static let commitDuration = Metrics.Timer(label: "cosi_commit_duration_seconds")
    static let commitGroupSize = Recorder(label: "cosi_commit_group_size", aggregate: true)
    static let commitFailures = Counter(label: "cosi_commit_failures_total")
    static let overloaded = Counter(label: "cosi_writes_refused_overloaded_total")
    static let revision = Gauge(label: "cosi_state_revision")
    static let resources = Gauge(label: "cosi_state_resources")
    static let watchers = Gauge(label: "cosi_watches")
    static let eventLogSize = Gauge(label: "cosi_event_log_events")
    static let watcherLag = Recorder(label: "cosi_watcher_lag_revisions", aggregate: true)
}
