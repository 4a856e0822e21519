import Metrics

/// The transport's metrics, through swift-metrics (exported by cosid when `--metrics-listen` is
/// set; no cost beyond a no-op call otherwise).
enum RPCMetrics {
    /// Open connections (after a successful handshake).
    static let connections = Meter(label: "cosi_connections")
    /// Failed TLS handshakes, by reason.
    static func handshakeFailure(_ reason: String) {
        Counter(label: "cosi_handshake_failures_total", dimensions: [("reason", reason)]).increment()
    }

    /// A finished call: counted by method and status, timed by method.
    static func call(_ method: String, _ status: RPCStatus, started: ContinuousClock.Instant) {
        let known = method.hasPrefix("/cosi.") ? method : "other"
        Counter(label: "cosi_calls_total", dimensions: [("method", known), ("code", "\(status.code)")]).increment()
        let elapsed = ContinuousClock.now - started
        Timer(label: "cosi_call_duration_seconds", dimensions: [("method", known)]).recordNanoseconds(
            elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
        )
    }
}
