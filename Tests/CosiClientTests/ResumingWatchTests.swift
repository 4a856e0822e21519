import CosiClient
import CosiMessages
import CosiRPC
import CosiServer
import CosiState
import CosiTesting
import Logging
import NIOCore
import Testing

/// The client's watch resumes from its last bookmark across a server restart.
@Suite("Resuming watch", .timeLimit(.minutes(1)))
struct ResumingWatchTests {
    /// Serves `engine` on `port` while `body` runs. The engine outlives the server (the test
    /// restarts the server over the same state), so the transport runs here without CosiServer's
    /// engine shutdown.
    @discardableResult
    func serving<R>(_ engine: StateEngine, _ pki: TestPKI, port: Int, _ body: (RunningServer) async throws -> R) async throws -> R {
        var configuration = RPCServerConfiguration(host: "127.0.0.1", port: port, tls: try pki.serverContext())
        configuration.gracePeriod = .seconds(1)
        let server = CosiServer(configuration: configuration, engine: engine, logger: quietLogger("test"))
        return try await withRunningServer(server.rpc, body)
    }

    @Test func resumesAfterTheServerRestartsWithoutLossOrRepeats() async throws {
        let pki = try TestPKI()
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        let type = "Resume.test.dev"
        let request = WatchRequest(namespace: "default", type: type, options: WatchOptions(bootstrapContents: true), apiVersion: 1)
        let (client, port, watch) = try await serving(engine, pki, port: 0) { first in
            let client = try await CosiClient.connect(CosiClientConfiguration(host: "127.0.0.1", port: first.port, tls: try pki.client()))
            var events = client.watch(request, maximumBackoff: .milliseconds(200)).makeAsyncIterator()
            #expect(try await events.next()?.type == .bootstrapped)
            _ = try await engine.create(StateConformance.resource(type, "before"), owner: "")
            #expect(try await events.next()?.resource?.metadata.id == "before")
            // Restart: the watch ends with UNAVAILABLE on the old server.
            await first.shutdownGracefully()
            return (client, first.port, events)
        }
        var events = watch
        // Changes happen while no server is up.
        _ = try await engine.create(StateConformance.resource(type, "while-down"), owner: "")
        try await serving(engine, pki, port: port) { _ in
            _ = try await engine.create(StateConformance.resource(type, "after"), owner: "")
            #expect(try await events.next()?.resource?.metadata.id == "while-down")
            #expect(try await events.next()?.resource?.metadata.id == "after")
            #expect(events.resumptions >= 1)
        }
        await client.close()
    }

    @Test func aResumeThatIsNoLongerPossibleEndsWithAClearError() async throws {
        let pki = try TestPKI()
        var configuration = StateEngineConfiguration()
        configuration.retention = RetentionPolicy(minimumEvents: 5)
        configuration.compactionInterval = 1
        let engine = try StateBackends.memory(configuration: configuration).engine
        defer { engine.shutdown() }
        let type = "Gone.test.dev"
        let (client, port, watch) = try await serving(engine, pki, port: 0) { first in
            let client = try await CosiClient.connect(CosiClientConfiguration(host: "127.0.0.1", port: first.port, tls: try pki.client()))
            var events = client.watch(WatchRequest(namespace: "default", type: type, options: WatchOptions(bootstrapBookmark: true)), maximumBackoff: .milliseconds(200)).makeAsyncIterator()
            #expect(try await events.next()?.type == .noop)
            await first.shutdownGracefully()
            return (client, first.port, events)
        }
        var events = watch
        // Far more changes than retained while the server is down.
        for index in 0..<50 { _ = try await engine.create(StateConformance.resource(type, "r\(index)"), owner: "") }
        try await serving(engine, pki, port: port) { _ in
            await #expect {
                _ = try await events.next()
            } throws: { error in
                (error as? RPCError)?.code == .failedPrecondition && "\(error)".contains("cannot resume")
            }
        }
        await client.close()
    }
}
