import CosiMessages
import NIOConcurrencyHelpers
import NIOCore

/// The state of one watch, owned by its one iterator; the inbox is the only part shared with the
/// committer.
final class WatchSession {
    let engine: StateEngine
    let inbox: WatcherInbox
    let kind: ResourceKind
    let id: String?
    let query: ResourceQuery
    let apiVersion: Int32
    /// The last revision handled.
    var cursor: UInt64
    var live: Bool
    var initial: [Event]?
    private var finished = false

    init(engine: StateEngine, inbox: WatcherInbox, kind: ResourceKind, id: String?, query: ResourceQuery, apiVersion: Int32, cursor: UInt64, live: Bool) {
        self.engine = engine
        self.inbox = inbox
        self.kind = kind
        self.id = id
        self.query = query
        self.apiVersion = apiVersion
        self.cursor = cursor
        self.live = live
    }

    deinit { engine.unregister(inbox) }

    /// What the watch does next.
    enum Step {
        /// Events to deliver (made here: the first batch, an ERRORED event).
        case events([Event])
        /// Changes to deliver, as this watcher sees them.
        case deliveries([Delivery])
        /// Live and nothing queued: wait for the inbox.
        case wait
        /// Catching up: read this page of the log, then ``absorb(_:of:)`` it.
        case read(LogPage)
        /// The watch is over (closed).
        case end
    }

    /// A page of the log a catching-up watcher reads.
    struct LogPage: Sendable {
        let after: UInt64
        let target: UInt64
        let kind: ResourceKind
        let limit: Int

        func read(_ storage: any StateStorage) throws(StateError) -> [StateEvent] {
            try storage.events(after: after, upTo: target, kind: kind, limit: limit)
        }
    }

    /// The next step, without waiting: the one state machine of a watch, driven by a task
    /// (``next()``) or by callbacks (``WatchPoller``).
    func step() throws(StateError) -> Step {
        if finished { return .end }
        if let initial {
            self.initial = nil
            if !initial.isEmpty { return .events(initial) }
        }
        while true {
            if live {
                switch inbox.take() {
                case nil:
                    return .wait
                case .events(let events):
                    cursor = events.last!.revision
                    let out = events.compactMap(delivery)
                    if !out.isEmpty { return .deliveries(out) }
                case .catchUp:
                    live = false
                case .closed:
                    finished = true
                    return .end
                }
            } else {
                if let pendingError {
                    finished = true
                    throw pendingError
                }
                let oldest = engine.storage.oldestRetainedRevision
                if cursor + 1 < oldest {
                    let error = StateError(.historyLost, "the watcher fell behind the retained event history: revision \(cursor + 1) is gone (the log starts at \(oldest))")
                    guard apiVersion >= 1 else {
                        finished = true
                        throw error
                    }
                    pendingError = error
                    return .events([Event(resource: nil, type: .errored, error: error.message)])
                }
                let target = engine.revision
                StateMetrics.watcherLag.record(Int64(target) - Int64(cursor))
                return .read(LogPage(after: cursor, target: target, kind: kind, limit: engine.configuration.catchUpBatch))
            }
        }
    }

    /// Takes in a page read from the log; returns what of it this watcher delivers (possibly
    /// nothing: step again).
    func absorb(_ events: [StateEvent], of page: LogPage) -> [Delivery] {
        if events.count == page.limit {
            cursor = events.last!.revision
        } else {
            cursor = page.target
            live = engine.rejoin(inbox, at: page.target)
        }
        return events.compactMap(delivery)
    }

    func next() async throws -> [Event]? {
        while true {
            try Task.checkCancellation()
            // (Written this way on purpose: with `switch try step()` and `engine.read(page.read)`,
            // swiftc 6.3's release optimiser crashed splitting this coroutine.)
            let step: Step
            do throws(StateError) { step = try self.step() } catch { throw error }
            switch step {
            case .events(let events):
                return events
            case .deliveries(let deliveries):
                return deliveries.map(\.value)
            case .wait:
                await inbox.wait()
            case .read(let page):
                let events = try await engine.read { storage throws(StateError) in try page.read(storage) }
                let out = absorb(events, of: page)
                if !out.isEmpty { return out.map(\.value) }
            case .end:
                try Task.checkCancellation()
                return nil
            }
        }
    }

    private var pendingError: StateError?

    /// How this watcher sees a change: filtered by id and queries, with match flips; nil when
    /// it does not see it.
    private func delivery(_ event: StateEvent) -> Delivery? {
        if let id, event.id != id { return nil }
        if query.matchesEverything { return Delivery(event: event, form: .asIs) }
        switch event.type {
        case .created, .destroyed:
            return query.matches(event.resource) ? Delivery(event: event, form: .asIs) : nil
        default:
            let now = query.matches(event.resource)
            let before = event.old.map(query.matches) ?? now
            switch (before, now) {
            case (true, true): return Delivery(event: event, form: .asIs)
            case (false, true): return Delivery(event: event, form: .created)
            case (true, false): return Delivery(event: event, form: .destroyed)
            case (false, false): return nil
            }
        }
    }
}

/// A change as one watcher receives it: the change and its form. Every watcher that receives a
/// change in the same form gets the same bytes, encoded once (``StateEvent/encodings``).
struct Delivery {
    enum Form: Int {
        case asIs = 0
        case created = 1
        case destroyed = 2
    }

    let event: StateEvent
    let form: Form

    /// The `Event` value (sharing the change's encoding slot).
    var value: Event {
        let bookmark = Bookmark.encode(event.revision)
        var made: Event
        switch form {
        case .asIs:
            made = Event(resource: event.resource, type: event.type, old: event.type == .updated ? event.old : nil, bookmark: bookmark)
        case .created:
            made = Event(resource: event.resource, type: .created, bookmark: bookmark)
        case .destroyed:
            made = Event(resource: event.resource, type: .destroyed, bookmark: bookmark)
        }
        made.encodingCache = event.encodings.slot(form.rawValue)
        return made
    }

    /// The encoded `Event`.
    var eventBytes: ByteBuffer {
        event.encodings.bytes(form.rawValue) { value.serializedBytes() }
    }

    /// A `WatchResponse` carrying only this event, encoded once per change and form.
    var responseBytes: ByteBuffer {
        event.encodings.bytes(3 + form.rawValue) { encodeWatchResponse([value]) }
    }
}
