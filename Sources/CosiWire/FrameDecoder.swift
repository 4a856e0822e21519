import NIOCore

/// A connection-level wire error found while decoding frames.
public struct FrameDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable {
        fileprivate enum Value { case frameTooLarge, notSettingsFirst }
        fileprivate var value: Value
        /// A header announced a payload over `max_frame_size` (a FRAME_SIZE_ERROR).
        public static let frameTooLarge = Code(value: .frameTooLarge)
        /// The connection's first frame was not SETTINGS without ACK (a PROTOCOL_ERROR).
        public static let notSettingsFirst = Code(value: .notSettingsFirst)
    }

    public var code: Code
    public var message: String

    public var description: String { message }
}

/// Splits a byte stream into COSI-RPC/1 frames.
///
/// A plain struct with no I/O: feed it bytes with ``append(_:)`` and pull frames with ``nextFrame()``.
/// The length limit is enforced from the header alone, before any payload is buffered, and the
/// first frame of a connection is checked to be SETTINGS by its type byte before its length is
/// trusted (so `GET / HTTP/1.1` is a protocol error, not a huge frame). Frames of unknown type are
/// returned like the others (their type's ``FrameType/isKnown`` is false): the receiver ignores
/// them, and may count them.
///
/// Memory: bytes of returned frames are given up as soon as the buffer holds at most a partial
/// frame, so a peer whose frames straddle reads never makes the buffer grow beyond one frame
/// (plus the bytes of the read that completed it).
public struct FrameDecoder: Sendable {
    /// The largest payload this receiver accepts (its advertised `max_frame_size`).
    public var maxFrameSize: UInt32
    private var buffer = ByteBuffer()
    private var expectingFirstFrame: Bool

    /// - Parameters:
    ///   - maxFrameSize: the largest payload accepted.
    ///   - requireSettingsFirst: check that the first frame is SETTINGS without ACK.
    public init(maxFrameSize: UInt32, requireSettingsFirst: Bool = true) {
        self.maxFrameSize = maxFrameSize
        self.expectingFirstFrame = requireSettingsFirst
    }

    /// Adds received bytes.
    public mutating func append(_ bytes: ByteBuffer) {
        if buffer.readableBytes == 0 {
            buffer = bytes
        } else {
            var bytes = bytes
            buffer.writeBuffer(&bytes)
        }
    }

    /// Bytes received but not yet returned as frames.
    public var bufferedBytes: Int { buffer.readableBytes }

    /// Bytes the buffer holds, returned or not (for tests of its bound).
    public var retainedBytes: Int { buffer.writerIndex }

    /// Returns the next complete frame, `nil` when more bytes are needed, or throws a connection
    /// error.
    public mutating func nextFrame() throws(FrameDecodingError) -> Frame? {
        do {
            guard buffer.readableBytes >= FrameHeader.size else {
                if expectingFirstFrame, buffer.readableBytes >= 6 {
                    try checkFirstFrameType()
                }
                compact()
                return nil
            }
            let start = buffer.readerIndex
            let length = buffer.getInteger(at: start, as: UInt32.self)!
            let type = FrameType(rawValue: buffer.getInteger(at: start + 4, as: UInt8.self)!)
            let flags = FrameFlags(rawValue: buffer.getInteger(at: start + 5, as: UInt8.self)!)
            let streamID = buffer.getInteger(at: start + 6, as: UInt32.self)!

            if expectingFirstFrame {
                try checkFirstFrameType()
                expectingFirstFrame = false
            }
            guard length <= maxFrameSize else {
                throw FrameDecodingError(
                    code: .frameTooLarge,
                    message: "\(type) frame of \(length) bytes exceeds max_frame_size \(maxFrameSize)"
                )
            }
            let total = FrameHeader.size + Int(length)
            guard buffer.readableBytes >= total else {
                compact()
                return nil
            }
            buffer.moveReaderIndex(forwardBy: FrameHeader.size)
            let payload = buffer.readSlice(length: Int(length))!
            return Frame(type: type, flags: flags, streamID: streamID, payload: payload)
        }
    }

    /// Gives up the bytes already returned, once no more complete frame is buffered: the storage
    /// goes when nothing is left, or the partial frame moves to the front (into new storage
    /// when returned payloads still share the old one) once the consumed part is large.
    private mutating func compact() {
        if buffer.readableBytes == 0 {
            if buffer.writerIndex > 0 { buffer = ByteBuffer() }
        } else if buffer.readerIndex >= 16 << 10 || buffer.readerIndex >= buffer.readableBytes {
            buffer.discardReadBytes()
        }
    }

    private func checkFirstFrameType() throws(FrameDecodingError) {
        let start = buffer.readerIndex
        let type = FrameType(rawValue: buffer.getInteger(at: start + 4, as: UInt8.self)!)
        let flags = FrameFlags(rawValue: buffer.getInteger(at: start + 5, as: UInt8.self)!)
        guard type == .settings, !flags.contains(.ack) else {
            throw FrameDecodingError(
                code: .notSettingsFirst,
                message: "the first frame must be SETTINGS, got \(type)\(flags.contains(.ack) ? "|ACK" : "")"
            )
        }
    }
}
