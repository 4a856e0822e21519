import CosiTLS
import CosiTesting
import CosiWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOExtras
import Testing

@testable import CosiRPC

/// Reads the frames a handler wrote to an `EmbeddedChannel`.
struct FrameReader {
    var decoder = FrameDecoder(maxFrameSize: 64 << 20, requireSettingsFirst: false)

    mutating func frames(_ channel: EmbeddedChannel) throws -> [Frame] {
        while let bytes = try channel.readOutbound(as: ByteBuffer.self) { decoder.append(bytes) }
        var frames: [Frame] = []
        while let frame = try decoder.nextFrame() { frames.append(frame) }
        return frames
    }
}

extension EventLoopFuture where Value: Sendable {
    /// The outcome of a future on an `EmbeddedEventLoop`, if it has completed.
    var outcome: Result<Value, any Error>? {
        let box = NIOLockedValueBox<Result<Value, any Error>?>(nil)
        whenComplete { result in box.withLockedValue { $0 = result } }
        return box.withLockedValue { $0 }
    }

    var failure: RPCError? {
        if case .failure(let error)? = outcome { error as? RPCError } else { nil }
    }
}

extension EmbeddedChannel {
    func writeFrames(_ frames: Frame...) throws {
        var bytes = ByteBuffer()
        for frame in frames { bytes.writeFrame(frame) }
        try writeInbound(bytes)
    }
}

/// ``ServerConnectionHandler`` on an `EmbeddedChannel`: frames in; frames, calls and closing out.
@Suite("Server connection handler")
struct ServerConnectionHandlerTests {
    static let slow = "/test.Slow"
    static let inline = "/test.Inline"
    static let watch = "/test.Watch"

    static var methods: RPCMethodTable {
        RPCMethodTable([
            RPCMethod(name: slow, handler: .unary { request, _ in request }),
            RPCMethod(name: inline, handler: .unaryOnLoop(OnLoopHandler { request, _ in { respond in respond.succeed(UnaryAnswer { request }) } })),
            RPCMethod(name: watch, handler: .serverStreaming { _, _, _ in }, waitsOnOthers: true),
            // A large answer is costly: encoded in a task.
            RPCMethod(name: cheap, handler: .unaryOnLoop(OnLoopHandler { request, _ in
                { respond in respond.succeed(UnaryAnswer(costly: request.readableBytes >= 10) { request }) }
            })),
        ])
    }
    static let cheap = "/test.Cheap"

    /// A handler past its handshake, with the client's SETTINGS received.
    static func connected(grace: TimeAmount = .seconds(10), keepalive: (interval: TimeAmount, timeout: TimeAmount)? = nil) throws -> (EmbeddedChannel, FrameReader) {
        var options = ServerConnectionOptions()
        options.gracePeriod = grace
        if let keepalive {
            options.keepaliveInterval = keepalive.interval
            options.keepaliveTimeout = keepalive.timeout
        }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let channel = EmbeddedChannel(handler: ServerConnectionHandler(methods: methods, options: options, logger: logger))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.pipeline.fireUserInboundEventTriggered(TLSHandshakeCompleted(peer: PeerIdentity(commonName: "alice", organizations: ["os:admin"], fingerprint: "f"), alpn: "cosi-rpc/1"))
        channel.embeddedEventLoop.run()
        var reader = FrameReader()
        #expect(try reader.frames(channel).map(\.type) == [.settings], "the server speaks first")
        try channel.writeFrames(Frame(type: .settings, streamID: 0, payload: Envelope.Settings().serializedBytes()))
        #expect(try reader.frames(channel).map(\.type) == [.settings], "and acknowledges the client's SETTINGS")
        return (channel, reader)
    }

    static func call(_ id: UInt32, _ method: String, _ body: String = "req", timeoutMS: UInt64 = 0) -> [Frame] {
        [
            Frames.headers(id, Envelope.CallHeaders(method: method, timeoutMS: timeoutMS)),
            Frame(type: .message, flags: .endStream, streamID: id, payload: ByteBuffer(string: body)),
        ]
    }

    static func status(_ frame: Frame?) -> RPCStatus.Code? {
        guard let frame, frame.type == .trailers, let status = try? Envelope.Status(serializedBytes: frame.payload) else { return nil }
        return RPCStatus.Code(rawValue: status.code)
    }

    @Test func anAsynchronousCallLeavesAsAServerCallAndItsAnswerComesBack() throws {
        var (channel, reader) = try Self.connected()
        for frame in Self.call(1, Self.slow) { try channel.writeFrames(frame) }
        let call = try #require(try channel.readInbound(as: ServerCall.self))
        guard case .handler(.unary, let request, let context) = call.work else {
            Issue.record("not the handler's task: \(call.work)")
            return
        }
        #expect(context.method == Self.slow)
        #expect(context.peer.commonName == "alice")
        #expect(String(buffer: request) == "req")
        #expect(try reader.frames(channel).isEmpty)
        call.sink.finish(response: ByteBuffer(string: "resp"), status: .ok)
        channel.embeddedEventLoop.run()
        let frames = try reader.frames(channel)
        #expect(frames.map(\.type) == [.message, .trailers])
        #expect(String(buffer: frames[0].payload) == "resp")
        #expect(Self.status(frames.last) == .ok)
    }

    @Test func anInlineCallIsAnsweredOnTheEventLoop() throws {
        var (channel, reader) = try Self.connected()
        try channel.writeFrames(Self.call(1, Self.inline, "hi")[0], Self.call(1, Self.inline, "hi")[1])
        #expect(try channel.readInbound(as: ServerCall.self) == nil, "no task for an inline method")
        let frames = try reader.frames(channel)
        #expect(frames.map(\.type) == [.message, .trailers])
        #expect(String(buffer: frames[0].payload) == "hi")
    }

    @Test func aConnectionEndsWhenItsClientCertificateExpires() throws {
        // Over real TLS (embedded channels back to back), on the loop's virtual time: a client
        // certificate valid for 120 s more.
        let pki = try TestPKI()
        var options = ServerConnectionOptions()
        options.keepaliveInterval = .hours(1)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let link = try BackToBack(
            client: [try TLSHandler(context: TLSContext(role: .client, configuration: pki.client(name: "brief", validForSeconds: 120)), serverName: "127.0.0.1")],
            server: [try TLSHandler(context: pki.serverContext()), ServerConnectionHandler(methods: Self.methods, options: options, logger: logger)]
        )
        try link.interact()
        var bytes = ByteBuffer()
        bytes.writeFrame(Frame(type: .settings, streamID: 0, payload: Envelope.Settings().serializedBytes()))
        for frame in Self.call(1, Self.watch) { bytes.writeFrame(frame) }
        link.client.writeAndFlush(bytes, promise: nil)
        try link.interact()
        #expect(link.serverEvents.messages.count == 1, "the watch runs")
        var decoder = FrameDecoder(maxFrameSize: 64 << 20, requireSettingsFirst: false)
        func received() throws -> [Frame] {
            decoder.append(link.clientEvents.takeReceived())
            var frames: [Frame] = []
            while let frame = try decoder.nextFrame() { frames.append(frame) }
            return frames
        }
        #expect(try received().map(\.type) == [.settings, .settings], "SETTINGS and the acknowledgement")

        link.server.embeddedEventLoop.advanceTime(by: .seconds(110))
        try link.interact()
        #expect(link.server.isActive, "still valid")
        link.server.embeddedEventLoop.advanceTime(by: .seconds(11))
        try link.interact()
        let frames = try received().filter { $0.type != .settings }
        let trailers = try #require(frames.first { $0.type == .trailers && $0.streamID == 1 }, "the watch ends: \(frames.map(\.type))")
        let status = try Envelope.Status(serializedBytes: trailers.payload)
        #expect(RPCStatus.Code(rawValue: status.code) == .permissionDenied)
        #expect(status.message.contains("expired"), "\(status.message)")
        #expect(frames.contains { $0.type == .goAway })
        #expect(!link.server.isActive, "the connection closes")
    }

    @Test func aLargeRequestOfAnOnLoopMethodIsPreparedInATaskAndAnsweredOnTheLoop() async throws {
        var (channel, reader) = try Self.connected()
        let large = String(repeating: "x", count: RPCHandler.onLoopRequestLimit + 1)
        try channel.writeFrames(Self.call(1, Self.inline, large)[0], Self.call(1, Self.inline, large)[1])
        let call = try #require(try channel.readInbound(as: ServerCall.self), "decoded off the loop")
        guard case .handler(.unaryOnLoop, _, _) = call.work else {
            Issue.record("not the on-loop handler's preparation: \(call.work)")
            return
        }
        #expect(try reader.frames(channel).isEmpty)
        await call.run()
        #expect(try reader.frames(channel).isEmpty, "the body runs on the loop, not in the task")
        channel.embeddedEventLoop.run()
        let frames = try reader.frames(channel)
        #expect(frames.map(\.type) == [.message, .trailers])
        #expect(frames.first?.payload.readableBytes == large.utf8.count)
    }

    @Test func whileTheChannelIsNotWritableNothingMoreIsDecoded() throws {
        var (channel, reader) = try Self.connected()
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try channel.writeFrames(Self.call(1, Self.inline, "a")[0], Self.call(1, Self.inline, "a")[1])
        #expect(try reader.frames(channel).isEmpty, "the call waits in the decoder")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        let frames = try reader.frames(channel)
        #expect(frames.map(\.type) == [.message, .trailers])
        #expect(String(buffer: frames[0].payload) == "a")
    }

    @Test func messagesWaitWhileTheChannelIsNotWritable() throws {
        var (channel, reader) = try Self.connected()
        // The client grants every window: only the server's own allowance holds messages back.
        try channel.writeFrames(Frame(type: .settings, streamID: 0, payload: Envelope.Settings(initialWindow: UInt32(Int32.max), initialConnectionWindow: UInt32(Int32.max)).serializedBytes()))
        for frame in Self.call(1, Self.watch) { try channel.writeFrames(frame) }
        _ = try reader.frames(channel)
        let call = try #require(try channel.readInbound(as: ServerCall.self))
        let handler = try channel.pipeline.syncOperations.handler(type: ServerConnectionHandler.self)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        // 40 messages of 64 KiB (2.5 MiB) while the peer does not read.
        var written: [EventLoopFuture<Void>] = []
        for _ in 0..<40 {
            let promise = channel.embeddedEventLoop.makePromise(of: Void.self)
            handler.enqueue(call.sink.streamID, ByteBuffer(repeating: 1, count: 64 << 10), completion: promise)
            written.append(promise.futureResult)
        }
        channel.embeddedEventLoop.run()
        let first = try reader.frames(channel).filter { $0.type == .message }.count
        #expect(first <= 17, "at most the allowance (1 MiB) and one message more: \(first)")
        #expect(written.filter { $0.outcome != nil }.count == first, "the writers of the others wait")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(try reader.frames(channel).filter { $0.type == .message }.count == 40 - first)
        #expect(written.allSatisfy { $0.outcome != nil })
    }

    @Test func aCostlyAnswerGoesToATaskACheapOneIsInline() throws {
        var (channel, reader) = try Self.connected()
        try channel.writeFrames(Self.call(1, Self.cheap, "small")[0], Self.call(1, Self.cheap, "small")[1])
        #expect(try channel.readInbound(as: ServerCall.self) == nil)
        #expect(try reader.frames(channel).map(\.type) == [.message, .trailers])
        try channel.writeFrames(Self.call(3, Self.cheap, "a large request")[0], Self.call(3, Self.cheap, "a large request")[1])
        let call = try #require(try channel.readInbound(as: ServerCall.self), "answered in a task")
        #expect(try reader.frames(channel).isEmpty)
        call.sink.finish(response: ByteBuffer(string: "done"), status: .ok)
        channel.embeddedEventLoop.run()
        #expect(try reader.frames(channel).map(\.type) == [.message, .trailers])
    }

    @Test func costlyAnswersAreComputedAFewAtATime() throws {
        var (channel, reader) = try Self.connected()
        for index in 0..<6 {
            for frame in Self.call(UInt32(2 * index + 1), Self.cheap, "a large request") { try channel.writeFrames(frame) }
        }
        var calls: [ServerCall] = []
        while let call = try channel.readInbound(as: ServerCall.self) { calls.append(call) }
        #expect(calls.count == ServerConnectionHandler.maxCostlyCalls)
        // One ends: the next waiting one starts.
        calls[0].sink.finish(response: ByteBuffer(string: "done"), status: .ok)
        channel.embeddedEventLoop.run()
        #expect(try channel.readInbound(as: ServerCall.self)?.sink.streamID == 9)
        // A waiting one that is cancelled never starts.
        try channel.writeFrames(Frames.cancel(11))
        calls[1].sink.finish(response: ByteBuffer(string: "done"), status: .ok)
        channel.embeddedEventLoop.run()
        #expect(try channel.readInbound(as: ServerCall.self) == nil)
        _ = try reader.frames(channel)
    }

    @Test func unknownMethodsAreUnimplemented() throws {
        var (channel, reader) = try Self.connected()
        for frame in Self.call(1, "/no.Such/Method") { try channel.writeFrames(frame) }
        #expect(Self.status(try reader.frames(channel).last) == .unimplemented)
    }

    @Test func cancelStopsTheCall() throws {
        var (channel, reader) = try Self.connected()
        for frame in Self.call(1, Self.slow) { try channel.writeFrames(frame) }
        let call = try #require(try channel.readInbound(as: ServerCall.self))
        #expect(!call.cancellation.isCancelled)
        try channel.writeFrames(Frames.cancel(1))
        #expect(call.cancellation.isCancelled)
        // The handler's late answer is dropped.
        call.sink.finish(response: ByteBuffer(string: "late"), status: .ok)
        channel.embeddedEventLoop.run()
        #expect(try reader.frames(channel).isEmpty)
    }

    @Test func aDeadlineEndsTheCallWithDeadlineExceeded() throws {
        var (channel, reader) = try Self.connected()
        for frame in Self.call(1, Self.slow, timeoutMS: 50) { try channel.writeFrames(frame) }
        let call = try #require(try channel.readInbound(as: ServerCall.self))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(49))
        #expect(try reader.frames(channel).isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(Self.status(try reader.frames(channel).last) == .deadlineExceeded)
        #expect(call.cancellation.isCancelled)
    }

    @Test func quiescingSendsGoAwayEndsWaitingCallsAndClosesWhenDrained() throws {
        var (channel, reader) = try Self.connected()
        for frame in Self.call(1, Self.slow) + Self.call(3, Self.watch) { try channel.writeFrames(frame) }
        let slow = try #require(try channel.readInbound(as: ServerCall.self))
        let watch = try #require(try channel.readInbound(as: ServerCall.self))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        channel.embeddedEventLoop.run()
        let frames = try reader.frames(channel)
        #expect(frames.map(\.type) == [.goAway, .trailers])
        #expect(try Envelope.GoAway(serializedBytes: frames[0].payload).code == ConnectionErrorCode.noError.rawValue)
        #expect(frames[1].streamID == 3)
        #expect(Self.status(frames[1]) == .unavailable, "the watch ends at once")
        #expect(watch.cancellation.isCancelled)
        #expect(!slow.cancellation.isCancelled, "the other call may finish")
        #expect(channel.isActive)
        // A new call is refused; the last call finishing closes the connection.
        for frame in Self.call(5, Self.slow) { try channel.writeFrames(frame) }
        #expect(Self.status(try reader.frames(channel).last) == .unavailable)
        slow.sink.finish(response: ByteBuffer(string: "done"), status: .ok)
        channel.embeddedEventLoop.run()
        #expect(try reader.frames(channel).map(\.type) == [.message, .trailers])
        #expect(!channel.isActive)
    }

    @Test func theGracePeriodEndsCallsThatDoNotFinish() throws {
        var (channel, reader) = try Self.connected(grace: .seconds(2))
        for frame in Self.call(1, Self.slow) { try channel.writeFrames(frame) }
        let slow = try #require(try channel.readInbound(as: ServerCall.self))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        let frames = try reader.frames(channel)
        #expect(frames.map(\.type) == [.goAway, .trailers])
        #expect(Self.status(frames.last) == .unavailable)
        #expect(slow.cancellation.isCancelled)
        #expect(!channel.isActive)
    }

    @Test func aDecodingErrorIsAGoAwayAndAClose() throws {
        var (channel, reader) = try Self.connected()
        var bytes = ByteBuffer()
        bytes.writeFrameHeader(FrameHeader(length: 128 << 20, type: .message, streamID: 1))
        try channel.writeInbound(bytes)
        let goAway = try #require(try reader.frames(channel).first)
        #expect(try Envelope.GoAway(serializedBytes: goAway.payload).code == ConnectionErrorCode.frameSizeError.rawValue)
        #expect(!channel.isActive)
    }
}

/// ``ClientConnectionHandler`` on an `EmbeddedChannel`: calls in; frames out; server frames in;
/// promises and streams completed.
@Suite("Client connection handler")
struct ClientConnectionHandlerTests {
    /// A handler whose connection is ready (handshake done, the server's SETTINGS received).
    static func connected() throws -> (EmbeddedChannel, ClientConnectionHandler, FrameReader) {
        let channel = EmbeddedChannel()
        let ready = channel.eventLoop.makePromise(of: PeerIdentity?.self)
        let handler = ClientConnectionHandler(settings: .defaults, ready: ready)
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.pipeline.fireUserInboundEventTriggered(TLSHandshakeCompleted(peer: PeerIdentity(commonName: "server", organizations: [], fingerprint: "f"), alpn: "cosi-rpc/1"))
        channel.embeddedEventLoop.run()
        var reader = FrameReader()
        #expect(try reader.frames(channel).map(\.type) == [.settings])
        #expect(ready.futureResult.outcome == nil, "not ready before the server's SETTINGS")
        try channel.writeFrames(Frame(type: .settings, streamID: 0, payload: Envelope.Settings().serializedBytes()))
        #expect(try ready.futureResult.outcome?.get()?.commonName == "server")
        #expect(try reader.frames(channel).map(\.type) == [.settings], "the ACK")
        return (channel, handler, reader)
    }

    /// Starts a server-streaming call (stream 1) and consumes the frames it sent.
    static func startStream(_ channel: EmbeddedChannel, _ handler: ClientConnectionHandler, _ reader: inout FrameReader) throws -> (CallHandle, AsyncThrowingStream<ByteBuffer, any Error>) {
        let (stream, continuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
        let handle = CallHandle()
        handler.startCall(handle, headers: Envelope.CallHeaders(method: "/s"), request: ByteBuffer(), responder: .streaming(continuation))
        channel.embeddedEventLoop.run()
        #expect(try reader.frames(channel).map(\.type) == [.headers, .message])
        return (handle, stream)
    }

    @Test func aUnaryCallIsSentAndItsPromiseCompleted() throws {
        var (channel, handler, reader) = try Self.connected()
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        handler.startCall(CallHandle(), headers: Envelope.CallHeaders(method: "/m"), request: ByteBuffer(string: "req"), responder: .unary(promise))
        channel.embeddedEventLoop.run()
        let frames = try reader.frames(channel)
        #expect(frames.map(\.type) == [.headers, .message])
        #expect(try Envelope.CallHeaders(serializedBytes: frames[0].payload).method == "/m")
        #expect(promise.futureResult.outcome == nil)
        try channel.writeFrames(Frame(type: .message, streamID: 1, payload: ByteBuffer(string: "resp")), Frames.trailers(1, .ok))
        #expect(try promise.futureResult.outcome?.get() == ByteBuffer(string: "resp"))
    }

    @Test func aDeadlineCancelsTheCallOnTheWire() throws {
        var (channel, handler, reader) = try Self.connected()
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        handler.startCall(CallHandle(), headers: Envelope.CallHeaders(method: "/m", timeoutMS: 100), request: ByteBuffer(), responder: .unary(promise))
        channel.embeddedEventLoop.run()
        _ = try reader.frames(channel)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(99))
        #expect(promise.futureResult.outcome == nil)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(promise.futureResult.failure?.code == .deadlineExceeded)
        let frames = try reader.frames(channel)
        #expect(frames.map(\.type) == [.cancel])
        #expect(frames.first?.streamID == 1)
    }

    @Test func aStreamYieldsMessagesAndGrantsCreditAsItIsConsumed() async throws {
        var (channel, handler, reader) = try Self.connected()
        let (handle, stream) = try Self.startStream(channel, handler, &reader)
        let half = Int(RPCSettings.defaultInitialWindow / 2)
        try channel.writeFrames(
            Frame(type: .message, streamID: 1, payload: ByteBuffer(repeating: 1, count: half)),
            Frame(type: .message, streamID: 1, payload: ByteBuffer(string: "b")),
            Frames.trailers(1, .ok)
        )
        var received: [Int] = []
        for try await message in stream { received.append(message.readableBytes) }
        #expect(received == [half, 1])
        // Consuming half the window grants it back (the stream has ended: nothing to grant).
        handler.consumed(handle, bytes: half)
        channel.embeddedEventLoop.run()
        #expect(try reader.frames(channel).isEmpty, "no credit for a finished stream")
    }

    @Test func creditIsGrantedOnceHalfTheWindowIsConsumed() throws {
        var (channel, handler, reader) = try Self.connected()
        let (handle, _) = try Self.startStream(channel, handler, &reader)
        let half = Int(RPCSettings.defaultInitialWindow / 2)
        handler.consumed(handle, bytes: half - 1)
        channel.embeddedEventLoop.run()
        #expect(try reader.frames(channel).isEmpty)
        handler.consumed(handle, bytes: 1)
        channel.embeddedEventLoop.run()
        let window = try reader.frames(channel)
        #expect(window.map(\.type) == [.window])
        #expect(window.first.flatMap(Frames.increment(of:)) == UInt32(half))
    }

    @Test func closingSendsGoAwayAndFailsCallsInFlight() throws {
        var (channel, handler, reader) = try Self.connected()
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        handler.startCall(CallHandle(), headers: Envelope.CallHeaders(method: "/m"), request: ByteBuffer(), responder: .unary(promise))
        channel.embeddedEventLoop.run()
        _ = try reader.frames(channel)
        handler.close()
        let frames = try reader.frames(channel)
        #expect(frames.map(\.type) == [.goAway])
        #expect(try Envelope.GoAway(serializedBytes: frames[0].payload).code == ConnectionErrorCode.noError.rawValue)
        #expect(!channel.isActive)
        #expect(promise.futureResult.failure?.code == .unavailable)
    }
}


/// Keepalive on virtual time: an `EmbeddedEventLoop` whose clock the test moves.
@Suite("Keepalive on an embedded channel")
struct KeepaliveTests {
    static let keepalive = (interval: TimeAmount.seconds(60), timeout: TimeAmount.seconds(20))

    @Test func anIdleConnectionIsPingedThenClosedWithoutAnAck() throws {
        var (channel, reader) = try ServerConnectionHandlerTests.connected(keepalive: Self.keepalive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(try reader.frames(channel).isEmpty, "not yet idle for the interval")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        let ping = try reader.frames(channel)
        #expect(ping.map(\.type) == [.ping] && ping.first?.payload.readableBytes == 8)
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(19))
        #expect(channel.isActive, "the answer may still come")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive, "no answer within the timeout: closed")
    }

    @Test func anAnsweredPingKeepsTheConnection() throws {
        var (channel, reader) = try ServerConnectionHandlerTests.connected(keepalive: Self.keepalive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        let ping = try #require(try reader.frames(channel).first { $0.type == .ping })
        try channel.writeFrames(Frame(type: .ping, flags: .ack, streamID: 0, payload: ping.payload))
        channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        #expect(channel.isActive)
        // Idle again for a whole interval: pinged again.
        channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        #expect(try reader.frames(channel).contains { $0.type == .ping && !$0.flags.contains(.ack) })
        _ = try? channel.finish()
    }

    @Test func thePeersOwnPingsAreNotActivity() throws {
        var (channel, reader) = try ServerConnectionHandlerTests.connected(keepalive: Self.keepalive)
        var elapsed = TimeAmount.zero
        while channel.isActive, elapsed < .seconds(120) {
            try channel.writeFrames(Frame(type: .ping, streamID: 0, payload: ByteBuffer(repeating: 3, count: 8)))
            channel.embeddedEventLoop.advanceTime(by: .seconds(20))
            elapsed = elapsed + .seconds(20)
        }
        let frames = try reader.frames(channel)
        #expect(frames.contains { $0.type == .ping && $0.flags.contains(.ack) }, "its PINGs are answered")
        #expect(!channel.isActive && elapsed <= .seconds(80), "but it is idle: closed after \(elapsed)")
    }

    @Test func bytesThatCompleteNoFrameAreNotActivity() throws {
        var (channel, reader) = try ServerConnectionHandlerTests.connected(keepalive: Self.keepalive)
        var ping = ByteBuffer()
        ping.writeFrame(Frame(type: .ping, streamID: 0, payload: ByteBuffer(repeating: 1, count: 8)))
        // One byte every 10 s of a frame that takes longer than the interval to complete.
        var elapsed = TimeAmount.zero
        while channel.isActive, let byte = ping.readSlice(length: 1), elapsed < .seconds(120) {
            try channel.writeInbound(byte)
            channel.embeddedEventLoop.advanceTime(by: .seconds(10))
            elapsed = elapsed + .seconds(10)
        }
        _ = try reader.frames(channel)
        #expect(!channel.isActive, "idle means no complete frame: dropped after the interval and the timeout")
        #expect(elapsed <= .seconds(80), "dropped after \(elapsed)")
    }
}
