import CosiWire
import NIOCore
import NIOEmbedded
import Testing

@testable import CosiRPC

/// ``ConnectionOutput`` keeps its buffer between flushes; a flush that re-enters while the
/// first one writes (a writability change flushes, as the server handler does) must not find
/// the bytes being written and send them twice.
@Suite("Connection output")
struct ConnectionOutputTests {
    /// Owns the output under test.
    final class Holder: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        let output = ConnectionOutput()
        func handlerAdded(context: ChannelHandlerContext) { output.attach(context) }
    }

    /// Runs `onWrite` the first time a write passes, as a socket's writability change would.
    final class Reentering: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var onWrite: (() -> Void)?
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            let run = onWrite
            onWrite = nil
            context.write(data, promise: promise)
            run?()
        }
    }

    @Test func aReentrantFlushSendsNothingTwice() throws {
        let holder = Holder()
        let reentering = Reentering()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(reentering)
        try channel.pipeline.syncOperations.addHandler(holder)
        reentering.onWrite = { holder.output.flush() }

        for id in [1, 3, 5] as [UInt32] { holder.output.append(Frame(type: .message, streamID: id, payload: ByteBuffer(string: "m\(id)"))) }
        holder.output.flush()
        // And the buffer, reused, carries the next frames once too.
        holder.output.append(Frame(type: .message, streamID: 7, payload: ByteBuffer(string: "m7")))
        holder.output.flush()

        var decoder = FrameDecoder(maxFrameSize: 1 << 20, requireSettingsFirst: false)
        while let bytes = try channel.readOutbound(as: ByteBuffer.self) { decoder.append(bytes) }
        var ids: [UInt32] = []
        while let frame = try decoder.nextFrame() { ids.append(frame.streamID) }
        #expect(ids == [1, 3, 5, 7])
    }
}
