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
    func serve(_ engine: StateEngine, _ pki: TestPKI, port: Int) async throws -> CosiServer {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        var configuration = RPCServerConfiguration(host: "127.0.0.1", port: port, tls: try pki.serverContext())
        configuration.gracePeriod = .seconds(1)
        let server = CosiServer(configuration: configuration, engine: engine, logger: logger)
        try await server.start()
        return server
    }

    @Test func resumesAfterTheServerRestartsWithoutLossOrRepeats() async throws {
        let pki = try TestPKI()
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        let first = try await serve(engine, pki, port: 0)
        let port = first.rpc.localAddress!.port!
        let client = try await CosiClient.connect(CosiClientConfiguration(host: "127.0.0.1", port: port, tls: try pki.client()))
        let type = "Resume.test.dev"
        var events = client.watch(WatchRequest(namespace: "default", type: type, options: WatchOptions(bootstrapContents: true), apiVersion: 1), maximumBackoff: .milliseconds(200)).makeAsyncIterator()
        #expect(try await events.next()?.type == .bootstrapped)
        _ = try await engine.create(StateConformance.resource(type, "before"), owner: "")
        #expect(try await events.next()?.resource?.metadata.id == "before")

        // Restart: the watch ends with UNAVAILABLE on the old server, and changes happen while
        // no server is up.
        await first.rpc.shutdownGracefully()
        _ = try await engine.create(StateConformance.resource(type, "while-down"), owner: "")
        let second = try await serve(engine, pki, port: port)
        defer { Task { await second.rpc.close() } }
        _ = try await engine.create(StateConformance.resource(type, "after"), owner: "")

        #expect(try await events.next()?.resource?.metadata.id == "while-down")
        #expect(try await events.next()?.resource?.metadata.id == "after")
        #expect(events.resumptions >= 1)
        await client.close()
    }

    @Test func aResumeThatIsNoLongerPossibleEndsWithAClearError() async throws {
        let pki = try TestPKI()
        var configuration = StateEngineConfiguration()
        configuration.retention = RetentionPolicy(minimumEvents: 5)
        configuration.compactionInterval = 1
        let engine = try StateBackends.memory(configuration: configuration).engine
        defer { engine.shutdown() }
        let first = try await serve(engine, pki, port: 0)
        let port = first.rpc.localAddress!.port!
        let client = try await CosiClient.connect(CosiClientConfiguration(host: "127.0.0.1", port: port, tls: try pki.client()))
        let type = "Gone.test.dev"
        var events = client.watch(WatchRequest(namespace: "default", type: type, options: WatchOptions(bootstrapBookmark: true)), maximumBackoff: .milliseconds(200)).makeAsyncIterator()
        #expect(try await events.next()?.type == .noop)
        await first.rpc.shutdownGracefully()
        // Far more changes than retained while the server is down.
        for index in 0..<50 { _ = try await engine.create(StateConformance.resource(type, "r\(index)"), owner: "") }
        let second = try await serve(engine, pki, port: port)
        defer { Task { await second.rpc.close() } }
        await #expect {
            _ = try await events.next()
        } throws: { error in
            (error as? RPCError)?.code == .failedPrecondition && "\(error)".contains("cannot resume")
        }
        await client.close()
    }
}
