import CosiMessages
import DequeModule
import NIOConcurrencyHelpers

/// One watcher's inbox: a bounded queue of live events, or a note that it fell behind and must
/// catch up from the log.
///
/// The hub pushes under its lock and never blocks; the watcher's task pulls.
final class WatcherInbox: @unchecked Sendable {
    // @unchecked Sendable: every field is guarded by `lock`.
    private let lock = NIOLock()
    private var queue: Deque<StateEvent> = []
    private var lagging: Bool
    private var waiter: CheckedContinuation<Void, Never>?
    private var closed = false
    /// The most events held before the watcher is switched to catching up from the log.
    let capacity: Int
    let kind: ResourceKind

    init(kind: ResourceKind, capacity: Int, lagging: Bool) {
        self.kind = kind
        self.capacity = capacity
        self.lagging = lagging
    }

    /// Called by the hub (under the hub lock) for each event of the watched kind.
    func offer(_ event: StateEvent) {
        let waiter: CheckedContinuation<Void, Never>? = lock.withLock {
            guard !lagging, !closed else { return nil }
            if queue.count >= capacity {
                // Too slow: forget the queue; the watcher re-reads from the log, losing nothing.
                queue.removeAll()
                lagging = true
            } else {
                queue.append(event)
            }
            defer { self.waiter = nil }
            return self.waiter
        }
        waiter?.resume()
    }

    enum Next {
        case events([StateEvent])
        /// The queue overflowed: read the log after the last event handled.
        case catchUp
        case closed
    }

    /// Waits for live events (all that are queued), or learns that it must catch up.
    func next() async -> Next {
        while true {
            let result: Next? = lock.withLock {
                if closed { return .closed }
                if lagging { return .catchUp }
                if !queue.isEmpty {
                    let events = Array(queue)
                    queue.removeAll(keepingCapacity: queue.count < 64)
                    return .events(events)
                }
                return nil
            }
            if let result { return result }
            if Task.isCancelled { return .closed }
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let ready = lock.withLock {
                        if closed || lagging || !queue.isEmpty { return true }
                        waiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            } onCancel: {
                self.close()
            }
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
        let waiter: CheckedContinuation<Void, Never>? = lock.withLock {
            closed = true
            defer { self.waiter = nil }
            return self.waiter
        }
        waiter?.resume()
    }

    /// Events held right now (for tests and metrics).
    var queuedCount: Int { lock.withLock { queue.count } }
}

/// Routes published events to the inboxes watching their kind: a dictionary lookup per event,
/// not a scan over every watcher.
struct WatchHub {
    private var inboxes: [ResourceKind: [ObjectIdentifier: WatcherInbox]] = [:]
    private(set) var watcherCount = 0

    mutating func add(_ inbox: WatcherInbox) {
        if inboxes[inbox.kind, default: [:]].updateValue(inbox, forKey: ObjectIdentifier(inbox)) == nil {
            watcherCount += 1
        }
    }

    mutating func remove(_ inbox: WatcherInbox) {
        guard inboxes[inbox.kind]?.removeValue(forKey: ObjectIdentifier(inbox)) != nil else { return }
        watcherCount -= 1
        if inboxes[inbox.kind]?.isEmpty == true { inboxes[inbox.kind] = nil }
    }

    func publish(_ events: [StateEvent]) {
        for event in events {
            guard let watchers = inboxes[event.kind] else { continue }
            for inbox in watchers.values { inbox.offer(event) }
        }
    }
}
