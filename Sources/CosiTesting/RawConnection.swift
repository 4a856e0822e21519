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
        private struct Waiter {
            var predicate: @Sendable (Frame) -> Bool
            var continuation: CheckedContinuation<Frame?, Never>
        }
        private struct State {
            var decoder = FrameDecoder(maxFrameSize: 64 << 20)
            var frames: [Frame] = []
            var closed = false
            var waiters: [Int: Waiter] = [:]
            var nextWaiter = 0
        }
        private let state = NIOLockedValueBox(State())
        let closedPromise: EventLoopPromise<Void>

        init(closedPromise: EventLoopPromise<Void>) { self.closedPromise = closedPromise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            let woken = state.withLockedValue { state -> [(CheckedContinuation<Frame?, Never>, Frame)] in
                state.decoder.append(bytes)
                var woken: [(CheckedContinuation<Frame?, Never>, Frame)] = []
                while let frame = try? state.decoder.nextFrame() {
                    state.frames.append(frame)
                    for (id, waiter) in state.waiters where waiter.predicate(frame) {
                        state.waiters[id] = nil
                        woken.append((waiter.continuation, frame))
                    }
                }
                return woken
            }
            for (continuation, frame) in woken { continuation.resume(returning: frame) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            let waiters = state.withLockedValue { state in
                state.closed = true
                defer { state.waiters = [:] }
                return state.waiters.values.map(\.continuation)
            }
            // No frame will come any more.
            for continuation in waiters { continuation.resume(returning: nil) }
            closedPromise.succeed()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }

        var frames: [Frame] { state.withLockedValue { $0.frames } }

        /// The first frame matching `predicate`, as soon as it arrives; nil once the connection
        /// has closed without one or after `timeout`.
        func first(where predicate: @escaping @Sendable (Frame) -> Bool, timeout: TimeAmount, on loop: any EventLoop) async -> Frame? {
            await withCheckedContinuation { continuation in
                let outcome = state.withLockedValue { state -> (id: Int?, found: Frame?) in
                    if let frame = state.frames.first(where: predicate) { return (nil, frame) }
                    if state.closed { return (nil, nil) }
                    let id = state.nextWaiter
                    state.nextWaiter += 1
                    state.waiters[id] = Waiter(predicate: predicate, continuation: continuation)
                    return (id, nil)
                }
                guard let id = outcome.id else { return continuation.resume(returning: outcome.found) }
                loop.scheduleTask(in: timeout) { [self] in
                    let waiter = state.withLockedValue { $0.waiters.removeValue(forKey: id) }
                    waiter?.continuation.resume(returning: nil)
                }
            }
        }
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

    /// Waits until a frame matching `predicate` arrives (woken by its arrival, not polling);
    /// nil when the connection closes without one or after `timeout`.
    public func waitForFrame(timeout: TimeAmount = .seconds(5), _ predicate: @escaping @Sendable (Frame) -> Bool) async throws -> Frame? {
        await collector.first(where: predicate, timeout: timeout, on: channel.eventLoop)
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
