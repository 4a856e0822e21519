import CosiMessages
import NIOConcurrencyHelpers

extension StateEngine {
    /// Starts a watch (state.md, "Watch"). Setup errors are thrown here, before anything is sent.
    ///
    /// The result yields batches of events: first the initial or bootstrap batch (when there is
    /// one), then each group of events that is ready. A watcher that falls behind reads the log
    /// and rejoins the live queue, losing nothing; one that falls behind the retained history gets
    /// an ERRORED event (api_version 1) and then the error `.historyLost`.
    public func watch(_ request: WatchRequest) async throws(StateError) -> StateWatch {
        try validateAddress(namespace: request.namespace, type: request.type, id: nil)
        let options = request.options ?? WatchOptions()
        let kind = ResourceKind(namespace: request.namespace, type: request.type)
        if let id = request.id {
            guard !id.isEmpty else { throw StateError(.invalidArgument, "id must not be empty when set") }
            if options.bootstrapContents { throw StateError(.unimplemented, "options.bootstrap_contents is not supported when watching a single resource (id is set)") }
            if !options.labelQuery.isEmpty { throw StateError(.unimplemented, "options.label_query is not supported when watching a single resource (id is set)") }
        }
        guard options.tailEvents >= 0 else { throw StateError(.invalidArgument, "options.tail_events must not be negative") }
        let tail = options.tailEvents > 0
        let bookmark = options.startFromBookmark
        if tail && bookmark != nil { throw StateError(.invalidArgument, "options.tail_events and options.start_from_bookmark cannot be combined") }
        if (options.bootstrapContents || options.bootstrapBookmark) && (tail || bookmark != nil) {
            throw StateError(.invalidArgument, "options.bootstrap_contents and options.bootstrap_bookmark cannot be combined with tail_events or start_from_bookmark")
        }
        let query = try ResourceQuery(labelQueries: options.labelQuery, idQuery: options.idQuery)

        let inbox = WatcherInbox(kind: kind, capacity: configuration.watcherQueueCapacity, lagging: tail || bookmark != nil)
        let snapshot = register(inbox)
        let current = snapshot.revision
        let session = WatchSession(engine: self, inbox: inbox, kind: kind, id: request.id, query: query, apiVersion: request.apiVersion, cursor: current, live: !(tail || bookmark != nil))

        do throws(StateError) {
            if let bookmark {
                guard let revision = Bookmark.decode(bookmark) else {
                    throw StateError(.bookmarkUnusable, "options.start_from_bookmark is not a bookmark of this server")
                }
                guard revision <= current else {
                    throw StateError(.bookmarkUnusable, "options.start_from_bookmark points at revision \(revision), beyond the current revision \(current)")
                }
                let oldest = storage.oldestRetainedRevision
                guard revision + 1 >= oldest else {
                    throw StateError(.bookmarkUnusable, "options.start_from_bookmark points at revision \(revision), older than the retained history (which starts at revision \(oldest))")
                }
                session.cursor = revision
            } else if tail {
                let id = request.id, count = Int(options.tailEvents)
                if let start = try await read({ storage throws(StateError) in try storage.tailStart(kind: kind, id: id, count: count, upTo: current) }) {
                    session.cursor = start - 1
                } else {
                    // Nothing to replay: go live (or catch up the few events published since).
                    session.cursor = current
                    session.live = rejoin(inbox, at: current)
                }
            } else if let id = request.id {
                let resource = snapshot.get(ResourceAddress(kind: kind, id: id))
                session.initial = [resource.map { Event(resource: $0, type: .created) }
                    ?? Event(resource: .tombstone(namespace: kind.namespace, type: kind.type, id: id), type: .destroyed)]
            } else if options.bootstrapContents {
                var initial = snapshot.list(kind).filter(query.matches).map { Event(resource: $0, type: .created) }
                if request.apiVersion >= 1 {
                    initial.append(Event(resource: .tombstone(namespace: kind.namespace, type: kind.type, id: ""), type: .bootstrapped, bookmark: Bookmark.encode(current)))
                }
                session.initial = initial
            } else if options.bootstrapBookmark {
                session.initial = [Event(resource: .tombstone(namespace: kind.namespace, type: kind.type, id: ""), type: .noop, bookmark: Bookmark.encode(current))]
            }
        } catch {
            unregister(inbox)
            throw error
        }
        return StateWatch(engine: self, session: session)
    }
}

/// The events of one watch, in batches.
///
/// A watch has one consumer: `makeAsyncIterator()` hands the watch's state to the one iterator
/// it makes (calling it again is a programming error), and the iterator is not `Sendable`, so
/// only the task that made it can advance it. The sequence itself may be passed around to
/// close the watch or read its queue length.
public struct StateWatch: AsyncSequence, Sendable {
    public typealias Element = [Event]
    private let engine: StateEngine
    private let inbox: WatcherInbox
    private let session: TakeOnce<WatchSession>

    init(engine: StateEngine, session: WatchSession) {
        self.engine = engine
        self.inbox = session.inbox
        self.session = TakeOnce(session)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let session: WatchSession
        public mutating func next() async throws -> [Event]? {
            try await session.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        guard let session = session.take() else {
            preconditionFailure("a StateWatch has one consumer: makeAsyncIterator() was called twice")
        }
        return AsyncIterator(session: session)
    }

    /// Ends the watch now (also happens when the iterating task is cancelled, or when the
    /// iterator is dropped).
    public func close() { engine.unregister(inbox) }

    /// Live events queued for this watch and not yet taken (bounded by
    /// ``StateEngineConfiguration/watcherQueueCapacity``; beyond it the watch reads the log).
    public var queuedEventCount: Int { inbox.queuedCount }
}

/// Holds a value until one taker moves it out. The value is never touched by two threads: it is
/// handed over once, under the lock, like a `sending` parameter.
final class TakeOnce<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is read and cleared only under `lock`, exactly once.
    private let lock = NIOLock()
    private var value: Value?

    init(_ value: Value) { self.value = value }

    func take() -> Value? {
        lock.withLock {
            defer { value = nil }
            return value
        }
    }
}

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

    func next() async throws -> [Event]? {
        if finished { return nil }
        if let initial {
            self.initial = nil
            if !initial.isEmpty { return initial }
        }
        while true {
            try Task.checkCancellation()
            if live {
                switch await inbox.next() {
                case .events(let events):
                    cursor = events.last!.revision
                    let out = events.compactMap(translate)
                    if !out.isEmpty { return out }
                case .catchUp:
                    live = false
                case .closed:
                    try Task.checkCancellation()
                    finished = true
                    return nil
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
                    return [Event(resource: nil, type: .errored, error: error.message)]
                }
                let target = engine.revision
                StateMetrics.watcherLag.record(Int64(target) - Int64(cursor))
                let limit = engine.configuration.catchUpBatch
                let (after, kind) = (cursor, kind)
                let events = try await engine.read { storage throws(StateError) in
                    try storage.events(after: after, upTo: target, kind: kind, limit: limit)
                }
                if events.count == limit {
                    cursor = events.last!.revision
                } else {
                    cursor = target
                    live = engine.rejoin(inbox, at: target)
                }
                let out = events.compactMap(translate)
                if !out.isEmpty { return out }
            }
        }
    }

    private var pendingError: StateError?

    /// An event as this watcher sees it: filtered by id and queries, with match flips.
    private func translate(_ event: StateEvent) -> Event? {
        if let id, event.resource.metadata.id != id { return nil }
        let bookmark = Bookmark.encode(event.revision)
        // Every watcher that receives this change in the same form gets the same bytes.
        func shared(_ form: Int, _ made: Event) -> Event {
            var made = made
            made.encodingCache = event.encodings.slot(form)
            return made
        }
        switch event.type {
        case .created:
            return query.matches(event.resource) ? shared(0, Event(resource: event.resource, type: .created, bookmark: bookmark)) : nil
        case .destroyed:
            return query.matches(event.resource) ? shared(0, Event(resource: event.resource, type: .destroyed, bookmark: bookmark)) : nil
        default:
            let now = query.matches(event.resource)
            let before = event.old.map(query.matches) ?? now
            switch (before, now) {
            case (true, true): return shared(0, Event(resource: event.resource, type: .updated, old: event.old, bookmark: bookmark))
            case (false, true): return shared(1, Event(resource: event.resource, type: .created, bookmark: bookmark))
            case (true, false): return shared(2, Event(resource: event.resource, type: .destroyed, bookmark: bookmark))
            case (false, false): return nil
            }
        }
    }
}
