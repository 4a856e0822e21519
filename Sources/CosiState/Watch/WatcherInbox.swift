import CosiMessages
import DequeModule
import NIOConcurrencyHelpers

/// One watcher's inbox: a bounded queue of live events, or a note that it fell behind and must
/// catch up from the log.
///
/// The hub pushes under its lock and never blocks; the watcher pulls (``take()``), and when
/// there is nothing, arms a waker (``arm(_:)``) that the next offer, catch-up or close runs once.
final class WatcherInbox: @unchecked Sendable {
    // @unchecked Sendable: every field is guarded by `lock`.
    private let lock = NIOLock()
    private var queue: Deque<StateEvent> = []
    private var lagging: Bool
    private var waker: WatchWaker?
    private var closed = false
    /// The most events held before the watcher is switched to catching up from the log.
    let capacity: Int
    let kind: ResourceKind

    init(kind: ResourceKind, capacity: Int, lagging: Bool) {
        self.kind = kind
        self.capacity = capacity
        self.lagging = lagging
    }

    /// Called by the hub (under the hub lock) for each event of the watched kind. Returns the
    /// waker to run once the hub's lock is released.
    func offer(_ event: StateEvent) -> WatchWaker? {
        lock.withLock {
            guard !lagging, !closed else { return nil }
            if queue.count >= capacity {
                // Too slow: forget the queue; the watcher re-reads from the log, losing nothing.
                queue.removeAll()
                lagging = true
            } else {
                queue.append(event)
            }
            defer { self.waker = nil }
            return self.waker
        }
    }

    enum Next {
        case events([StateEvent])
        /// The queue overflowed: read the log after the last event handled.
        case catchUp
        case closed
    }

    /// Takes every queued live event, or learns that it must catch up or that the watch is
    /// closed; nil when there is nothing yet.
    func take() -> Next? {
        lock.withLock {
            if closed { return .closed }
            if lagging { return .catchUp }
            if !queue.isEmpty {
                let events = Array(queue)
                queue.removeAll(keepingCapacity: queue.count < 64)
                return .events(events)
            }
            return nil
        }
    }

    /// Arms `waker` to run once something arrives; false (and nothing armed) when something is
    /// already there: take it first.
    func arm(_ waker: WatchWaker) -> Bool {
        lock.withLock {
            if closed || lagging || !queue.isEmpty { return false }
            self.waker = waker
            return true
        }
    }

    /// Waits (in a task) until ``take()`` has something; cancelling the task closes the inbox.
    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if !arm(.task(continuation)) { continuation.resume() }
            }
        } onCancel: {
            self.close()
        }
    }

    /// Marks the inbox live again (under the hub lock, once the watcher has read the log up to
    /// the hub's revision).
    func rejoin() {
        lock.withLock {
            queue.removeAll()
            lagging = false
        }
    }

    func close() {
        let waker: WatchWaker? = lock.withLock {
            closed = true
            defer { self.waker = nil }
            return self.waker
        }
        waker?.wake()
    }

    /// Events held right now (for tests and metrics).
    var queuedCount: Int { lock.withLock { queue.count } }
}
