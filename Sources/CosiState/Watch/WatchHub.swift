import CosiMessages
import DequeModule
import NIOConcurrencyHelpers

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

    /// Offers each event to the inboxes of its kind; returns the wakers to run once the caller
    /// has released its lock (so that no watcher's wake-up runs under it).
    func publish(_ events: [StateEvent]) -> [WatchWaker] {
        var wakers: [WatchWaker] = []
        for event in events {
            guard let watchers = inboxes[event.kind] else { continue }
            for inbox in watchers.values {
                if let waker = inbox.offer(event) { wakers.append(waker) }
            }
        }
        return wakers
    }
}
