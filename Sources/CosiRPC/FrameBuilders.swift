import CosiWire
import NIOCore

/// Builds the frames both ends send; payloads of envelope frames are protobuf-encoded.
enum Frames {
    static func settings(_ settings: RPCSettings) -> Frame {
        Frame(type: .settings, streamID: 0, payload: settings.envelope.serializedBytes())
    }

    static let settingsAck = Frame(type: .settings, flags: .ack, streamID: 0)

    static func headers(_ streamID: UInt32, _ headers: Envelope.CallHeaders) -> Frame {
        Frame(type: .headers, streamID: streamID, payload: headers.serializedBytes())
    }

    static func message(_ streamID: UInt32, _ payload: ByteBuffer, endStream: Bool) -> Frame {
        Frame(type: .message, flags: endStream ? .endStream : [], streamID: streamID, payload: payload)
    }

    static func trailers(_ streamID: UInt32, _ status: RPCStatus) -> Frame {
        Frame(type: .trailers, streamID: streamID, payload: status.envelope.serializedBytes())
    }

    static func cancel(_ streamID: UInt32) -> Frame {
        Frame(type: .cancel, streamID: streamID)
    }

    static func window(_ streamID: UInt32, _ increment: UInt32) -> Frame {
        var payload = ByteBuffer()
        payload.writeInteger(increment)
        return Frame(type: .window, streamID: streamID, payload: payload)
    }

    static func ping(_ payload: ByteBuffer, ack: Bool) -> Frame {
        Frame(type: .ping, flags: ack ? .ack : [], streamID: 0, payload: payload)
    }

    static func goAway(lastStreamID: UInt32, code: ConnectionErrorCode, reason: String) -> Frame {
        Frame(type: .goAway, streamID: 0, payload: Envelope.GoAway(lastStreamID: lastStreamID, code: code.rawValue, reason: reason).serializedBytes())
    }

    /// Reads a WINDOW payload: exactly 4 bytes, an increment of 1 to 2^31-1.
    static func windowIncrement(_ frame: Frame) throws(ConnectionError) -> UInt32 {
        guard frame.payload.readableBytes == 4, let increment = frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt32.self) else {
            throw ConnectionError(code: .protocolError, message: "WINDOW payload must be 4 bytes")
        }
        guard increment >= 1, increment <= UInt32(Int32.max) else {
            throw ConnectionError(code: .flowControlError, message: "WINDOW increment \(increment) is outside 1...2^31-1")
        }
        return increment
    }
}

/// Encodes frames into one buffer per flush, so a burst of frames costs one TLS record write.
struct FrameWriteBuffer {
    private(set) var buffer: ByteBuffer
    init(allocator: ByteBufferAllocator) { buffer = allocator.buffer(capacity: 0) }
    mutating func append(_ frame: Frame) { buffer.writeFrame(frame) }
    mutating func take(allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard buffer.readableBytes > 0 else { return nil }
        defer { buffer = allocator.buffer(capacity: 0) }
        return buffer
    }
}
