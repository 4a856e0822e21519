import Foundation
import Prometheus

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every metric family cosid exports, with its help text and, for histograms, buckets that fit
/// what it measures. The modules record through swift-metrics (which carries no help text); the
/// endpoint adds `# HELP` before each family's `# TYPE` line, and the process metrics a Prometheus
/// user expects (`process_*`), read at each scrape.
enum MetricsCatalog {
    static let help: [String: String] = [
        "cosi_connections": "Open client connections (after a successful handshake).",
        "cosi_handshake_failures_total": "TLS handshakes that failed, by reason.",
        "cosi_calls_total": "Finished calls, by method and status code.",
        "cosi_call_duration_seconds": "How long calls took, by method, from their HEADERS to their TRAILERS.",
        "cosi_commit_duration_seconds": "How long one commit of the event log took (a group of writes, durable per --sync).",
        "cosi_commit_group_size": "Writes committed together in one transaction.",
        "cosi_commit_failures_total": "Commits of the event log that failed (writes were refused for the retry interval).",
        "cosi_writes_refused_overloaded_total": "Writes refused at once because too many were waiting for the committer.",
        "cosi_state_revision": "The revision of the last committed event.",
        "cosi_state_resources": "Resources held.",
        "cosi_watches": "Open watches.",
        "cosi_event_log_events": "Events the event log holds (retention keeps the rest compacted away).",
        "cosi_watcher_lag_revisions": "How far behind the newest revision a watcher catching up from the log was.",
        "cosi_controller_reconciles_total": "Reconciles an in-process controller ran, by controller.",
        "cosi_controller_reconcile_duration_seconds": "How long each reconcile of an in-process controller ran, by controller.",
        "cosi_controller_queue_wait_seconds": "How long a reconcile event waited before its controller took it, by controller.",
        "cosi_controller_restarts_total": "Controller restarts after a failure (a remote controller's broken event stream counts), by controller.",
        "cosi_drift_corrections_total": "Corrections of the machine made while its spec stayed as it was (someone else changed what a built-in controller keeps), by controller.",
        "process_resident_memory_bytes": "Resident memory of the cosid process.",
        "process_virtual_memory_bytes": "Virtual memory of the cosid process.",
        "process_open_fds": "File descriptors cosid has open.",
        "process_max_fds": "The most file descriptors cosid may open (its soft limit).",
        "process_cpu_seconds_total": "CPU time cosid used, user and system.",
        "process_start_time_seconds": "When cosid started, in seconds since the Unix epoch.",
        "process_threads": "Threads of the cosid process.",
    ]

    /// The factory, with buckets per family: calls and commits from 50 µs (a Get on loopback) to
    /// 10 s, reconciles and queue waits from 100 µs to 60 s, group sizes and lags in powers.
    static func factory(_ registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        let fast: [Duration] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
        ]
        let slow: [Duration] = [
            .microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50), .milliseconds(100),
            .milliseconds(500), .seconds(1), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        ]
        factory.defaultDurationHistogramBuckets = fast
        factory.durationHistogramBuckets = [
            "cosi_controller_reconcile_duration_seconds": slow,
            "cosi_controller_queue_wait_seconds": slow,
        ]
        factory.valueHistogramBuckets = [
            "cosi_commit_group_size": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
            "cosi_watcher_lag_revisions": [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576],
        ]
        return factory
    }

    /// The exposition: the registry's families with their help, then the process metrics.
    static func exposition(_ registry: PrometheusCollectorRegistry) -> String {
        var lines: [String] = []
        for line in registry.emitToString().split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).split(separator: " ").first.map(String.init) ?? ""
                if lines.last?.hasPrefix("# HELP \(name) ") != true {
                    lines.append("# HELP \(name) \(help[name] ?? "A cosid metric.")")
                }
            }
            lines.append(String(line))
        }
        while lines.last == "" { lines.removeLast() }
        var text = lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n"
        for (name, type, value) in processMetrics() {
            text += "# HELP \(name) \(help[name] ?? "")\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        return text
    }

    static let startTime = Date().timeIntervalSince1970

    /// Read from /proc/self at each scrape (Linux); elsewhere only what is portable.
    static func processMetrics() -> [(String, String, String)] {
        var metrics: [(String, String, String)] = []
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        if getrlimit(resource, &limit) == 0 { metrics.append(("process_max_fds", "gauge", "\(limit.rlim_cur)")) }
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            metrics.append(("process_open_fds", "gauge", "\(max(entries.count - 1, 0))"))
        }
        // /proc/self/stat: after the command in parentheses, field 14 utime and 15 stime (clock
        // ticks), 20 num_threads, 23 vsize (bytes), 24 rss (pages).
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ").map(String.init)
            func field(_ number: Int) -> Double? { fields.indices.contains(number - 3) ? Double(fields[number - 3]) : nil }
            let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
            let page = Double(sysconf(Int32(_SC_PAGESIZE)))
            if let user = field(14), let system = field(15), ticks > 0 { metrics.append(("process_cpu_seconds_total", "counter", "\((user + system) / ticks)")) }
            if let threads = field(20) { metrics.append(("process_threads", "gauge", "\(Int(threads))")) }
            if let virtual = field(23) { metrics.append(("process_virtual_memory_bytes", "gauge", "\(Int(virtual))")) }
            if let resident = field(24) { metrics.append(("process_resident_memory_bytes", "gauge", "\(Int(resident * page))")) }
        }
        metrics.append(("process_start_time_seconds", "gauge", "\(startTime)"))
        return metrics
    }
}
