import CCosiProto
import CProtobufC
import CosiProtobuf
import NIOConcurrencyHelpers
import NIOCore

/// Encodings of one change in its few delivery forms, computed at most once each.
public final class EncodingCache: @unchecked Sendable {
    // @unchecked Sendable: `slots` is guarded by `lock`.
    private let lock = NIOLock()
    private var slots: [ByteBuffer?]

    /// One form in a cache.
    public struct Slot: Sendable {
        public let cache: EncodingCache
        public let index: Int
    }

    public init(forms: Int) { slots = Array(repeating: nil, count: forms) }

    public func slot(_ index: Int) -> Slot { Slot(cache: self, index: index) }

    /// The encoding in slot `index`, made by `make` the first time.
    public func bytes(_ index: Int, _ make: () -> ByteBuffer) -> ByteBuffer {
        if let cached = lock.withLock({ slots[index] }) { return cached }
        let made = make()
        lock.withLock { slots[index] = made }
        return made
    }
}

/// Builds `WatchResponse` bytes from events, reusing their cached encodings (field 1, repeated
/// Event, is the response's only field).
public func encodeWatchResponse(_ events: [Event]) -> ByteBuffer {
    var buffer = ByteBuffer()
    for event in events { appendEventField(event.cachedSerializedBytes(), to: &buffer) }
    return buffer
}

/// Appends one encoded `Event` to `WatchResponse` bytes (field 1, length-delimited).
public func appendEventField(_ encoded: ByteBuffer, to buffer: inout ByteBuffer) {
    buffer.writeInteger(UInt8(0x0a))
    var length = UInt64(encoded.readableBytes)
    while length >= 0x80 {
        buffer.writeInteger(UInt8(truncatingIfNeeded: length) | 0x80)
        length >>= 7
    }
    buffer.writeInteger(UInt8(length))
    buffer.writeImmutableBuffer(encoded)
}
