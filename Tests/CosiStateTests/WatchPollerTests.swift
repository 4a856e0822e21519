import CosiMessages
import CosiProtobuf
import CosiState
import CosiTesting
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// A watch driven by callbacks (`WatchPoller`, as cosid's event loops drive it) sees exactly
/// what an iterated watch sees, and its pre-encoded responses decode to the same events.
@Suite("Watch pollers", .timeLimit(.minutes(1)))
struct WatchPollerTests {
    static let type = "Polled.test.dev"

    /// Writes a change in each delivery form a label query makes: as is, CREATED by a flip in,
    /// DESTROYED by a flip out, then a destroy.
    func writeChanges(_ engine: StateEngine) async throws {
        var web = try await engine.create(StateConformance.resource(Self.type, "a", labels: ["role": "web"]), owner: "")
        web.metadata.labels = ["role": "db"]
        var db = try await engine.update(web, owner: "", expectedPhase: nil)
        db.metadata.labels = ["role": "web"]
        var back = try await engine.update(db, owner: "", expectedPhase: nil)
        back.metadata.annotations = ["note": "same labels"]
        _ = try await engine.update(back, owner: "", expectedPhase: nil)
        _ = try await engine.destroy(web.address, owner: "")
    }

    func drain(_ poller: WatchPoller, aggregated: Bool) throws -> [Event] {
        var events: [Event] = []
        while case .responses(let responses) = try poller.pollResponses(aggregated: aggregated, whenReady: {}) {
            for response in responses { events += try WatchResponse(serializedBytes: response).event }
        }
        return events
    }

    @Test(arguments: [false, true])
    func encodedResponsesCarryWhatTheIteratorSees(aggregated: Bool) async throws {
        let engine = try StateEngine(storage: MemoryStorage())
        defer { engine.shutdown() }
        for query in [[], [LabelQuery(terms: [LabelTerm(key: "role", op: .equal, value: ["web"])])]] {
            let request = WatchRequest(namespace: "default", type: Self.type, options: WatchOptions(labelQuery: query))
            let iterated = try await engine.watch(request)
            let polled = try await engine.watch(request).makePoller()
            try await writeChanges(engine)
            var iterator = iterated.makeAsyncIterator()
            var expected: [Event] = []
            while expected.count < 5, let batch = try await iterator.next() { expected += batch }
            #expect(try drain(polled, aggregated: aggregated) == expected)
            iterated.close()
            polled.close()
            // The next kind of watch starts from a clean slate.
            _ = try await engine.create(StateConformance.resource("Other.test.dev", "\(query.count)"), owner: "")
        }
    }

    @Test func aWatcherWithNothingIsCalledBackOnceSomethingArrives() async throws {
        let engine = try StateEngine(storage: MemoryStorage())
        defer { engine.shutdown() }
        let poller = try await engine.watch(WatchRequest(namespace: "default", type: Self.type)).makePoller()
        let calls = NIOLockedValueBox(0)
        guard case .waiting = try poller.pollResponses(aggregated: false, whenReady: { calls.withLockedValue { $0 += 1 } }) else {
            Issue.record("a watch with nothing to deliver must wait")
            return
        }
        #expect(calls.withLockedValue { $0 } == 0)
        _ = try await engine.create(StateConformance.resource(Self.type, "x"), owner: "")
        _ = try await engine.create(StateConformance.resource(Self.type, "y"), owner: "")
        #expect(calls.withLockedValue { $0 } == 1, "called once per wait, however many events arrive")
        #expect(try drain(poller, aggregated: false).compactMap { $0.resource?.metadata.id } == ["x", "y"])
        poller.close()
        guard case .finished = try poller.pollResponses(aggregated: false, whenReady: {}) else {
            Issue.record("a closed watch must be finished")
            return
        }
    }

    @Test func oneEventResponsesAreSharedByEveryWatcher() async throws {
        let engine = try StateEngine(storage: MemoryStorage())
        defer { engine.shutdown() }
        let pollers = try await (0..<3).asyncMap { _ in try await engine.watch(WatchRequest(namespace: "default", type: Self.type)).makePoller() }
        _ = try await engine.create(StateConformance.resource(Self.type, "shared"), owner: "")
        var buffers: [ByteBuffer] = []
        for poller in pollers {
            guard case .responses(let responses) = try poller.pollResponses(aggregated: false, whenReady: {}) else {
                Issue.record("expected a response")
                return
            }
            buffers += responses
        }
        #expect(buffers.count == 3)
        // The same storage, not three equal copies.
        let addresses = buffers.map { $0.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } }
        #expect(Set(addresses).count == 1)
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
