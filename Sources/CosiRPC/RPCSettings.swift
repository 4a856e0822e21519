/// The limits one side of a connection announces in its SETTINGS frame.
public struct RPCSettings: Hashable, Sendable {
    /// The largest frame payload this side accepts.
    public var maxFrameSize: UInt32
    /// How many calls may be open at once on the connection.
    public var maxConcurrentStreams: UInt32
    /// Per-stream receive window in bytes.
    public var initialWindow: UInt32
    /// Connection-wide receive window in bytes.
    public var initialConnectionWindow: UInt32

    public static let defaultMaxFrameSize: UInt32 = 4 << 20
    public static let defaultMaxConcurrentStreams: UInt32 = 1024
    public static let defaultInitialWindow: UInt32 = 1 << 20
    public static let defaultInitialConnectionWindow: UInt32 = 16 << 20

    public static let frameSizeRange: ClosedRange<UInt32> = (16 << 10)...(64 << 20)
    public static let streamsRange: ClosedRange<UInt32> = 1...UInt32(Int32.max)
    public static let windowRange: ClosedRange<UInt32> = (16 << 10)...UInt32(Int32.max)

    /// The protocol defaults, assumed for a peer until its SETTINGS arrive.
    public static let defaults = RPCSettings(
        maxFrameSize: defaultMaxFrameSize, maxConcurrentStreams: defaultMaxConcurrentStreams,
        initialWindow: defaultInitialWindow, initialConnectionWindow: defaultInitialConnectionWindow
    )

    public init(maxFrameSize: UInt32, maxConcurrentStreams: UInt32, initialWindow: UInt32, initialConnectionWindow: UInt32) {
        self.maxFrameSize = maxFrameSize
        self.maxConcurrentStreams = maxConcurrentStreams
        self.initialWindow = initialWindow
        self.initialConnectionWindow = initialConnectionWindow
    }

    /// Reads a peer's SETTINGS payload: zero fields take the default; a value outside its range
    /// is a PROTOCOL_ERROR.
    init(validating envelope: Envelope.Settings) throws(ConnectionError) {
        func pick(_ value: UInt32, _ fallback: UInt32, _ range: ClosedRange<UInt32>, _ name: String) throws(ConnectionError) -> UInt32 {
            if value == 0 { return fallback }
            guard range.contains(value) else {
                throw ConnectionError(code: .protocolError, message: "SETTINGS \(name)=\(value) is outside \(range.lowerBound)...\(range.upperBound)")
            }
            return value
        }
        self.init(
            maxFrameSize: try pick(envelope.maxFrameSize, Self.defaultMaxFrameSize, Self.frameSizeRange, "max_frame_size"),
            maxConcurrentStreams: try pick(envelope.maxConcurrentStreams, Self.defaultMaxConcurrentStreams, Self.streamsRange, "max_concurrent_streams"),
            initialWindow: try pick(envelope.initialWindow, Self.defaultInitialWindow, Self.windowRange, "initial_window"),
            initialConnectionWindow: try pick(envelope.initialConnectionWindow, Self.defaultInitialConnectionWindow, Self.windowRange, "initial_connection_window")
        )
    }

    var envelope: Envelope.Settings {
        Envelope.Settings(
            maxFrameSize: maxFrameSize, maxConcurrentStreams: maxConcurrentStreams,
            initialWindow: initialWindow, initialConnectionWindow: initialConnectionWindow
        )
    }
}
