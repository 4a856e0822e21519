import CosiClient
import CosiMessages
import CosiRPC
import CosiState
import CosiTesting
import Foundation
import NIOConcurrencyHelpers
import Testing

/// Kills `cosid` with SIGKILL in the middle of a write storm and checks what survives.
@Suite("Durability across SIGKILL", .timeLimit(.minutes(3)))
struct DurabilityTests {
    @Test func everyAcknowledgedWriteSurvivesAndWatchersResumeExactlyOnce() async throws {
        let cosid = try await CosidProcess(["--sync", "full"], certificates: .development, durable: true)
        let type = "Durable.test.dev"
        let configuration = try cosid.clientConfiguration()

        // A bookmark from before the storm.
        let watcher = try await CosiClient.connect(configuration)
        var bookmarkWatch = watcher.watchCall(WatchRequest(namespace: "default", type: type, options: WatchOptions(bootstrapBookmark: true), apiVersion: 1)).makeAsyncIterator()
        _ = try await bookmarkWatch.next() // ready
        let bookmark = try #require(try await bookmarkWatch.next()?.event.first?.bookmark)

        // 16 clients write 10,000 resources; SIGKILL lands in the middle.
        let acknowledged = NIOLockedValueBox(Set<String>())
        let enough = Latch()
        let total = 10_000
        let clients = 16
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<clients {
                group.addTask {
                    let client = try await CosiClient.connect(configuration)
                    for index in stride(from: writer, to: total, by: clients) {
                        let id = String(format: "r%05d", index)
                        do {
                            _ = try await client.create(StateConformance.resource(type, id), owner: "")
                            if acknowledged.withLockedValue({ $0.insert(id); return $0.count == 3_000 }) { enough.open() }
                        } catch {
                            return // the server is gone
                        }
                    }
                }
            }
            group.addTask {
                await enough.wait()
                cosid.signal(SIGKILL)
            }
            try await group.waitForAll()
        }
        let acked = acknowledged.withLockedValue { $0 }
        #expect(acked.count >= 3_000 && acked.count < total, "the kill landed mid-stream: \(acked.count) acknowledged")

        // Restart on the same data directory.
        try await cosid.restart()
        let client = try await cosid.client()
        let stored = try await client.list(namespace: "default", type: type)
        let storedIDs = Set(stored.map(\.metadata.id))
        #expect(acked.isSubset(of: storedIDs), "every acknowledged write is present (\(acked.subtracting(storedIDs).count) missing)")
        // Nothing half-applied: every stored resource is complete.
        #expect(stored.allSatisfy { $0.metadata.version == "1" && $0.spec == StateConformance.resource(type, "x").spec })

        // A watcher resuming from the old bookmark gets every later event exactly once.
        var resumed = client.watchCall(WatchRequest(namespace: "default", type: type, options: WatchOptions(startFromBookmark: bookmark), apiVersion: 1)).makeAsyncIterator()
        _ = try await resumed.next() // ready
        var seen = Set<String>()
        var revisions: [UInt64] = []
        while seen.count < stored.count, let response = try await resumed.next() {
            for event in response.event {
                let id = try #require(event.resource?.metadata.id)
                #expect(event.type == .created)
                #expect(seen.insert(id).inserted, "\(id) delivered twice")
                revisions.append(try #require(event.bookmark.flatMap(Bookmark.decode)))
            }
        }
        #expect(seen == storedIDs)
        #expect(revisions == revisions.sorted())

        // Revisions continue after the restart.
        _ = try await client.create(StateConformance.resource(type, "after-restart"), owner: "")
        let last = try #require(try await resumed.next()?.event.first)
        #expect(last.resource?.metadata.id == "after-restart")
        #expect((last.bookmark.flatMap(Bookmark.decode) ?? 0) > (revisions.last ?? 0))
        await client.close()
        await watcher.close()
    }
}
