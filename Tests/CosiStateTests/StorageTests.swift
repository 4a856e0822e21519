import CosiMessages
import CosiTesting
import Foundation
import Testing

@testable import CosiState

@Suite("Durable storage and the event log", .timeLimit(.minutes(2)))
struct StorageTests {
    static func resource(_ id: String, _ labels: [String: String] = [:]) -> Resource {
        StateConformance.resource("Stored.test.dev", id, labels: labels)
    }

    let kind = ResourceKind(namespace: "default", type: "Stored.test.dev")

    @Test func stateAndBookmarksSurviveARestart() async throws {
        let directory = StateBackends.temporaryDirectory()
        defer { StateBackends.removeDirectory(directory) }
        var bookmark: [UInt8] = []
        var before: [Resource] = []
        var base: UInt64 = 0
        do {
            let engine = try StateEngine(storage: SQLiteStorage(directory: directory))
            base = engine.revision
            var a = try await engine.create(Self.resource("a"), owner: "o")
            _ = try await engine.create(Self.resource("b"), owner: "")
            var request = WatchRequest(namespace: kind.namespace, type: kind.type)
            request.options = WatchOptions(bootstrapBookmark: true)
            var watch = try await engine.watch(request).makeAsyncIterator()
            bookmark = try #require(try await watch.next()?.first?.bookmark)
            a.metadata.labels = ["x": "y"]
            a = try await engine.update(a, owner: "o")
            try await engine.destroy(ResourceAddress(namespace: "default", type: "Stored.test.dev", id: "b"), owner: "")
            before = try engine.list(kind)
            #expect(engine.revision == base + 4)
            engine.shutdown()
        }
        let engine = try StateEngine(storage: SQLiteStorage(directory: directory))
        defer { engine.shutdown() }
        #expect(try engine.list(kind) == before)
        #expect(engine.revision == base + 4)
        // Revisions continue.
        _ = try await engine.create(Self.resource("c"), owner: "")
        #expect(engine.revision == base + 5)
        // A bookmark from before the restart replays exactly what came after it.
        var request = WatchRequest(namespace: kind.namespace, type: kind.type)
        request.options = WatchOptions(startFromBookmark: bookmark)
        var watch = try await engine.watch(request).makeAsyncIterator()
        var replay: [Event] = []
        while replay.count < 3, let batch = try await watch.next() { replay += batch }
        #expect(replay.map(\.type) == [.updated, .destroyed, .created])
        #expect(replay.map { $0.resource?.metadata.id } == ["a", "b", "c"])
    }

    @Test func corruptDatabaseIsReportedAndLeftAlone() throws {
        let directory = StateBackends.temporaryDirectory()
        defer { StateBackends.removeDirectory(directory) }
        let garbage = Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        try garbage.write(to: URL(fileURLWithPath: directory + "/state.db"))
        #expect {
            _ = try SQLiteStorage(directory: directory)
        } throws: { error in
            "\(error)".contains("unusable") && "\(error)".contains("left as it is")
        }
        // Never reset: the bytes are untouched.
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/state.db")) == garbage)
    }

    @Test func databaseFromANewerSchemaIsRefused() async throws {
        let directory = StateBackends.temporaryDirectory()
        defer { StateBackends.removeDirectory(directory) }
        do {
            let engine = try StateEngine(storage: SQLiteStorage(directory: directory))
            _ = try await engine.create(Self.resource("a"), owner: "")
            engine.shutdown()
        }
        // As a newer cosid would leave it.
        try SQLiteConnection(path: directory + "/state.db").execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
        #expect {
            _ = try SQLiteStorage(directory: directory)
        } throws: { "\($0)".contains("newer") }
    }

    @Test(arguments: ["memory", "sqlite"])
    func bookmarksOlderThanTheRetainedHistoryFail(_ storage: String) async throws {
        var configuration = StateEngineConfiguration()
        configuration.retention = RetentionPolicy(minimumEvents: 10)
        configuration.compactionInterval = 1
        let backend = storage == "memory" ? try StateBackends.memory(configuration: configuration) : try StateBackends.sqlite(configuration: configuration)
        defer { backend.shutdown() }
        let engine = backend.engine
        var request = WatchRequest(namespace: kind.namespace, type: kind.type)
        request.options = WatchOptions(bootstrapBookmark: true)
        var first = try await engine.watch(request).makeAsyncIterator()
        let early = try #require(try await first.next()?.first?.bookmark)
        for index in 0..<50 { _ = try await engine.create(Self.resource("r\(index)"), owner: "") }
        request.options = WatchOptions(startFromBookmark: early)
        await #expect {
            _ = try await engine.watch(request)
        } throws: { error in
            (error as? StateError)?.code == .bookmarkUnusable && "\(error)".contains("older than the retained history")
        }
    }
}

@Suite("Slow watchers", .timeLimit(.minutes(3)))
struct SlowWatcherTests {
    @Test(arguments: ["memory", "sqlite"])
    func aWatcherThatStopsReadingLosesNothing(_ storage: String) async throws {
        var configuration = StateEngineConfiguration()
        configuration.watcherQueueCapacity = 1024
        let backend = storage == "memory" ? try StateBackends.memory(configuration: configuration) : try StateBackends.sqlite(configuration: configuration)
        defer { backend.shutdown() }
        let engine = backend.engine
        let watch = try await engine.watch(WatchRequest(namespace: "default", type: "Slow.test.dev"))
        var events = watch.makeAsyncIterator()
        let total = 100_000
        let base = engine.revision
        // Write 100 times the queue's capacity while the watcher reads nothing.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<32 {
                group.addTask {
                    for index in stride(from: writer, to: total, by: 32) {
                        _ = try await engine.create(StateConformance.resource("Slow.test.dev", String(format: "r%06d", index)), owner: "")
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(watch.queuedEventCount == 0, "the live queue overflowed and was dropped: what follows comes from the log")
        // Now read: every event, in order, exactly once.
        var expected: UInt64 = base + 1
        var received = 0
        while received < total, let batch = try await events.next() {
            for event in batch {
                #expect(event.bookmark.flatMap(Bookmark.decode) == expected)
                expected += 1
                received += 1
            }
        }
        #expect(received == total)
    }
}

@Suite("Watchers beyond the retained history", .timeLimit(.minutes(1)))
struct HistoryLostTests {
    @Test func aWatcherPastRetentionGetsErroredThenFailedPrecondition() async throws {
        var configuration = StateEngineConfiguration()
        configuration.watcherQueueCapacity = 8
        configuration.retention = RetentionPolicy(minimumEvents: 20)
        configuration.compactionInterval = 1
        let backend = try StateBackends.memory(configuration: configuration)
        defer { backend.shutdown() }
        let engine = backend.engine
        let watch = try await engine.watch(WatchRequest(namespace: "default", type: "Lost.test.dev", apiVersion: 1))
        var events = watch.makeAsyncIterator()
        // The watcher reads nothing while 200 events pass; only the last 20 are retained.
        for index in 0..<200 { _ = try await engine.create(StateConformance.resource("Lost.test.dev", "r\(index)"), owner: "") }
        let batch = try #require(try await events.next())
        #expect(batch.count == 1)
        #expect(batch.first?.type == .errored)
        #expect(batch.first?.error?.contains("fell behind") == true)
        await #expect { _ = try await events.next() } throws: { ($0 as? StateError)?.code == .historyLost }
    }
}

@Suite("One consumer per watch")
struct SingleConsumerWatchTests {
    @Test func aSecondIteratorIsRefused() async {
        await #expect(processExitsWith: .failure) {
            let engine = try StateEngine(storage: MemoryStorage())
            let watch = try await engine.watch(WatchRequest(namespace: "default", type: "Once.test.dev"))
            _ = watch.makeAsyncIterator()
            _ = watch.makeAsyncIterator()
        }
    }

    @Test func closingFromAnotherTaskEndsTheIteration() async throws {
        let engine = try StateEngine(storage: MemoryStorage())
        defer { engine.shutdown() }
        let watch = try await engine.watch(WatchRequest(namespace: "default", type: "Once.test.dev"))
        #expect(engine.watcherCount == 1)
        let consumer = Task {
            var count = 0
            for try await batch in watch { count += batch.count }
            return count
        }
        // The sequence is Sendable so another task can end the watch; the iterator stays with
        // the consumer.
        Task { watch.close() }
        #expect(try await consumer.value == 0)
        #expect(engine.watcherCount == 0)
    }
}
