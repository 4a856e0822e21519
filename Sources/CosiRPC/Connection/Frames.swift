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

    /// Checks a PING: on stream 0, with an 8-byte payload (PROTOCOL_ERROR otherwise).
    static func validatePing(_ frame: Frame) throws(ConnectionError) {
        guard frame.streamID == 0 else { throw ConnectionError(code: .protocolError, message: "PING on stream \(frame.streamID)") }
        guard frame.payload.readableBytes == 8 else { throw ConnectionError(code: .protocolError, message: "PING payload must be 8 bytes") }
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

extension FrameDecoder {
    /// The next complete frame, nil when more bytes are needed, or the connection error a
    /// decoding failure is (FRAME_SIZE_ERROR for an oversized frame, PROTOCOL_ERROR otherwise).
    mutating func nextFrameOrError() -> Result<Frame?, ConnectionError> {
        do {
            return .success(try nextFrame())
        } catch {
            return .failure(ConnectionError(code: error.code == .frameTooLarge ? .frameSizeError : .protocolError, message: error.message))
        }
    }
}
