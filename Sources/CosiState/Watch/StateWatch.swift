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
