import CosiController
import Metrics

/// The runtime's metrics per controller (label `controller`):
///
/// - `cosi_controller_reconciles_total`: reconciles an in-process controller ran;
/// - `cosi_controller_reconcile_duration_seconds`: how long each ran (from the event handed over
///   to the controller asking for the next);
/// - `cosi_controller_queue_wait_seconds`: how long an event waited before its controller took it;
/// - `cosi_controller_restarts_total`: restarts after a failure (a remote controller's broken
///   event stream counts).
struct ControllerMetrics: ReconcileObserver {
    let reconciles: Counter
    let duration: Metrics.Timer
    let wait: Metrics.Timer

    init(controller: String) {
        let dimensions = [("controller", controller)]
        reconciles = Counter(label: "cosi_controller_reconciles_total", dimensions: dimensions)
        duration = Metrics.Timer(label: "cosi_controller_reconcile_duration_seconds", dimensions: dimensions)
        wait = Metrics.Timer(label: "cosi_controller_queue_wait_seconds", dimensions: dimensions)
    }

    func delivered(waited: Duration) {
        wait.record(duration: waited)
    }

    func reconciled(took: Duration) {
        reconciles.increment()
        duration.record(duration: took)
    }

    static func restarted(_ controller: String) {
        Counter(label: "cosi_controller_restarts_total", dimensions: [("controller", controller)]).increment()
    }
}
