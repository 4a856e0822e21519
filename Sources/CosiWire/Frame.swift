import NIOCore

/// The type byte of a COSI-RPC/1 frame.
///
/// Unknown values are representable (and ignored by receivers), so the protocol has room to grow.
public struct FrameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let settings = FrameType(rawValue: 0x1)
    public static let headers = FrameType(rawValue: 0x2)
    public static let message = FrameType(rawValue: 0x3)
    public static let trailers = FrameType(rawValue: 0x4)
    public static let cancel = FrameType(rawValue: 0x5)
    public static let window = FrameType(rawValue: 0x6)
    public static let ping = FrameType(rawValue: 0x7)
    public static let goAway = FrameType(rawValue: 0x8)

    /// Whether this build knows the type; receivers ignore frames of unknown types.
    public var isKnown: Bool { (1...8).contains(rawValue) }

    public var description: String {
        switch self {
        case .settings: "SETTINGS"
        case .headers: "HEADERS"
        case .message: "MESSAGE"
        case .trailers: "TRAILERS"
        case .cancel: "CANCEL"
        case .window: "WINDOW"
        case .ping: "PING"
        case .goAway: "GOAWAY"
        default: "UNKNOWN(0x\(String(rawValue, radix: 16)))"
        }
    }
}

/// Per-type frame flags. Unknown flags are ignored.
public struct FrameFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// SETTINGS and PING: this frame acknowledges the peer's.
    public static let ack = FrameFlags(rawValue: 0x1)
    /// MESSAGE: the sender sends nothing more on this stream.
    public static let endStream = FrameFlags(rawValue: 0x1)
}

/// The 10-byte header that precedes every frame's payload.
public struct FrameHeader: Hashable, Sendable {
    /// The size of an encoded header in bytes.
    public static let size = 10

    public var length: UInt32
    public var type: FrameType
    public var flags: FrameFlags
    public var streamID: UInt32

    public init(length: UInt32, type: FrameType, flags: FrameFlags = [], streamID: UInt32) {
        self.length = length
        self.type = type
        self.flags = flags
        self.streamID = streamID
    }
}

/// One COSI-RPC/1 frame: a header and its payload.
public struct Frame: Hashable, Sendable {
    public var type: FrameType
    public var flags: FrameFlags
    public var streamID: UInt32
    public var payload: ByteBuffer

    public init(type: FrameType, flags: FrameFlags = [], streamID: UInt32, payload: ByteBuffer = ByteBuffer()) {
        self.type = type
        self.flags = flags
        self.streamID = streamID
        self.payload = payload
    }

    public var header: FrameHeader {
        FrameHeader(length: UInt32(payload.readableBytes), type: type, flags: flags, streamID: streamID)
    }
}

extension ByteBuffer {
    /// Appends a frame header and payload, returning the number of bytes written.
    @discardableResult
    public mutating func writeFrame(_ frame: Frame) -> Int {
        writeFrameHeader(frame.header) + writeImmutableBuffer(frame.payload)
    }

    /// Appends a frame header only; the caller appends `header.length` payload bytes after it.
    @discardableResult
    public mutating func writeFrameHeader(_ header: FrameHeader) -> Int {
        writeInteger(header.length)
        writeInteger(header.type.rawValue)
        writeInteger(header.flags.rawValue)
        writeInteger(header.streamID)
        return FrameHeader.size
    }
}
