import CosiClient
import CosiMessages
import CosiRPC
import CosiState
import CosiStateService
import CosiTesting
import Testing

/// Watches are served from their connection's event loop, without a task (`WatchStream`): these
/// check what that must still do over the wire: follow the client's flow control and catch up
/// from the log without losing or repeating an event, start `tail_events` watches after a log
/// read on the engine's reader thread, free the engine's watch when the client cancels, and
/// serve a request too large for the loop as a task.
@Suite("Watches on the event loop", .timeLimit(.minutes(2)))
struct WatchStreamTests {
    /// A SQLite engine (log reads block, so they run on the reader thread) with a small queue.
    func withServer(queue: Int = 64, _ body: (StateEngine, CosiClient) async throws -> Void) async throws {
        var configuration = StateEngineConfiguration()
        configuration.watcherQueueCapacity = queue
        let backend = try StateBackends.sqlite(configuration: configuration)
        try await StateBackends.withWire(engine: backend.engine, pki: TestPKI()) { wire in
            try await body(backend.engine, wire.client)
        }
    }

    func write(_ client: CosiClient, type: String, count: Int, writers: Int = 16) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    for index in stride(from: writer, to: count, by: writers) {
                        _ = try await client.create(StateConformance.resource(type, String(format: "r%06d", index)), owner: "")
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    @Test func aClientThatStopsReadingLosesNothing() async throws {
        try await withServer { engine, client in
            let base = engine.revision
            var watch = client.watchCall(WatchRequest(namespace: "default", type: "Slow.test.dev")).makeAsyncIterator()
            _ = try await watch.next() // ready
            // Far more than the client's stream window (1,024 messages) and the watch's queue
            // (64) while the client reads nothing: the server must hold back, drop its queue
            // and read the rest from the log.
            let total = 5_000
            try await write(client, type: "Slow.test.dev", count: total)
            var expected = base + 1
            while expected <= base + UInt64(total), let response = try await watch.next() {
                for event in response.event {
                    #expect(event.bookmark.flatMap(Bookmark.decode) == expected)
                    expected += 1
                }
            }
            #expect(expected == base + UInt64(total) + 1)
        }
    }

    /// Many watchers sharing one connection, fed faster than they read: the connection's output
    /// fills, flushes re-enter on writability changes, wakes are batched per loop; every watcher
    /// must still see every event exactly once, in order.
    @Test func manyWatchersOnOneConnectionSeeEveryEventOnceInOrder() async throws {
        try await withServer(queue: 256) { engine, client in
            let base = engine.revision
            let total = 1_000
            try await withThrowingTaskGroup(of: Int.self) { group in
                let ready = AsyncStream<Void>.makeStream()
                for _ in 0..<100 {
                    group.addTask {
                        var watch = client.watchCall(WatchRequest(namespace: "default", type: "Many.test.dev", options: WatchOptions(aggregated: true))).makeAsyncIterator()
                        _ = try await watch.next() // ready
                        ready.continuation.yield()
                        var expected = base + 1
                        while expected <= base + UInt64(total), let response = try await watch.next() {
                            for event in response.event {
                                guard event.bookmark.flatMap(Bookmark.decode) == expected else { return -1 }
                                expected += 1
                            }
                        }
                        return Int(expected - base - 1)
                    }
                }
                var readyCount = 0
                for await _ in ready.stream {
                    readyCount += 1
                    if readyCount == 100 { break }
                }
                try await write(client, type: "Many.test.dev", count: total)
                var seen: [Int] = []
                for try await count in group { seen.append(count) }
                #expect(seen == Array(repeating: total, count: 100))
            }
        }
    }

    @Test func aTailWatchStartsAfterItsLogRead() async throws {
        try await withServer { _, client in
            try await write(client, type: "Tail.test.dev", count: 10, writers: 1)
            var watch = client.watchCall(WatchRequest(namespace: "default", type: "Tail.test.dev", options: WatchOptions(tailEvents: 3))).makeAsyncIterator()
            _ = try await watch.next() // ready
            var ids: [String] = []
            while ids.count < 3, let response = try await watch.next() {
                ids += response.event.compactMap { $0.resource?.metadata.id }
            }
            #expect(ids == ["r000007", "r000008", "r000009"])
            _ = try await client.create(StateConformance.resource("Tail.test.dev", "live"), owner: "")
            #expect(try await watch.next()?.event.first?.resource?.metadata.id == "live")
        }
    }

    @Test func cancellingAWatchFreesItInTheEngine() async throws {
        try await withServer { engine, client in
            let watching = Task {
                for try await _ in client.watchCall(WatchRequest(namespace: "default", type: "Gone.test.dev")) {}
            }
            try await eventually("the watch is registered") { engine.watcherCount == 1 }
            watching.cancel()
            _ = await watching.result
            try await eventually("the watch is freed") { engine.watcherCount == 0 }
        }
    }

    @Test func aWatchWhoseRequestIsTooLargeForTheLoopIsStillServed() async throws {
        try await withServer { _, client in
            // A label query of about 80 KiB (within the query limits): beyond what the loop
            // decodes (64 KiB).
            let values = (0..<1_000).map { String(format: "v%08d", $0) } + ["web"]
            let query = LabelQuery(terms: (0..<8).map { _ in LabelTerm(key: "role", op: .in, value: values) })
            var watch = client.watchCall(WatchRequest(namespace: "default", type: "Large.test.dev", options: WatchOptions(labelQuery: [query]))).makeAsyncIterator()
            _ = try await watch.next() // ready
            _ = try await client.create(StateConformance.resource("Large.test.dev", "other", labels: ["role": "db"]), owner: "")
            _ = try await client.create(StateConformance.resource("Large.test.dev", "match", labels: ["role": "web"]), owner: "")
            #expect(try await watch.next()?.event.first?.resource?.metadata.id == "match")
        }
    }
}
