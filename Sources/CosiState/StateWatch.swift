import CosiMessages
import NIOConcurrencyHelpers
import NIOCore

extension StateEngine {
    /// Starts a watch (state.md, "Watch"). Setup errors are thrown here, before anything is sent.
    ///
    /// The result yields batches of events: first the initial or bootstrap batch (when there is
    /// one), then each group of events that is ready. A watcher that falls behind reads the log
    /// and rejoins the live queue, losing nothing; one that falls behind the retained history gets
    /// an ERRORED event (api_version 1) and then the error `.historyLost`.
    public func watch(_ request: WatchRequest) async throws(StateError) -> StateWatch {
        let (session, tail) = try beginWatch(request)
        if let tail {
            do throws(StateError) {
                let start = try await read(tail.body)
                finishTail(session, start: start)
            } catch {
                unregister(session.inbox)
                throw error
            }
        }
        return StateWatch(engine: self, session: session)
    }

    /// Starts a watch without a task: `completion` runs once, with the watch or the setup error,
    /// on the calling thread when setup needs no log read, on the engine's reader thread when it
    /// does (`tail_events`).
    public func watch(_ request: WatchRequest, completion: @escaping @Sendable (Result<StateWatch, StateError>) -> Void) {
        let session: WatchSession, tail: TailRead?
        do throws(StateError) {
            (session, tail) = try beginWatch(request)
        } catch {
            return completion(.failure(error))
        }
        guard let tail else { return completion(.success(StateWatch(engine: self, session: session))) }
        let handoff = TakeOnce(session)
        read(tail.body) { [self] result in
            let session = handoff.take()!
            switch result {
            case .success(let start):
                finishTail(session, start: start)
                completion(.success(StateWatch(engine: self, session: session)))
            case .failure(let error):
                unregister(session.inbox)
                completion(.failure(error))
            }
        }
    }

    /// The log read a `tail_events` watch needs before it starts: where its replay begins.
    struct TailRead: Sendable {
        let body: @Sendable (any StateStorage) throws(StateError) -> UInt64?
    }

    /// The replay starts at `start`; nil: nothing to replay, go live.
    private func finishTail(_ session: WatchSession, start: UInt64?) {
        if let start {
            session.cursor = start - 1
        } else {
            // Nothing to replay: go live (or catch up the few events published since).
            session.live = rejoin(session.inbox, at: session.cursor)
        }
    }

    /// Validates a watch request, registers its inbox and prepares its first batch; the tail
    /// read, when one is needed, is left to the caller.
    private func beginWatch(_ request: WatchRequest) throws(StateError) -> (WatchSession, TailRead?) {
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

        var tailRead: TailRead?
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
                tailRead = TailRead { storage throws(StateError) in try storage.tailStart(kind: kind, id: id, count: count, upTo: current) }
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
        return (session, tailRead)
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
            preconditionFailure("a StateWatch has one consumer: makeAsyncIterator() or makePoller() was called twice")
        }
        return AsyncIterator(session: session)
    }

    /// Hands the watch's state to a ``WatchPoller`` instead of an iterator: for a consumer that
    /// is not a task (a connection's event loop). Like ``makeAsyncIterator()``, once per watch.
    public func makePoller() -> WatchPoller {
        guard let session = session.take() else {
            preconditionFailure("a StateWatch has one consumer: makePoller() or makeAsyncIterator() was called twice")
        }
        return WatchPoller(session: session)
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

/// The events of one watch, pulled by a consumer that is not a task: it polls, and when there is
/// nothing, the watch calls it back once something arrives; when the watch must catch up from
/// the log, the consumer asks for the read and gets the page back through a callback.
///
/// Not thread-safe: one consumer (one event loop) polls; callbacks come from other threads and
/// must be brought back to that consumer before it polls again.
public final class WatchPoller {
    let session: WatchSession

    init(session: WatchSession) { self.session = session }

    /// What ``poll(whenReady:)`` found.
    public enum Poll {
        /// Events to deliver (poll again after delivering them).
        case events([Event])
        /// Nothing yet: `whenReady` will be called once, from another thread, when there is.
        case waiting
        /// The watcher must read the log: call ``readLog(_:completion:)`` with this page.
        case mustRead(LogRead)
        /// The watch is over (it was closed).
        case finished
    }

    /// What ``pollResponses(aggregated:whenReady:)`` found.
    public enum ResponsePoll {
        /// Encoded `WatchResponse` messages to send (poll again after sending them).
        case responses([ByteBuffer])
        /// Nothing yet: `whenReady` will be called once, from another thread, when there is.
        case waiting
        /// The watcher must read the log: call ``readLog(_:completion:)`` with this page.
        case mustRead(LogRead)
        /// The watch is over (it was closed).
        case finished
    }

    /// A page of the log to read.
    public struct LogRead: Sendable {
        let page: WatchSession.LogPage
    }

    /// The result of a log read, to hand back to ``absorb(_:)``.
    public struct LogResult: Sendable {
        let page: WatchSession.LogPage
        let events: [StateEvent]
    }

    /// The next batch, or what the consumer must do to get it. Throws the watch's terminal
    /// error (`historyLost`).
    public func poll(whenReady: @escaping @Sendable () -> Void) throws(StateError) -> Poll {
        switch try nextStep(whenReady) {
        case .events(let events): .events(events)
        case .deliveries(let deliveries): .events(deliveries.map(\.value))
        case .read(let page): .mustRead(LogRead(page: page))
        case .wait: .waiting
        case .end: .finished
        }
    }

    /// Like ``poll(whenReady:)``, with the events already encoded as `WatchResponse` messages:
    /// one per event, or one for the whole batch when `aggregated`. A change is encoded once
    /// for every watcher that receives it in the same form, so a message for one event is the
    /// same shared bytes for all of them.
    public func pollResponses(aggregated: Bool, whenReady: @escaping @Sendable () -> Void) throws(StateError) -> ResponsePoll {
        switch try nextStep(whenReady) {
        case .events(let events):
            return .responses(aggregated ? [encodeWatchResponse(events)] : events.map { encodeWatchResponse([$0]) })
        case .deliveries(let deliveries):
            return .responses(Self.responses(deliveries, aggregated: aggregated))
        case .read(let page): return .mustRead(LogRead(page: page))
        case .wait: return .waiting
        case .end: return .finished
        }
    }

    /// Takes a step; `.wait` comes back only once `whenReady` is armed.
    private func nextStep(_ whenReady: @escaping @Sendable () -> Void) throws(StateError) -> WatchSession.Step {
        while true {
            let step = try session.step()
            guard case .wait = step else { return step }
            if session.inbox.arm(.callback(whenReady)) { return .wait }
        }
    }

    static func responses(_ deliveries: [Delivery], aggregated: Bool) -> [ByteBuffer] {
        guard aggregated, deliveries.count > 1 else { return deliveries.map(\.responseBytes) }
        let events = deliveries.map(\.eventBytes)
        // Sized once: each event plus its key and length (at most 11 bytes).
        var buffer = ByteBufferAllocator().buffer(capacity: events.reduce(0) { $0 + $1.readableBytes + 11 })
        for event in events { appendEventField(event, to: &buffer) }
        return [buffer]
    }

    /// Reads a page of the log on the engine's reader thread; `completion` runs there.
    public func readLog(_ read: LogRead, completion: @escaping @Sendable (Result<LogResult, StateError>) -> Void) {
        let page = read.page
        session.engine.read(page.read) { result in completion(result.map { LogResult(page: page, events: $0) }) }
    }

    /// Takes in a page read from the log: the events of it this watcher delivers (possibly
    /// none: poll again).
    public func absorb(_ result: LogResult) -> [Event] {
        session.absorb(result.events, of: result.page).map(\.value)
    }

    /// Takes in a page read from the log, encoded like ``pollResponses(aggregated:whenReady:)``
    /// (possibly nothing: poll again).
    public func absorbResponses(_ result: LogResult, aggregated: Bool) -> [ByteBuffer] {
        Self.responses(session.absorb(result.events, of: result.page), aggregated: aggregated)
    }

    /// Ends the watch.
    public func close() { session.engine.unregister(session.inbox) }
}
