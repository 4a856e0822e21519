import CosiWire
import NIOCore

/// The frames a connection handler writes, coalesced: frames appended while the event loop works
/// through a batch of tasks leave in one buffer, one TLS record and one system call. Both
/// connection handlers use it; it lives on their event loop.
final class ConnectionOutput {
    /// The output buffer's capacity kept between flushes, at most.
    static let keptCapacity = 64 << 10
    private static let empty = ByteBuffer()
    private var buffer = ByteBuffer()
    private var flushScheduled = false
    private var context: ChannelHandlerContext?
    /// Runs after every flush (the server hands more queued messages over from there).
    var afterFlush: (() -> Void)?

    /// Starts writing through `context` (the handler was added).
    func attach(_ context: ChannelHandlerContext) { self.context = context }
    /// Stops writing (the handler was removed).
    func detach() {
        context = nil
        afterFlush = nil
    }

    func append(_ frame: Frame) { buffer.writeFrame(frame) }

    /// Bytes appended and not yet written.
    var bufferedBytes: Int { buffer.readableBytes }

    /// Writes and flushes what was appended, now.
    func flush() {
        guard let context else { return }
        if buffer.readableBytes > 0 {
            // Taken out before writing: the write may re-enter (a writability change flushes),
            // and must not find these bytes again.
            var written = buffer
            buffer = Self.empty
            context.writeAndFlush(NIOAny(written), promise: nil)
            // The TLS handler has encrypted the bytes: the buffer is ours again, and refilling
            // it costs no allocation (a fresh one grew by doubling, copying, on every flush).
            // Past `keptCapacity` a new one starts there, so that a connection that once sent
            // a burst does not keep its peak.
            if buffer.readableBytes == 0 {
                if written.capacity <= Self.keptCapacity {
                    written.clear()
                    buffer = written
                } else {
                    buffer = context.channel.allocator.buffer(capacity: Self.keptCapacity)
                }
            }
        }
        afterFlush?()
    }

    /// Flushes once the event loop has run the tasks already queued.
    func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flush()
        }
    }
}
