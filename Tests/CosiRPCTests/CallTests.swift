import CosiMessages
import CosiRPC
import CosiTesting
import NIOCore
import NIOPosix
import Testing

@Suite("Calls over mutual TLS on 127.0.0.1", .timeLimit(.minutes(1)))
struct CallTests {
    let pki: TestPKI
    let observations = Observations()

    init() throws { pki = try TestPKI() }

    /// A server with the test methods and one connected client, for the duration of `body`, on
    /// event loops of their own (tests here count progress; a busy neighbour must not starve them).
    func withClient(configure: (inout RPCServerConfiguration) -> Void = { _ in }, _ body: (RPCClientConnection) async throws -> Void) async throws {
        try await withOwnEventLoops { group in
            try await withTestServer(pki: pki, methods: TestMethods.table(observations), configure: configure, group: group) { _, port in
                let client = try await connectTestClient(pki: pki, port: port, group: group)
                do {
                    try await body(client)
                } catch {
                    await client.close()
                    throw error
                }
                await client.close()
            }
        }
    }

    @Test func unaryRoundTrip() async throws {
        try await withClient { client in
            let reply = try await client.unary(TestMethods.echo, request: ByteBuffer(string: "hello"))
            #expect(String(buffer: reply) == "hello")
            // Typed messages, and the server's view of the caller.
            let typed = try await client.unary(TestMethods.typed, request: Envelope.InfoRequest().serializedBytes())
            let info = try Envelope.InfoResponse(serializedBytes: typed)
            #expect(info.identity == "tester")
            #expect(info.roles == ["os:admin"])
        }
    }

    @Test func serverStreamOfTenThousandMessagesArrivesCompleteAndInOrder() async throws {
        try await withClient { client in
            let request = TestMethods.number(10_000)
            var expected: UInt32 = 0
            for try await message in client.serverStream(TestMethods.count, request: request) {
                #expect(message.getInteger(at: message.readerIndex, as: UInt32.self) == expected)
                expected += 1
            }
            #expect(expected == 10_000)
        }
    }

    @Test func twoHundredConcurrentCallsOnOneConnection() async throws {
        try await withClient { client in
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<200 {
                    group.addTask {
                        let body = "call-\(index)"
                        let reply = try await client.unary(TestMethods.echo, request: ByteBuffer(string: body))
                        return String(buffer: reply) == body
                    }
                }
                var ok = 0
                for try await matched in group where matched { ok += 1 }
                return ok
            }
            #expect(results == 200)
        }
    }

    @Test func unknownMethodIsUnimplementedAndTheConnectionStaysUsable() async throws {
        try await withClient { client in
            await #expect {
                _ = try await client.unary("/no.Such/Method", request: ByteBuffer())
            } throws: { ($0 as? RPCError)?.code == .unimplemented }
            let reply = try await client.unary(TestMethods.echo, request: ByteBuffer(string: "still here"))
            #expect(String(buffer: reply) == "still here")
        }
    }

    @Test func inlineUnaryHandlersAnswerAndFailLikeOthers() async throws {
        try await withClient { client in
            let reply = try Envelope.InfoResponse(serializedBytes: try await client.unary(TestMethods.typedInline, request: ByteBuffer()))
            #expect(reply.version == "inline")
            #expect(reply.identity == "tester")
            await #expect {
                _ = try await client.unary(TestMethods.typedInline, request: ByteBuffer(bytes: [0xff, 0xff, 0xff]))
            } throws: { ($0 as? RPCError)?.code == .invalidArgument }
            await #expect {
                _ = try await client.unary(TestMethods.typedInline, request: ByteBuffer(), metadata: ["fail": "1"])
            } throws: { ($0 as? RPCError)?.code == .notFound }
        }
    }

    @Test func garbageRequestBodyIsInvalidArgument() async throws {
        try await withClient { client in
            await #expect {
                _ = try await client.unary(TestMethods.typed, request: ByteBuffer(bytes: [0xff, 0xff, 0xff, 0xff, 0x0f]))
            } throws: { ($0 as? RPCError)?.code == .invalidArgument }
            #expect(client.isActive)
        }
    }

    @Test func deadlineGivesDeadlineExceededAndStopsTheHandler() async throws {
        try await withClient { client in
            let request = TestMethods.number(5_000)
            await #expect {
                _ = try await client.unary(TestMethods.sleep, request: request, metadata: ["key": "deadline"], timeout: .milliseconds(100))
            } throws: { ($0 as? RPCError)?.code == .deadlineExceeded }
            try await eventually("observations.wasCancelled('deadline')") { observations.wasCancelled("deadline") }
        }
    }

    @Test func cancellingTheCallingTaskStopsTheServerHandler() async throws {
        try await withClient { client in
            let task = Task {
                for try await _ in client.serverStream(TestMethods.hang, request: ByteBuffer(), metadata: ["key": "cancel-me"]) {}
            }
            try await eventually("observations.wasStarted('cancel-me')") { observations.wasStarted("cancel-me") }
            #expect(!observations.wasCancelled("cancel-me"))
            task.cancel()
            try await eventually("observations.wasCancelled('cancel-me')") { observations.wasCancelled("cancel-me") }
            // The connection is still fine.
            #expect(String(buffer: try await client.unary(TestMethods.echo, request: ByteBuffer(string: "ok"))) == "ok")
        }
    }

    @Test func aStalledStreamDoesNotStallUnaryCalls() async throws {
        try await withClient { client in
            // Start an endless stream and never read from it.
            let stream = client.serverStream(TestMethods.infinite, request: ByteBuffer(), metadata: ["key": "stalled"])
            var iterator = stream.makeAsyncIterator()
            _ = try await iterator.next()
            // The server's writer stops once the 1 MiB stream window is spent: 1,024 messages of
            // 1 KiB (the client has granted no credit: it consumed one message, far from half).
            let window = Int(RPCSettings.defaultInitialWindow) / 1024
            try await eventually("observations.written('stalled') >= window") { observations.written("stalled") >= window }
            let blockedAt = window
            // Unary calls on the same connection go on...
            for index in 0..<50 {
                let reply = try await client.unary(TestMethods.echo, request: ByteBuffer(string: "u\(index)"), timeout: .seconds(2))
                #expect(String(buffer: reply) == "u\(index)")
            }
            // ...while the stream stays where it was (its next write waits for credit): 50 round
            // trips on its connection's loop later, it has written nothing more.
            #expect(observations.written("stalled") == window)
            // Reading resumes the stream.
            for _ in 0..<1000 { _ = try await iterator.next() }
            try await eventually("observations.written('stalled') > blockedAt + 200") { observations.written("stalled") > blockedAt + 200 }
        }
    }

    @Test func requestOverTheServersFrameSizeFailsLocally() async throws {
        try await withClient(configure: { $0.connection.settings.maxFrameSize = 16_384 }) { client in
            await #expect {
                _ = try await client.unary(TestMethods.echo, request: ByteBuffer(repeating: 1, count: 16_385))
            } throws: { ($0 as? RPCError)?.code == .resourceExhausted }
            // Exactly at the limit is fine, and the connection was never in trouble.
            let reply = try await client.unary(TestMethods.echo, request: ByteBuffer(repeating: 1, count: 16_384))
            #expect(reply.readableBytes == 16_384)
        }
    }

    @Test func responseOverTheClientsFrameSizeIsResourceExhausted() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            var settings = RPCSettings.defaults
            settings.maxFrameSize = 16_384
            let client = try await RPCClientConnection.connect(host: "127.0.0.1", port: port, tls: pki.clientContext(), settings: settings)
            await #expect {
                _ = try await client.unary(TestMethods.echo, request: ByteBuffer(repeating: 1, count: 16_385))
            } throws: { ($0 as? RPCError)?.code == .resourceExhausted }
            #expect(client.isActive)
            await client.close()
        }
    }

    @Test func connectionsBeyondTheLimitAreRefused() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations), configure: { $0.maximumConnections = 2 }) { server, port in
            let first = try await connectTestClient(pki: pki, port: port)
            let second = try await connectTestClient(pki: pki, port: port)
            let clock = ContinuousClock()
            let started = clock.now
            await #expect(throws: (any Error).self) { _ = try await connectTestClient(pki: pki, port: port) }
            #expect(clock.now - started < .seconds(2), "refused at once, not at the client's timeout: \(clock.now - started)")
            #expect(server.connectionCount == 2)
            // The first two still work; a slot frees when one closes.
            _ = try await first.unary(TestMethods.echo, request: ByteBuffer(string: "a"))
            await second.close()
            try await eventually("server.connectionCount == 1") { server.connectionCount == 1 }
            let third = try await connectTestClient(pki: pki, port: port)
            _ = try await third.unary(TestMethods.echo, request: ByteBuffer(string: "b"))
            await first.close()
            await third.close()
        }
    }

    @Test func gracefulShutdownLetsInFlightCallsFinishAndRefusesNewOnes() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations), configure: { $0.gracePeriod = .seconds(5) }) { server, port in
            let client = try await connectTestClient(pki: pki, port: port)
            let request = TestMethods.number(1_000)
            let inFlight = Task { try await client.unary(TestMethods.sleep, request: request, metadata: ["key": "in-flight"]) }
            let watch = Task {
                for try await _ in client.serverStream(TestMethods.hang, request: ByteBuffer(), metadata: ["key": "watch"]) {}
            }
            // Both calls are running on the server before it is asked to shut down.
            try await eventually("observations.wasStarted('in-flight') && observations.wasStarted('watch')") { observations.wasStarted("in-flight") && observations.wasStarted("watch") }
            server.beginGracefulShutdown()
            // The waiting call ends at once with UNAVAILABLE.
            await #expect {
                try await watch.value
            } throws: { ($0 as? RPCError)?.code == .unavailable }
            // New calls are refused.
            await #expect {
                _ = try await client.unary(TestMethods.echo, request: ByteBuffer(string: "late"))
            } throws: { ($0 as? RPCError)?.code == .unavailable }
            // The in-flight call completes.
            let reply = try await inFlight.value
            #expect(reply.readableBytes == 4)
            // Drained: the connection closes by itself, long before the grace period ends.
            try await eventually("server.connectionCount == 0", timeout: .seconds(4)) { server.connectionCount == 0 }
        }
    }

    @Test func servingReturnsOnlyOnceEveryCallHasEnded() async throws {
        var configuration = RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.serverContext())
        configuration.gracePeriod = .milliseconds(100)
        let server = RPCServer(configuration: configuration, methods: TestMethods.table(observations), group: MultiThreadedEventLoopGroup.singleton, logger: quietLogger("test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.serve() }
            let port = try await server.listeningAddress.port!
            let client = try await connectTestClient(pki: pki, port: port)
            let call = Task { try await client.unary(TestMethods.lingering, request: ByteBuffer(), metadata: ["key": "lingering"]) }
            try await eventually("observations.wasStarted('lingering')") { observations.wasStarted("lingering") }
            // The grace period ends the call; its handler takes 200 ms more to return. serve()
            // returns after that, not before.
            server.beginGracefulShutdown()
            try await group.next()
            #expect(observations.wasEnded("lingering"), "serve() returned while a call's handler was still running")
            await #expect(throws: RPCError.self) { try await call.value }
            await client.close()
        }
    }
}
