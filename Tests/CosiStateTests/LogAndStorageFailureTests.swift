import CosiMessages
import CosiState
import CosiTesting
import Foundation
import NIOConcurrencyHelpers
import Testing

/// A storage that fails its commits while told to (a full disk, a failing device).
final class FlakyStorage: StateStorage, @unchecked Sendable {
    let inner: any StateStorage
    let failing = NIOLockedValueBox(false)

    init(_ inner: any StateStorage) { self.inner = inner }

    var readsBlock: Bool { inner.readsBlock }

    func load() throws(StateError) -> (resources: [Resource], revision: UInt64) { try inner.load() }
    func commit(_ events: [StateEvent]) throws(StateError) {
        if failing.withLockedValue({ $0 }) { throw StateError(.storageFailure, "disk full") }
        try inner.commit(events)
    }
    func events(after: UInt64, upTo: UInt64, kind: ResourceKind?, limit: Int) throws(StateError) -> [StateEvent] {
        try inner.events(after: after, upTo: upTo, kind: kind, limit: limit)
    }
    func tailStart(kind: ResourceKind, id: String?, count: Int, upTo: UInt64) throws(StateError) -> UInt64? {
        try inner.tailStart(kind: kind, id: id, count: count, upTo: upTo)
    }
    var oldestRetainedRevision: UInt64 { inner.oldestRetainedRevision }
    func compact(policy: RetentionPolicy, now: Int64, limit: Int) throws(StateError) {
        try inner.compact(policy: policy, now: now, limit: limit)
    }
}

@Suite("The event log under load, and storage failures", .timeLimit(.minutes(2)))
struct LogAndStorageFailureTests {
    static func resource(_ id: String, _ value: Int = 0) -> Resource {
        Resource(metadata: Metadata(namespace: "default", type: "Log.test.dev", id: id), spec: Spec(yamlSpec: "v: \(value)\n"))
    }

    @Test func compactionKeepsPaceWithSustainedWrites() async throws {
        var configuration = StateEngineConfiguration()
        configuration.retention = RetentionPolicy(minimumEvents: 1_000)
        let directory = StateBackends.temporaryDirectory()
        defer { StateBackends.removeDirectory(directory) }
        let storage = try SQLiteStorage(directory: directory, sync: .normal)
        let engine = try StateEngine(storage: storage, configuration: configuration, logger: quietLogger("test"))
        defer { engine.shutdown() }
        // 256 writers at once, 300 changes each: large commit groups, 76,800 events.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<256 {
                group.addTask {
                    var current = try await engine.create(Self.resource("w\(writer)"), owner: "")
                    for value in 1..<300 {
                        current.spec = Spec(yamlSpec: "v: \(value)\n")
                        current = try await engine.update(current, owner: "")
                    }
                }
            }
            try await group.waitForAll()
        }
        let size = engine.revision - storage.oldestRetainedRevision + 1
        #expect(engine.revision == 76_800 + 4, "every change was committed (after the meta namespace's four built-in resources)")
        // Retention plus what may come in between two compactions, plus one group.
        #expect(size <= 1_000 + UInt64(configuration.compactionInterval) + UInt64(configuration.maximumCommitGroup), "the log holds \(size) events")
    }

    @Test func writesResumeOnceTheStorageRecovers() async throws {
        var configuration = StateEngineConfiguration()
        configuration.storageRetryInterval = .seconds(30)
        let clock = ManualClock()
        configuration.clock = { clock.now() }
        let storage = FlakyStorage(MemoryStorage())
        let engine = try StateEngine(storage: storage, configuration: configuration, logger: quietLogger("test"))
        defer { engine.shutdown() }
        var watch = try await engine.watch(WatchRequest(namespace: "default", type: "Log.test.dev")).makeAsyncIterator()
        _ = try await engine.create(Self.resource("before"), owner: "")
        let revisionBefore = engine.revision
        storage.failing.withLockedValue { $0 = true }
        await #expect { _ = try await engine.create(Self.resource("lost"), owner: "") } throws: {
            ($0 as? StateError)?.code == .storageFailure && "\($0)".contains("disk full")
        }
        #expect((try? engine.get(ResourceAddress(namespace: "default", type: "Log.test.dev", id: "lost"))) == nil, "a failed write leaves no trace")
        // The cause goes away: within the retry interval writes still fail at once (no commit is
        // tried); after it, the next write is stored.
        storage.failing.withLockedValue { $0 = false }
        await #expect { _ = try await engine.create(Self.resource("soon"), owner: "") } throws: { ($0 as? StateError)?.code == .storageFailure }
        clock.advance(by: .seconds(30))
        _ = try await engine.create(Self.resource("after"), owner: "")
        #expect(try engine.get(ResourceAddress(namespace: "default", type: "Log.test.dev", id: "after")).metadata.version == "1")
        #expect(engine.revision == revisionBefore + 1, "the failed write took no revision")
        // Watchers see the stored changes, and nothing of the failed one.
        var seen: [String] = []
        while seen.count < 2, let batch = try await watch.next() {
            seen += batch.compactMap { $0.resource?.metadata.id }
        }
        #expect(seen == ["before", "after"])
    }
}

/// A storage whose commits wait while told to (a slow device), saying when one is waiting.
final class BlockingStorage: StateStorage, @unchecked Sendable {
    let inner = MemoryStorage()
    let blocking = NIOLockedValueBox(false)
    let entered = Latch()
    private let release = DispatchSemaphore(value: 0)

    var readsBlock: Bool { inner.readsBlock }
    func load() throws(StateError) -> (resources: [Resource], revision: UInt64) { try inner.load() }
    func commit(_ events: [StateEvent]) throws(StateError) {
        if blocking.withLockedValue({ $0 }) {
            entered.open()
            release.wait()
        }
        try inner.commit(events)
    }
    func unblock() {
        blocking.withLockedValue { $0 = false }
        release.signal()
    }
    func events(after: UInt64, upTo: UInt64, kind: ResourceKind?, limit: Int) throws(StateError) -> [StateEvent] {
        try inner.events(after: after, upTo: upTo, kind: kind, limit: limit)
    }
    func tailStart(kind: ResourceKind, id: String?, count: Int, upTo: UInt64) throws(StateError) -> UInt64? {
        try inner.tailStart(kind: kind, id: id, count: count, upTo: upTo)
    }
    var oldestRetainedRevision: UInt64 { inner.oldestRetainedRevision }
    func compact(policy: RetentionPolicy, now: Int64, limit: Int) throws(StateError) {
        try inner.compact(policy: policy, now: now, limit: limit)
    }
}

@Suite("The committer's queue is bounded")
struct CommitterBoundTests {
    @Test func writesBeyondTheBoundAreRefusedAtOnceAndTheRestCommit() async throws {
        let storage = BlockingStorage()
        var configuration = StateEngineConfiguration()
        configuration.maximumPendingWrites = 8
        let engine = try StateEngine(storage: storage, configuration: configuration, logger: quietLogger("test"))
        defer { engine.shutdown() }
        storage.blocking.withLockedValue { $0 = true }
        let outcomes = NIOLockedValueBox<[Result<Resource, StateError>]>([])
        let record: @Sendable (Result<Resource, StateError>) -> Void = { result in outcomes.withLockedValue { $0.append(result) } }
        // The first write's commit waits in the storage; the next 8 queue; 4 more are refused.
        engine.create(LogAndStorageFailureTests.resource("first"), owner: "", completion: record)
        await storage.entered.wait()
        for index in 0..<12 {
            engine.create(LogAndStorageFailureTests.resource("w\(index)"), owner: "", completion: record)
        }
        let refused = outcomes.withLockedValue { $0 }
        #expect(refused.count == 4, "refused at once, without waiting for the commit")
        for outcome in refused {
            guard case .failure(let error) = outcome else { Issue.record("a refusal"); continue }
            #expect(error.code == .overloaded)
            #expect(error.message.contains("8 writes are waiting to be committed"), "\(error.message)")
        }
        storage.unblock()
        try await eventually("every queued write committed") { outcomes.withLockedValue { $0.count } == 13 }
        let committed = outcomes.withLockedValue { $0 }.filter { if case .success = $0 { true } else { false } }
        #expect(committed.count == 9)
        #expect(try engine.list(ResourceKind(namespace: "default", type: "Log.test.dev")).count == 9)
    }
}
