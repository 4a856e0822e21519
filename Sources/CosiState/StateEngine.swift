import CosiMessages
import DequeModule
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOPosix

/// Settings of a ``StateEngine``.
public struct StateEngineConfiguration: Sendable {
    /// How much of the event log to keep.
    public var retention = RetentionPolicy()
    /// Live events a watcher may have queued before it switches to reading the log.
    public var watcherQueueCapacity = 1024
    /// Events read from the log at a time while a watcher catches up.
    public var catchUpBatch = 1024
    /// The most writes committed in one transaction.
    public var maximumCommitGroup = 4096
    /// The most writes waiting for the committer; a write beyond is refused at once with
    /// `overloaded` (RESOURCE_EXHAUSTED on the wire) rather than queued without bound. Writers on
    /// event loops cannot be made to wait, so the bound is a refusal.
    public var maximumPendingWrites = 65_536
    /// Compaction runs after this many events; each run deletes up to twice as many events as
    /// came in since the last one (and at least 10,000), so the log keeps to its retention
    /// whatever the write rate.
    public var compactionInterval = 4_096
    /// After a failed commit, how long writes fail at once before the next commit is tried.
    public var storageRetryInterval: Duration = .seconds(1)
    /// The clock the retry interval is measured on (tests pass a manual one).
    public var clock: @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }
    /// Checks of the spec of resources of a type (by type), run for every Create and for every
    /// Update that carries a spec: a message makes the write INVALID_ARGUMENT with it. The
    /// daemon registers its built-in types' schemas here; the engine knows none.
    public var specValidators: [String: SpecValidator] = [:]

    public init() {}
}

/// Checks a resource's spec: nil when it is valid, otherwise what is wrong (naming the field).
public typealias SpecValidator = @Sendable (Resource) -> String?

/// What one write produced.
struct WriteResult: Sendable {
    var events: [StateEvent] = []
    var resource: Resource?
    var ready = false
    /// What a change did (``StateEngine/applyChange(_:)``).
    var change: ChangeOutcome?
}

/// The state engine: resources in memory, every change appended to the event log as one atomic
/// step, watches served from the log. It knows nothing about the network.
///
/// Reads (`get`, `list`) take an O(1) snapshot of the published state. Writes queue for a
/// single committer thread that applies a group of them to a copy, commits their events to
/// storage in one transaction, then publishes the copy and the events together; a write returns
/// only after its commit. If storage fails, nothing of the group is published and the engine
/// refuses further writes.
public final class StateEngine: Sendable {
    struct Shared {
        var store: ResourceStore
        var hub = WatchHub()
        /// The last commit failed: writes fail with this until `retryAt`, then the next group
        /// tries again.
        var failure: (error: StateError, retryAt: ContinuousClock.Instant)?
    }

    let storage: any StateStorage
    let configuration: StateEngineConfiguration
    let shared: NIOLockedValueBox<Shared>
    private let committer: Committer
    /// The thread that runs blocking log reads for watches (storage with `readsBlock`), so they
    /// never occupy the cooperative pool. One thread: the storage has one reader connection.
    private let reader: NIOThreadPool?
    private let logger: Logger

    /// Loads the state from `storage` and starts the committer.
    public init(storage: any StateStorage, configuration: StateEngineConfiguration = .init(), logger: Logger = Logger(label: "cosi.state")) throws(StateError) {
        let (resources, revision) = try storage.load()
        var store = ResourceStore(resources: resources, revision: revision)
        // Register the meta namespace's own definitions, owned by "meta", when missing.
        var events: [StateEvent] = []
        for resource in MetaNamespace.builtIns() {
            guard let current = store.get(resource.address) else {
                events.append(try store.create(resource, owner: MetaNamespace.owner, now: now()))
                continue
            }
            // A definition an older server stored differently (print columns) is brought up to date.
            guard resource.metadata.type == MetaNamespace.resourceDefinitionType, current.spec != resource.spec else { continue }
            var updated = current
            updated.spec = resource.spec
            events.append(try store.update(updated, owner: current.metadata.owner, expectedPhase: nil, now: now()))
        }
        Self.restoreLocks(&store)
        try storage.commit(events)
        self.storage = storage
        self.configuration = configuration
        self.logger = logger
        self.shared = NIOLockedValueBox(Shared(store: store))
        self.committer = Committer(maximumGroup: configuration.maximumCommitGroup, maximumPending: configuration.maximumPendingWrites)
        self.reader = storage.readsBlock ? NIOThreadPool(numberOfThreads: 1) : nil
        reader?.start()
        committer.start(self)
    }

    /// Stops the committer after the writes already queued, and the reader thread, and waits for
    /// both threads to end. Call it once nothing uses the engine any more (cosid: after the server
    /// has returned); calling it again does nothing.
    public func shutdown() {
        guard committer.stopAndJoin() else { return }
        try? reader?.syncShutdownGracefully()
    }

    /// Runs a log read: on the reader thread when storage blocks, inline otherwise.
    func read<T: Sendable>(_ body: @escaping @Sendable (any StateStorage) throws(StateError) -> T) async throws(StateError) -> T {
        let storage = self.storage
        guard let reader else { return try body(storage) }
        do {
            return try await reader.runIfActive { try body(storage) }
        } catch let error as StateError {
            throw error
        } catch {
            throw StateError(.unavailable, "the state engine is shut down")
        }
    }

    /// Runs a log read and calls `completion` with its result: on the reader thread when
    /// storage blocks, inline otherwise.
    func read<T: Sendable>(_ body: @escaping @Sendable (any StateStorage) throws(StateError) -> T, completion: @escaping @Sendable (Result<T, StateError>) -> Void) {
        let storage = self.storage
        guard let reader else {
            return completion(Result { () throws(StateError) in try body(storage) })
        }
        reader.submit { state in
            guard case .active = state else {
                return completion(.failure(StateError(.unavailable, "the state engine is shut down")))
            }
            completion(Result { () throws(StateError) in try body(storage) })
        }
    }

    /// The revision of the last committed change.
    public var revision: UInt64 { shared.withLockedValue { $0.store.revision } }

    /// The number of resources.
    public var resourceCount: Int { shared.withLockedValue { $0.store.count } }

    /// The number of open watches.
    public var watcherCount: Int { shared.withLockedValue { $0.hub.watcherCount } }

    // MARK: Reads

    /// The resource at `address`.
    public func get(_ address: ResourceAddress) throws(StateError) -> Resource {
        try validateAddress(namespace: address.kind.namespace, type: address.kind.type, id: address.id)
        guard let resource = shared.withLockedValue({ $0.store.get(address) }) else {
            throw StateError(.notFound, "resource \(address) does not exist")
        }
        return resource
    }

    /// The resources of a kind that match `query`, sorted by id.
    public func list(_ kind: ResourceKind, query: ResourceQuery = .all) throws(StateError) -> [Resource] {
        try validateAddress(namespace: kind.namespace, type: kind.type, id: nil)
        let store = shared.withLockedValue { $0.store }
        let resources = store.list(kind)
        return query.matchesEverything ? resources : resources.filter(query.matches)
    }

    // MARK: Writes

    /// The spec check of the resource's type, as INVALID_ARGUMENT (`field` names the request's
    /// resource: `resource` or `new_resource`).
    func validateSpec(_ resource: Resource, field: String) throws(StateError) {
        guard resource.hasSpec, let validator = configuration.specValidators[resource.metadata.type], let problem = validator(resource) else { return }
        throw StateError(.invalidArgument, "\(field).spec of \(resource.metadata.type): \(problem)")
    }

    /// Checks a Create exactly as ``create(_:owner:)`` would and returns what it would store;
    /// nothing is written and no event is made (a dry run).
    public func createDryRun(_ resource: Resource, owner: String) throws(StateError) -> Resource {
        try validateSpec(resource, field: "resource")
        var store = shared.withLockedValue { $0.store }
        try store.checkWritable(resource.address)
        return try store.create(resource, owner: owner, now: now()).resource
    }

    /// Checks an Update exactly as ``update(_:owner:expectedPhase:)`` would and returns what it
    /// would store; nothing is written (a dry run).
    public func updateDryRun(_ resource: Resource, owner: String, expectedPhase: String? = nil) throws(StateError) -> Resource {
        try validateSpec(resource, field: "new_resource")
        var store = shared.withLockedValue { $0.store }
        try store.checkWritable(resource.address)
        return try store.update(resource, owner: owner, expectedPhase: expectedPhase, now: now()).resource
    }

    /// Creates a resource; returns it as stored (version "1", owner, timestamps). `author` is who
    /// the event log records as its writer ("" records the owner).
    public func create(_ resource: Resource, owner: String, author: String = "") async throws -> Resource {
        try validateSpec(resource, field: "resource")
        return try await write(Self.creating(resource, owner: owner, author: author)).resource!
    }

    /// Updates a resource; returns it as stored (version + 1).
    public func update(_ resource: Resource, owner: String, expectedPhase: String? = nil, author: String = "") async throws -> Resource {
        try validateSpec(resource, field: "new_resource")
        return try await write(Self.updating(resource, owner: owner, expectedPhase: expectedPhase, author: author)).resource!
    }

    /// Destroys a resource that has no finalizers.
    public func destroy(_ address: ResourceAddress, owner: String, author: String = "") async throws {
        _ = try await write(Self.destroying(address, owner: owner, author: author))
    }

    /// Moves a resource to phase tearingDown; returns whether it is ready to destroy.
    public func teardown(_ address: ResourceAddress, owner: String, author: String = "") async throws -> Bool {
        try await write(Self.tearingDown(address, owner: owner, author: author)).ready
    }

    typealias Operation = @Sendable (inout ResourceStore, Timestamp) throws(StateError) -> WriteResult

    /// The writes of the State service and the controllers: refused on a resource of a change
    /// being tried; each event records its author (the owner when none is given).
    static func creating(_ resource: Resource, owner: String, author: String) -> Operation {
        { store, now throws(StateError) in
            try store.checkWritable(resource.address)
            let event = try store.create(resource, owner: owner, now: now).attributed(author: author.isEmpty ? owner : author)
            return WriteResult(events: [event], resource: event.resource)
        }
    }

    static func updating(_ resource: Resource, owner: String, expectedPhase: String?, author: String) -> Operation {
        { store, now throws(StateError) in
            try store.checkWritable(resource.address)
            let event = try store.update(resource, owner: owner, expectedPhase: expectedPhase, now: now).attributed(author: author.isEmpty ? owner : author)
            return WriteResult(events: [event], resource: event.resource)
        }
    }

    static func destroying(_ address: ResourceAddress, owner: String, author: String) -> Operation {
        { store, _ throws(StateError) in
            try store.checkWritable(address)
            return WriteResult(events: [try store.destroy(address, owner: owner).attributed(author: author.isEmpty ? owner : author)])
        }
    }

    static func tearingDown(_ address: ResourceAddress, owner: String, author: String) -> Operation {
        { store, now throws(StateError) in
            try store.checkWritable(address)
            let (ready, event) = try store.teardown(address, owner: owner, now: now)
            return WriteResult(events: event.map { [$0.attributed(author: author.isEmpty ? owner : author)] } ?? [], ready: ready)
        }
    }

    /// Adds finalizers to a resource, whoever owns it; returns the resource as stored. See
    /// ``ResourceStore/changeFinalizers(_:add:remove:now:)``.
    @discardableResult
    public func addFinalizers(_ address: ResourceAddress, _ finalizers: [String], author: String = "") async throws -> Resource {
        try await changeFinalizers(address, add: finalizers, remove: [], author: author)
    }

    /// Removes finalizers from a resource, whoever owns it; returns the resource as stored.
    @discardableResult
    public func removeFinalizers(_ address: ResourceAddress, _ finalizers: [String], author: String = "") async throws -> Resource {
        try await changeFinalizers(address, add: [], remove: finalizers, author: author)
    }

    private func changeFinalizers(_ address: ResourceAddress, add: [String], remove: [String], author: String) async throws -> Resource {
        try await write { store, now throws(StateError) in
            if let event = try store.changeFinalizers(address, add: add, remove: remove, now: now)?.attributed(author: author) {
                return WriteResult(events: [event], resource: event.resource)
            }
            return WriteResult(resource: store.get(address))
        }.resource!
    }

    /// Tears a resource down, waits until its finalizers are gone, then destroys it. Succeeds also
    /// when someone else destroys it meanwhile. Waits until the calling task is cancelled (the
    /// call's deadline).
    public func teardownAndDestroy(_ address: ResourceAddress, owner: String, author: String = "") async throws {
        // Watch first, so a finalizer removed right after the teardown is not missed.
        var request = WatchRequest(namespace: address.kind.namespace, type: address.kind.type, id: address.id)
        request.apiVersion = 1
        let watch = try await self.watch(request)
        var ready = try await teardown(address, owner: owner, author: author)
        var events = watch.makeAsyncIterator()
        while true {
            if ready {
                do {
                    try await destroy(address, owner: owner, author: author)
                    return
                } catch let error as StateError where error.code == .notFound {
                    return
                } catch let error as StateError where error.code == .finalizersPending {
                    ready = false
                }
            }
            guard let batch = try await events.next() else {
                throw StateError(.unavailable, "stopped waiting for \(address)")
            }
            for event in batch {
                if event.type == .destroyed, event.resource?.metadata.version != "undefined" { return }
                if event.type == .destroyed { throw StateError(.notFound, "resource \(address) does not exist") }
                ready = event.resource?.metadata.finalizers.isEmpty ?? false
            }
        }
    }

    func write(_ operation: @escaping Operation) async throws -> WriteResult {
        try await withCheckedThrowingContinuation { continuation in
            committer.submit(PendingWrite(operation: operation) { continuation.resume(with: $0.mapError { $0 as any Error }) })
        }
    }

    // MARK: Writes with a completion handler

    /// The writes above for callers that are not tasks (an RPC answered from its event loop):
    /// `completion` runs on the committer thread once the write is durable (or has failed), and
    /// must hand its result elsewhere at once.
    public func create(_ resource: Resource, owner: String, author: String = "", completion: @escaping @Sendable (Result<Resource, StateError>) -> Void) {
        do { try validateSpec(resource, field: "resource") } catch { return completion(.failure(error)) }
        committer.submit(PendingWrite(operation: Self.creating(resource, owner: owner, author: author)) { completion($0.map { $0.resource! }) })
    }

    /// Updates a resource; see ``create(_:owner:author:completion:)``.
    public func update(_ resource: Resource, owner: String, expectedPhase: String? = nil, author: String = "", completion: @escaping @Sendable (Result<Resource, StateError>) -> Void) {
        do { try validateSpec(resource, field: "new_resource") } catch { return completion(.failure(error)) }
        committer.submit(PendingWrite(operation: Self.updating(resource, owner: owner, expectedPhase: expectedPhase, author: author)) { completion($0.map { $0.resource! }) })
    }

    /// Destroys a resource; see ``create(_:owner:author:completion:)``.
    public func destroy(_ address: ResourceAddress, owner: String, author: String = "", completion: @escaping @Sendable (Result<Void, StateError>) -> Void) {
        committer.submit(PendingWrite(operation: Self.destroying(address, owner: owner, author: author)) { completion($0.map { _ in () }) })
    }

    /// Tears a resource down; see ``create(_:owner:author:completion:)``.
    public func teardown(_ address: ResourceAddress, owner: String, author: String = "", completion: @escaping @Sendable (Result<Bool, StateError>) -> Void) {
        committer.submit(PendingWrite(operation: Self.tearingDown(address, owner: owner, author: author)) { completion($0.map(\.ready)) })
    }

    /// Runs on the committer thread: applies a group of writes, commits, publishes. Returns the
    /// number of events committed.
    @discardableResult
    func process(_ batch: [PendingWrite]) -> Int {
        let (base, failure) = shared.withLockedValue { ($0.store, $0.failure) }
        if let failure, configuration.clock() < failure.retryAt {
            batch.forEach { $0.complete(.failure(failure.error)) }
            return 0
        }
        var working = base
        var events: [StateEvent] = []
        var results: [Result<WriteResult, StateError>] = []
        results.reserveCapacity(batch.count)
        let timestamp = now()
        for write in batch {
            do {
                let result = try write.operation(&working, timestamp)
                events += result.events
                results.append(.success(result))
            } catch {
                results.append(.failure(error))
            }
        }
        if !events.isEmpty {
            let started = ContinuousClock.now
            do {
                try storage.commit(events)
                let elapsed = ContinuousClock.now - started
                StateMetrics.commitDuration.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
                StateMetrics.commitGroupSize.record(batch.count)
            } catch {
                // Nothing of the group was stored (a commit is all or nothing) and nothing was
                // published: the state stays as it was, and the next group tries again.
                let retryAt = configuration.clock() + configuration.storageRetryInterval
                let refusal = error.code == .storageFull
                    ? StateError(.storageFull, "the disk holding the data is full, writes are refused until there is space: \(error.message)")
                    : StateError(.storageFailure, "storage failed, writes are refused for now: \(error.message)")
                if failure == nil {
                    logger.critical("storage commit failed; writes fail until a commit succeeds", metadata: ["error": "\(error)"])
                }
                shared.withLockedValue { $0.failure = (refusal, retryAt) }
                StateMetrics.commitFailures.increment()
                batch.forEach { $0.complete(.failure(refusal)) }
                return 0
            }
            let (watchers, wakers) = shared.withLockedValue { shared in
                if shared.failure != nil {
                    shared.failure = nil
                    logger.notice("storage recovered: writes are accepted again")
                }
                shared.store = working
                return (shared.hub.watcherCount, shared.hub.publish(events))
            }
            for waker in wakers { waker.wake() }
            StateMetrics.revision.record(Int64(working.revision))
            StateMetrics.resources.record(working.count)
            StateMetrics.watchers.record(watchers)
            StateMetrics.eventLogSize.record(Int64(working.revision) - Int64(storage.oldestRetainedRevision) + 1)
        }
        for (write, result) in zip(batch, results) {
            write.complete(result)
        }
        return events.count
    }

    /// Runs on the committer thread: drops up to `limit` events the retention policy no
    /// longer keeps.
    func compact(limit: Int) {
        do {
            var policy = configuration.retention
            policy.pinnedFrom = shared.withLockedValue { $0.store.pinnedRevision }
            try storage.compact(policy: policy, now: wallClockSeconds(), limit: limit)
        } catch {
            logger.error("event log compaction failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Watch support

    /// Registers an inbox and takes a snapshot consistent with it.
    func register(_ inbox: WatcherInbox) -> ResourceStore {
        shared.withLockedValue { shared in
            shared.hub.add(inbox)
            return shared.store
        }
    }

    func unregister(_ inbox: WatcherInbox) {
        shared.withLockedValue { $0.hub.remove(inbox) }
        inbox.close()
    }

    /// Makes a catching-up inbox live if no event was published after `revision`.
    func rejoin(_ inbox: WatcherInbox, at revision: UInt64) -> Bool {
        shared.withLockedValue { shared in
            guard shared.store.revision == revision else { return false }
            inbox.rejoin()
            return true
        }
    }
}
