import CosiClient
import CosiMessages
import CosiRPC
import CosiState
import CosiStateService
import Logging
import NIOConcurrencyHelpers

/// What the conformance suite needs from a State implementation. Every backend reports errors
/// as ``RPCError`` with the wire status, so one suite checks them all.
public protocol StateBackend: Sendable {
    var name: String { get }
    func get(_ namespace: String, _ type: String, _ id: String) async throws -> Resource
    func list(_ namespace: String, _ type: String, labelQueries: [LabelQuery], idQuery: IDQuery?) async throws -> [Resource]
    func create(_ resource: Resource, owner: String) async throws -> Resource
    func update(_ resource: Resource, owner: String, expectedPhase: String?) async throws -> Resource
    func destroy(_ namespace: String, _ type: String, _ id: String, owner: String) async throws
    func teardown(_ namespace: String, _ type: String, _ id: String, owner: String) async throws -> Bool
    func teardownAndDestroy(_ namespace: String, _ type: String, _ id: String, owner: String, timeout: Duration) async throws
    /// Starts a watch; setup errors are thrown here.
    func watch(_ request: WatchRequest) async throws -> WatchProbe
    func close() async
}

/// Collects a watch's batches in the background so tests can wait for them with a timeout.
///
/// Waits are woken by the collector as batches arrive (no polling); the timeout only bounds a
/// wait that would otherwise hang a failing test.
public final class WatchProbe: Sendable {
    private struct State {
        var batches: [[Event]] = []
        var error: (any Error)?
        var ended = false
        var available: Int { batches.reduce(0) { $0 + $1.count } }
    }

    private let state = NIOLockedValueBox(State())
    private let task = NIOLockedValueBox<Task<Void, Never>?>(nil)
    /// Rings after every batch and at the end (the newest ring is kept for a late waiter).
    private let changes: AsyncStream<Void>
    private let changed: AsyncStream<Void>.Continuation

    init() {
        (changes, changed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func start<S: AsyncSequence & Sendable>(_ sequence: S) where S.Element == [Event] {
        task.withLockedValue { task in
            task = Task {
                do {
                    for try await batch in sequence {
                        self.state.withLockedValue { $0.batches.append(batch) }
                        self.changed.yield()
                    }
                    self.state.withLockedValue { $0.ended = true }
                } catch {
                    self.state.withLockedValue { $0.error = error; $0.ended = true }
                }
                self.changed.yield()
            }
        }
    }

    /// Waits until `take` finds what it needs in the state, woken at each change; fails after
    /// `timeout` with what `describe` says of the state then.
    private func wait<T: Sendable>(
        timeout: Duration, _ what: String, _ take: @escaping @Sendable (inout State) throws -> T?
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { [self] in
                var rings = changes.makeAsyncIterator()
                repeat {
                    if let value = try state.withLockedValue(take) { return value }
                } while await rings.next() != nil
                return nil
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            guard let first else {
                let have = state.withLockedValue { $0.available }
                throw ConformanceFailure("\(what) within \(timeout), have \(have) events")
            }
            return first
        }
    }

    /// Waits for the next `count` events (flattening batches), failing after `timeout`.
    public func events(_ count: Int, timeout: Duration = .seconds(5)) async throws -> [Event] {
        try await wait(timeout: timeout, "expected \(count) events") { state in
            guard state.available >= count else {
                if let error = state.error { throw error }
                return nil
            }
            var events: [Event] = []
            while events.count < count {
                var batch = state.batches.removeFirst()
                let needed = count - events.count
                if batch.count > needed {
                    events += batch.prefix(needed)
                    batch.removeFirst(needed)
                    state.batches.insert(batch, at: 0)
                } else {
                    events += batch
                }
            }
            return events
        }
    }

    /// The next batch, as delivered.
    public func batch(timeout: Duration = .seconds(5)) async throws -> [Event] {
        try await wait(timeout: timeout, "expected a batch") { state in
            if !state.batches.isEmpty { return state.batches.removeFirst() }
            if let error = state.error { throw error }
            return nil
        }
    }

    /// Asserts that the watch has nothing to deliver before the event of a change `barrier`
    /// makes: the barrier writes a resource the watch must see, and events arrive in order, so
    /// anything pending would come first. Absence is proved by a later event, not by waiting.
    public func expectNothingBefore(_ barrier: () async throws -> Resource) async throws {
        let written = try await barrier()
        let next = try await events(1)
        let resource = next[0].resource?.metadata
        guard resource?.id == written.metadata.id, resource?.version == written.metadata.version else {
            throw ConformanceFailure("expected nothing before the barrier \(written.metadata.id)@\(written.metadata.version), got \(next[0].type) of \(resource?.id ?? "?")@\(resource?.version ?? "?")")
        }
    }

    /// The error the watch ended with, waiting up to `timeout`.
    public func endError(timeout: Duration = .seconds(5)) async throws -> (any Error)? {
        try await wait(timeout: timeout, "the watch did not end") { state in
            state.ended ? .some(state.error.map { $0 as any Error }) : nil
        }
    }

    public func cancel() {
        task.withLockedValue { $0?.cancel() }
    }
}

/// A failed conformance check.
public struct ConformanceFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The engine called directly (in memory or on disk).
public struct EngineBackend: StateBackend {
    public let name: String
    public let engine: StateEngine
    let cleanup: @Sendable () -> Void

    public init(name: String, engine: StateEngine, cleanup: @escaping @Sendable () -> Void = {}) {
        self.name = name
        self.engine = engine
        self.cleanup = cleanup
    }

    private func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as StateError { throw StateService.rpcError(error) }
    }

    public func get(_ namespace: String, _ type: String, _ id: String) async throws -> Resource {
        try await mapped { try engine.get(ResourceAddress(namespace: namespace, type: type, id: id)) }
    }

    public func list(_ namespace: String, _ type: String, labelQueries: [LabelQuery], idQuery: IDQuery?) async throws -> [Resource] {
        try await mapped {
            try engine.list(ResourceKind(namespace: namespace, type: type), query: try ResourceQuery(labelQueries: labelQueries, idQuery: idQuery))
        }
    }

    public func create(_ resource: Resource, owner: String) async throws -> Resource {
        try await mapped { try await engine.create(resource, owner: owner) }
    }

    public func update(_ resource: Resource, owner: String, expectedPhase: String?) async throws -> Resource {
        try await mapped { try await engine.update(resource, owner: owner, expectedPhase: expectedPhase) }
    }

    public func destroy(_ namespace: String, _ type: String, _ id: String, owner: String) async throws {
        try await mapped { try await engine.destroy(ResourceAddress(namespace: namespace, type: type, id: id), owner: owner) }
    }

    public func teardown(_ namespace: String, _ type: String, _ id: String, owner: String) async throws -> Bool {
        try await mapped { try await engine.teardown(ResourceAddress(namespace: namespace, type: type, id: id), owner: owner) }
    }

    public func teardownAndDestroy(_ namespace: String, _ type: String, _ id: String, owner: String, timeout: Duration) async throws {
        try await mapped {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await engine.teardownAndDestroy(ResourceAddress(namespace: namespace, type: type, id: id), owner: owner) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw RPCError(code: .deadlineExceeded, message: "the call's deadline passed")
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }

    public func watch(_ request: WatchRequest) async throws -> WatchProbe {
        let watch = try await mapped { try await engine.watch(request) }
        let probe = WatchProbe()
        probe.start(MappedWatch(base: watch))
        return probe
    }

    /// Shuts the engine down and removes its files (synchronous: usable in a `defer`).
    public func shutdown() {
        engine.shutdown()
        cleanup()
    }

    public func close() async {
        shutdown()
    }
}

/// Maps engine errors at the end of a watch to their wire status.
struct MappedWatch: AsyncSequence, Sendable {
    typealias Element = [Event]
    let base: StateWatch
    struct AsyncIterator: AsyncIteratorProtocol {
        var base: StateWatch.AsyncIterator
        mutating func next() async throws -> [Event]? {
            do { return try await base.next() } catch let error as StateError { throw StateService.rpcError(error) }
        }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator()) }
}

/// The State service over COSI-RPC/1 and mutual TLS on 127.0.0.1.
public struct WireBackend: StateBackend {
    public let name: String
    public let client: CosiClient

    public init(name: String, client: CosiClient) {
        self.name = name
        self.client = client
    }

    public func get(_ namespace: String, _ type: String, _ id: String) async throws -> Resource {
        try await client.get(namespace: namespace, type: type, id: id)
    }

    public func list(_ namespace: String, _ type: String, labelQueries: [LabelQuery], idQuery: IDQuery?) async throws -> [Resource] {
        try await client.list(namespace: namespace, type: type, labelQueries: labelQueries, idQuery: idQuery)
    }

    public func create(_ resource: Resource, owner: String) async throws -> Resource {
        try await client.create(resource, owner: owner)
    }

    public func update(_ resource: Resource, owner: String, expectedPhase: String?) async throws -> Resource {
        try await client.update(resource, owner: owner, expectedPhase: expectedPhase)
    }

    public func destroy(_ namespace: String, _ type: String, _ id: String, owner: String) async throws {
        try await client.destroy(namespace: namespace, type: type, id: id, owner: owner)
    }

    public func teardown(_ namespace: String, _ type: String, _ id: String, owner: String) async throws -> Bool {
        try await client.teardown(namespace: namespace, type: type, id: id, owner: owner)
    }

    public func teardownAndDestroy(_ namespace: String, _ type: String, _ id: String, owner: String, timeout: Duration) async throws {
        try await client.teardownAndDestroy(namespace: namespace, type: type, id: id, owner: owner, timeout: timeout)
    }

    public func watch(_ request: WatchRequest) async throws -> WatchProbe {
        var iterator = client.watchCall(request).makeAsyncIterator()
        // Setup errors come instead of the empty "ready" response.
        guard let ready = try await iterator.next(), ready.event.isEmpty else {
            throw ConformanceFailure("the first WatchResponse must be the empty ready message")
        }
        let probe = WatchProbe()
        probe.start(RemainingWatch(iterator: IteratorBox(iterator)))
        return probe
    }

    /// Closes the client (the server belongs to the scope of ``StateBackends/withWire(engine:pki:_:)``).
    public func close() async {
        await client.close()
    }
}

/// Lets the rest of a started watch call be iterated from the probe's task.
final class IteratorBox: @unchecked Sendable {
    // @unchecked Sendable: handed over once, then used by one task only.
    var iterator: ResponseStream<WatchResponse>.AsyncIterator
    init(_ iterator: ResponseStream<WatchResponse>.AsyncIterator) { self.iterator = iterator }
}

struct RemainingWatch: AsyncSequence, Sendable {
    typealias Element = [Event]
    let iterator: IteratorBox
    struct AsyncIterator: AsyncIteratorProtocol {
        let box: IteratorBox
        mutating func next() async throws -> [Event]? {
            try await box.iterator.next().map(\.event)
        }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(box: iterator) }
}
