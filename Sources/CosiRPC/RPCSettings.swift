import CosiWire

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

/// A flow-control window: the MESSAGE payload bytes one side may still send.
///
/// The window may go negative (a message may be sent while the window is positive, whatever its
/// size); sending resumes once WINDOW increments bring it above zero.
struct FlowWindow: Hashable, Sendable {
    static let maximum = Int64(Int32.max)
    private(set) var value: Int64

    init(_ initial: UInt32) { value = Int64(initial) }

    var isOpen: Bool { value > 0 }

    mutating func consume(_ bytes: Int) { value -= Int64(bytes) }

    /// Applies a WINDOW increment; false when the increment is 0 or overflows the window.
    mutating func increment(_ bytes: UInt32) -> Bool {
        guard bytes > 0, value + Int64(bytes) <= Self.maximum else { return false }
        value += Int64(bytes)
        return true
    }

    /// Applies a SETTINGS change of the initial window (may go negative).
    mutating func adjust(by delta: Int64) { value += delta }
}

/// Decides when a receiver grants credit: it counts consumed bytes and returns an increment once
/// half the window has been consumed, so WINDOW frames stay few.
struct CreditGrant: Hashable, Sendable {
    let window: UInt32
    private var consumed: UInt32 = 0

    init(window: UInt32) { self.window = window }

    mutating func consume(_ bytes: Int) -> UInt32? {
        consumed &+= UInt32(clamping: bytes)
        guard consumed >= window / 2 else { return nil }
        defer { consumed = 0 }
        return consumed
    }
}

/// The peer's announced settings, and how each SETTINGS frame it sends moves our send windows.
/// Shared by the server state machine and the client handler.
struct PeerSettings: Sendable {
    /// What the peer announced (the defaults until its first SETTINGS).
    private(set) var current = RPCSettings.defaults
    /// Whether the peer's first SETTINGS has arrived.
    private(set) var received = false

    /// How a SETTINGS frame changes the sender's windows.
    struct Change {
        /// Added to the send window of every open stream (may be negative).
        var streamWindowDelta: Int64
        /// Added to the connection send window (non-zero only for the first SETTINGS).
        var connectionWindowDelta: Int64
        var isFirst: Bool
    }

    /// Applies a SETTINGS frame; nil for an ACK. Throws PROTOCOL_ERROR for a frame on a stream,
    /// a payload that does not decode, or a value out of range.
    mutating func apply(_ frame: Frame) throws(ConnectionError) -> Change? {
        guard frame.streamID == 0 else { throw ConnectionError(code: .protocolError, message: "SETTINGS on stream \(frame.streamID)") }
        if frame.flags.contains(.ack) { return nil }
        let envelope: Envelope.Settings
        do { envelope = try Envelope.Settings(serializedBytes: frame.payload) } catch {
            throw ConnectionError(code: .protocolError, message: "SETTINGS payload does not decode")
        }
        let settings = try RPCSettings(validating: envelope)
        let isFirst = !received
        // initial_connection_window counts only in the first SETTINGS.
        let change = Change(
            streamWindowDelta: Int64(settings.initialWindow) - Int64(current.initialWindow),
            connectionWindowDelta: isFirst ? Int64(settings.initialConnectionWindow) - Int64(RPCSettings.defaultInitialConnectionWindow) : 0,
            isFirst: isFirst
        )
        current.maxFrameSize = settings.maxFrameSize
        current.maxConcurrentStreams = settings.maxConcurrentStreams
        current.initialWindow = settings.initialWindow
        if isFirst { current.initialConnectionWindow = settings.initialConnectionWindow }
        received = true
        return change
    }
}
