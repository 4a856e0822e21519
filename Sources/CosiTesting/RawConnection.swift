import CosiRPC
import CosiTLS
import CosiWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TLS connection that sends raw bytes and records the frames it receives: for tests that
/// break the protocol on purpose, or behave as an attacker would.
public final class RawConnection: Sendable {
    private let channel: any Channel
    private let collector: Collector

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        private let state = NIOLockedValueBox((decoder: FrameDecoder(maxFrameSize: 64 << 20), frames: [Frame](), closed: false))
        let closedPromise: EventLoopPromise<Void>

        init(closedPromise: EventLoopPromise<Void>) { self.closedPromise = closedPromise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            state.withLockedValue { state in
                state.decoder.append(bytes)
                while let frame = try? state.decoder.nextFrame() { state.frames.append(frame) }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            state.withLockedValue { $0.closed = true }
            closedPromise.succeed()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }

        var frames: [Frame] { state.withLockedValue { $0.frames } }
    }

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    public static func connect(port: Int, tls: TLSContext) async throws -> RawConnection {
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        let collector = Collector(closedPromise: loop.makePromise())
        let channel = try await ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TLSHandler(context: tls, serverName: "127.0.0.1"))
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, collector: collector)
    }

    public func send(_ bytes: ByteBuffer) async throws {
        try await channel.writeAndFlush(bytes)
    }

    /// Writes without waiting for the bytes to leave (a peer the server does not read from
    /// would wait forever).
    public func sendWithoutWaiting(_ bytes: ByteBuffer) {
        channel.writeAndFlush(bytes, promise: nil)
    }

    /// Stops or resumes reading from the socket (a peer that does not read what it is sent).
    public func setReading(_ reading: Bool) async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: reading).get()
    }

    /// Whether the connection is still open.
    public var isOpen: Bool { channel.isActive }

    public func send(_ frames: [Frame]) async throws {
        var buffer = ByteBuffer()
        for frame in frames { buffer.writeFrame(frame) }
        try await send(buffer)
    }

    /// Waits until the server closes the connection (or the timeout passes) and returns what it sent.
    public func framesUntilClosed(timeout: TimeAmount = .seconds(5)) async throws -> (frames: [Frame], closed: Bool) {
        let closed = collector.closedPromise
        let timer = channel.eventLoop.scheduleTask(in: timeout) { closed.succeed() }
        try? await closed.futureResult.get()
        timer.cancel()
        return (collector.frames, !channel.isActive)
    }

    /// Waits until a frame matching `predicate` arrives.
    public func waitForFrame(timeout: Duration = .seconds(5), _ predicate: (Frame) -> Bool) async throws -> Frame? {
        let clock = ContinuousClock()
        let end = clock.now + timeout
        while clock.now < end {
            if let frame = collector.frames.first(where: predicate) { return frame }
            try await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    public var frames: [Frame] { collector.frames }

    public func close() async { try? await channel.close() }
}

extension Frame {
    public static func settings(_ settings: Envelope.Settings = Envelope.Settings()) -> Frame {
        Frame(type: .settings, streamID: 0, payload: settings.serializedBytes())
    }

    public var goAway: Envelope.GoAway? {
        type == .goAway ? try? Envelope.GoAway(serializedBytes: payload) : nil
    }

    public var status: Envelope.Status? {
        type == .trailers ? try? Envelope.Status(serializedBytes: payload) : nil
    }
}
