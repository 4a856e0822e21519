import CosiWire
import DequeModule
import NIOCore

/// A flow-control window: the MESSAGE payload bytes one side may still send.
///
/// The window may go negative (a message may be sent while the window is positive, whatever its
/// size); sending resumes once WINDOW increments bring it above zero.
struct FlowWindow: Hashable, Sendable {
    static let maximum = Int64(Int32.max)
    private(set) var value: Int64

    init(_ initial: UInt32) { value = Int64(initial) }

    /// A window stored less `shift` (see ``FlowControl``'s send windows).
    init(_ initial: UInt32, shiftedBy shift: Int64) { value = Int64(initial) + shift }

    var isOpen: Bool { value > 0 }

    /// Whether the window, stored less `shift`, is open.
    func isOpen(shift: Int64) -> Bool { value + shift > 0 }

    mutating func consume(_ bytes: Int) { value -= Int64(bytes) }

    /// Applies a WINDOW increment; false when the increment is 0 or overflows the window.
    mutating func increment(_ bytes: UInt32) -> Bool {
        guard bytes > 0, value + Int64(bytes) <= Self.maximum else { return false }
        value += Int64(bytes)
        return true
    }

    /// Applies a change of the initial window (may go negative).
    mutating func adjust(by delta: Int64) { value += delta }

    /// Applies a WINDOW increment to a window stored less `shift`.
    mutating func increment(_ bytes: UInt32, shift: Int64) -> Bool {
        guard bytes > 0, value + shift + Int64(bytes) <= Self.maximum else { return false }
        value += Int64(bytes)
        return true
    }
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
/// Part of ``FlowControl``, which both ends share.
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

/// What both ends of a COSI-RPC/1 connection do alike, as a plain struct: the peer's SETTINGS,
/// the send side (per-stream and connection send windows, each stream's queue of MESSAGE
/// payloads, the streams waiting for connection credit, in arrival order) and the receive side
/// (windows, and credit granted back once half a window is consumed).
///
/// It does no I/O and knows nothing of calls: the server and client state machines keep their
/// own per-stream state (requests, responses, trailers) as each stream's `State`, stored here
/// with the stream's windows so that a stream costs one dictionary entry, and use this for bytes
/// and credit. Every method appends what must happen to `out`, in order. `Completion` is the
/// caller's token for a queued message; it comes back in ``Output/written(_:)`` once the message
/// has been sent.
struct FlowControl<Completion, State> {
    /// What the caller must do, in order.
    enum Output {
        /// Write this frame.
        case frame(Frame)
        /// This queued message has been written.
        case written(Completion)
        /// This stream's queue is empty (after a flush sent its last message, or was asked to
        /// flush an empty queue).
        case drained(UInt32)
    }

    private struct Queued {
        var payload: ByteBuffer
        var endStream: Bool
        var completion: Completion?
    }

    private struct Stream {
        var state: State
        /// The stream's send window less ``FlowControl/sendWindowShift`` (so that a SETTINGS
        /// change of the initial window moves every stream's window at once, without a walk).
        var sendWindow: FlowWindow
        var receiveWindow: FlowWindow
        var receiveCredit: CreditGrant
        var queue: Deque<Queued> = []
        var waitsForConnection = false
    }

    /// What this side announced in its SETTINGS.
    let local: RPCSettings
    private var peer = PeerSettings()
    private var streams: [UInt32: Stream] = [:]
    /// The sum of the changes of the peer's initial window since the connection began: added to
    /// every stream's stored send window to get the real one.
    private var sendWindowShift: Int64 = 0
    private var connectionSendWindow = FlowWindow(RPCSettings.defaultInitialConnectionWindow)
    private var connectionReceiveWindow: FlowWindow
    private var connectionCredit: CreditGrant
    /// Streams whose next message waits for connection credit (or output allowance), in the
    /// order they started waiting.
    private var waitingForConnection: Deque<UInt32> = []
    /// MESSAGE payload bytes the caller still lets this side hand to the connection (nil: no
    /// limit). The server sets it from its socket's progress, so that what it queues for a peer
    /// that does not read stays bounded, whatever windows the peer grants.
    private var outputAllowance: Int64?

    init(local: RPCSettings) {
        self.local = local
        self.connectionReceiveWindow = FlowWindow(local.initialConnectionWindow)
        self.connectionCredit = CreditGrant(window: local.initialConnectionWindow)
    }

    /// What the peer announced (the protocol defaults until its first SETTINGS).
    var remote: RPCSettings { peer.current }

    /// Whether the peer's first SETTINGS has arrived.
    var hasReceivedSettings: Bool { peer.received }

    /// Whether messages may go: the connection window and the output allowance are open.
    private var connectionIsOpen: Bool { connectionSendWindow.isOpen && (outputAllowance ?? 1) > 0 }

    /// Whether some stream's message waits for connection credit or output allowance.
    var hasWaitingStreams: Bool { !waitingForConnection.isEmpty }

    /// Sets the output allowance (nil: no limit) and sends what it lets go.
    mutating func allowOutput(_ bytes: Int?, into out: inout [Output]) {
        outputAllowance = bytes.map(Int64.init)
        if connectionIsOpen { flushWaitingForConnection(into: &out) }
    }

    // MARK: Streams

    /// Starts tracking a stream, with windows from both sides' current settings.
    mutating func open(_ id: UInt32, _ state: State) {
        streams[id] = Stream(
            state: state,
            sendWindow: FlowWindow(remote.initialWindow, shiftedBy: -sendWindowShift),
            receiveWindow: FlowWindow(local.initialWindow),
            receiveCredit: CreditGrant(window: local.initialWindow)
        )
    }

    /// Stops tracking a stream; returns its state and the completions of its messages that were
    /// never sent, or nil when it is not tracked.
    mutating func close(_ id: UInt32) -> (state: State, unsent: [Completion])? {
        guard let stream = streams.removeValue(forKey: id) else { return nil }
        // A stale entry in `waitingForConnection` is skipped when it comes up.
        return (stream.state, stream.queue.compactMap(\.completion))
    }

    /// Stops tracking every stream; returns their ids and states, in id order, each with the
    /// completions of its messages never sent.
    mutating func closeAll() -> [(id: UInt32, state: State, unsent: [Completion])] {
        let closed = streams.keys.sorted().map { id in
            let stream = streams[id]!
            return (id, stream.state, stream.queue.compactMap(\.completion))
        }
        streams.removeAll()
        waitingForConnection.removeAll()
        return closed
    }

    /// The number of streams tracked.
    var count: Int { streams.count }

    func isOpen(_ id: UInt32) -> Bool { streams[id] != nil }

    /// The ids of the streams tracked.
    var ids: Dictionary<UInt32, some Any>.Keys { streams.keys }

    /// Reads or changes a stream's state in place; nil when the stream is not tracked.
    @inline(__always)
    mutating func withState<R, E: Error>(_ id: UInt32, _ body: (inout State) throws(E) -> R) throws(E) -> R? {
        guard let index = streams.index(forKey: id) else { return nil }
        return try body(&streams.values[index].state)
    }

    /// Whether the stream's queue is empty (true for a stream that is gone).
    func isDrained(_ id: UInt32) -> Bool {
        streams[id]?.queue.isEmpty ?? true
    }

    // MARK: Sending

    /// Queues a MESSAGE payload on an open stream and sends what the windows allow.
    mutating func send(_ payload: ByteBuffer, endStream: Bool = false, completion: Completion?, on id: UInt32, into out: inout [Output]) {
        guard let index = streams.index(forKey: id) else { return }
        streams.values[index].queue.append(Queued(payload: payload, endStream: endStream, completion: completion))
        flush(at: index, id, into: &out)
    }

    /// Sends a stream's queued messages while both windows are open. A message may be sent
    /// whenever the windows are positive, whatever its size (they may go negative).
    mutating func flush(_ id: UInt32, into out: inout [Output]) {
        guard let index = streams.index(forKey: id) else { return }
        flush(at: index, id, into: &out)
    }

    private mutating func flush(at index: Dictionary<UInt32, Stream>.Index, _ id: UInt32, into out: inout [Output]) {
        // Every access below is in place: the stream is never copied out of the dictionary.
        while let next = streams.values[index].queue.first {
            guard streams.values[index].sendWindow.isOpen(shift: sendWindowShift) else { break }
            guard connectionIsOpen else {
                if !streams.values[index].waitsForConnection {
                    streams.values[index].waitsForConnection = true
                    waitingForConnection.append(id)
                }
                break
            }
            streams.values[index].queue.removeFirst()
            let length = next.payload.readableBytes
            streams.values[index].sendWindow.consume(length)
            connectionSendWindow.consume(length)
            if let allowance = outputAllowance { outputAllowance = allowance - Int64(length) }
            out.append(.frame(Frame(type: .message, flags: next.endStream ? .endStream : [], streamID: id, payload: next.payload)))
            if let completion = next.completion { out.append(.written(completion)) }
        }
        if streams.values[index].queue.isEmpty { out.append(.drained(id)) }
    }

    /// Flushes every stream, in stream order.
    private mutating func flushAll(into out: inout [Output]) {
        for id in streams.keys.sorted() where !streams[id]!.queue.isEmpty { flush(id, into: &out) }
    }

    /// Connection credit arrived: the streams waiting for it go, in the order they waited.
    private mutating func flushWaitingForConnection(into out: inout [Output]) {
        var waiting = waitingForConnection
        waitingForConnection = []
        while connectionIsOpen, let id = waiting.popFirst() {
            guard let index = streams.index(forKey: id) else { continue }
            streams.values[index].waitsForConnection = false
            flush(at: index, id, into: &out)
        }
        // Those not reached wait on, ahead of any that started waiting meanwhile.
        waitingForConnection = waiting + waitingForConnection
    }

    // MARK: Receiving

    /// Applies the peer's SETTINGS: appends the ACK, then what the new windows let go. Returns
    /// whether this was the peer's first SETTINGS; nil for an ACK of ours.
    mutating func receiveSettings(_ frame: Frame, into out: inout [Output]) throws(ConnectionError) -> Bool? {
        guard let change = try peer.apply(frame) else { return nil }
        connectionSendWindow.adjust(by: change.connectionWindowDelta)
        sendWindowShift += change.streamWindowDelta
        out.append(.frame(Frames.settingsAck))
        // Only larger windows can let queued messages go.
        if change.streamWindowDelta > 0 || change.connectionWindowDelta > 0 { flushAll(into: &out) }
        return change.isFirst
    }

    /// Applies a WINDOW frame: on stream 0 to the connection, otherwise to the stream (which the
    /// caller has checked is open). Throws FLOW_CONTROL_ERROR for a window above 2^31-1.
    mutating func receiveWindow(_ frame: Frame, into out: inout [Output]) throws(ConnectionError) {
        let increment = try Frames.windowIncrement(frame)
        let id = frame.streamID
        if id == 0 {
            guard connectionSendWindow.increment(increment) else {
                throw ConnectionError(code: .flowControlError, message: "WINDOW takes the connection window above 2^31-1")
            }
            flushWaitingForConnection(into: &out)
            return
        }
        guard let index = streams.index(forKey: id) else { return }
        guard streams.values[index].sendWindow.increment(increment, shift: sendWindowShift) else {
            throw ConnectionError(code: .flowControlError, message: "WINDOW takes the window of stream \(id) above 2^31-1")
        }
        flush(at: index, id, into: &out)
    }

    /// Charges a MESSAGE's payload to the connection window (whatever its stream) and gives the
    /// credit back at once: the client buffers responses per stream, bounded by the stream
    /// window, so a stream whose reader stalls never blocks the others.
    mutating func receiveOnConnection(_ length: Int, into out: inout [Output]) throws(ConnectionError) {
        try chargeConnection(length)
        releaseConnection(length, into: &out)
    }

    /// Charges a MESSAGE's payload to the connection window, without giving the credit back:
    /// the server keeps it while the bytes are buffered (an incomplete request), so that the
    /// connection window bounds what a client can make it hold.
    mutating func chargeConnection(_ length: Int) throws(ConnectionError) {
        guard connectionReceiveWindow.isOpen else {
            throw ConnectionError(code: .flowControlError, message: "MESSAGE sent while the connection window is exhausted")
        }
        connectionReceiveWindow.consume(length)
    }

    /// Gives back connection credit for bytes charged earlier (once half the window is due).
    mutating func releaseConnection(_ length: Int, into out: inout [Output]) {
        guard length > 0, let grant = connectionCredit.consume(length) else { return }
        _ = connectionReceiveWindow.increment(grant)
        out.append(.frame(Frames.window(0, grant)))
    }

    /// Charges a MESSAGE's payload to its (open) stream's window.
    mutating func receiveOnStream(_ length: Int, on id: UInt32) throws(ConnectionError) {
        guard let index = streams.index(forKey: id) else { return }
        guard streams.values[index].receiveWindow.isOpen else {
            throw ConnectionError(code: .flowControlError, message: "MESSAGE sent while the window of stream \(id) is exhausted")
        }
        streams.values[index].receiveWindow.consume(length)
    }

    /// The application consumed `bytes` of a stream's messages: grants stream credit once half
    /// the window is consumed.
    mutating func consumed(_ bytes: Int, on id: UInt32, into out: inout [Output]) {
        guard let index = streams.index(forKey: id), let grant = streams.values[index].receiveCredit.consume(bytes) else { return }
        _ = streams.values[index].receiveWindow.increment(grant)
        out.append(.frame(Frames.window(id, grant)))
    }
}
