import CosiWire
import DequeModule
import NIOCore

/// The server side of one COSI-RPC/1 connection, as a plain state machine.
///
/// It owns stream bookkeeping, flow-control windows, the ping-flood guard and shutdown state.
/// It does no I/O: every input returns the actions the handler must carry out, in order.
/// `Completion` is an opaque token the handler attaches to outbound messages and gets back when
/// the message leaves the queue (the handler uses promises; tests use integers).
struct ServerConnectionStateMachine<Completion> {
    enum Action {
        /// Write this frame to the peer.
        case send(Frame)
        /// A request is complete: run the method's handler.
        case startCall(streamID: UInt32, headers: Envelope.CallHeaders, request: ByteBuffer)
        /// Stop the handler of this call (cancelled, expired or aborted); send nothing more for it.
        case cancelCall(streamID: UInt32)
        /// An outbound message was handed to the connection.
        case completeWrite(Completion)
        /// An outbound message will never be sent.
        case failWrite(Completion, RPCError)
        /// A PING we sent was acknowledged.
        case pingAcknowledged
        /// Close the connection (after the frames already returned).
        case close
    }

    private enum Outbound {
        case message(ByteBuffer, Completion?)
        case trailers(RPCStatus)
    }

    private struct Stream {
        var headers: Envelope.CallHeaders
        var sendWindow: FlowWindow
        var receiveWindow: FlowWindow
        var request: ByteBuffer?
        var extraMessages = false
        var requestComplete = false
        var pending: Deque<Outbound> = []
    }

    private enum Phase {
        case open
        /// GOAWAY(NO_ERROR) sent: no new streams, close once the last one ends.
        case draining
        case closed
    }

    let localSettings: RPCSettings
    private var peer = PeerSettings()
    var remoteSettings: RPCSettings { peer.current }
    private var phase = Phase.open
    private var streams: [UInt32: Stream] = [:]
    private var highestStreamID: UInt32 = 0
    private var connectionSendWindow = FlowWindow(RPCSettings.defaultInitialConnectionWindow)
    private var connectionReceiveWindow: FlowWindow
    private var connectionCredit: CreditGrant
    /// Streams with messages waiting only for connection-level credit, in arrival order.
    private var blockedOnConnection: [UInt32] = []
    /// Times of PINGs received since the last call, for the flood guard.
    private var recentPings: Deque<NIODeadline> = []
    static var pingFloodLimit: Int { 10 }
    static var pingFloodPeriod: TimeAmount { .seconds(10) }

    init(localSettings: RPCSettings) {
        self.localSettings = localSettings
        self.connectionReceiveWindow = FlowWindow(localSettings.initialConnectionWindow)
        self.connectionCredit = CreditGrant(window: localSettings.initialConnectionWindow)
    }

    /// The number of calls open on the connection.
    var openStreams: Int { streams.count }
    /// Whether the connection is closed or closing.
    var isClosed: Bool { if case .closed = phase { true } else { false } }

    /// The connection's first frame: our SETTINGS.
    func start() -> [Action] {
        [.send(Frames.settings(localSettings))]
    }

    // MARK: Inbound frames

    mutating func receive(_ frame: Frame, now: NIODeadline) -> [Action] {
        guard !isClosed else { return [] }
        var actions: [Action] = []
        do {
            try receive(frame, now: now, into: &actions)
        } catch {
            actions += connectionError(error)
        }
        return actions
    }

    /// A frame-level error found by the decoder.
    mutating func connectionError(_ error: ConnectionError) -> [Action] {
        guard !isClosed else { return [] }
        phase = .closed
        var actions: [Action] = [.send(Frames.goAway(lastStreamID: highestStreamID, code: error.code, reason: error.message))]
        actions += abortAll(RPCError(code: .unavailable, message: "connection error: \(error)"), sendTrailers: false)
        actions.append(.close)
        return actions
    }

    private mutating func receive(_ frame: Frame, now: NIODeadline, into actions: inout [Action]) throws(ConnectionError) {
        switch frame.type {
        case .settings:
            try receiveSettings(frame, into: &actions)
        case .headers:
            try receiveHeaders(frame, into: &actions)
        case .message:
            try receiveMessage(frame, into: &actions)
        case .trailers:
            throw ConnectionError(code: .protocolError, message: "TRAILERS may only be sent by the server")
        case .cancel:
            try receiveCancel(frame, into: &actions)
        case .window:
            try receiveWindow(frame, into: &actions)
        case .ping:
            try receivePing(frame, now: now, into: &actions)
        case .goAway:
            guard frame.streamID == 0 else { throw ConnectionError(code: .protocolError, message: "GOAWAY on stream \(frame.streamID)") }
            if case .open = phase { phase = .draining }
            if streams.isEmpty { phase = .closed; actions.append(.close) }
        default:
            break // unknown types are skipped by the decoder
        }
    }

    private mutating func receiveSettings(_ frame: Frame, into actions: inout [Action]) throws(ConnectionError) {
        guard let change = try peer.apply(frame) else { return }
        connectionSendWindow.adjust(by: change.connectionWindowDelta)
        if change.streamWindowDelta != 0 {
            for id in streams.keys { streams[id]!.sendWindow.adjust(by: change.streamWindowDelta) }
        }
        actions.append(.send(Frames.settingsAck))
        flushAll(into: &actions)
    }

    private mutating func receiveHeaders(_ frame: Frame, into actions: inout [Action]) throws(ConnectionError) {
        let id = frame.streamID
        guard id != 0, id > highestStreamID else {
            throw ConnectionError(code: .protocolError, message: "HEADERS on stream \(id), not above the last stream \(highestStreamID)")
        }
        highestStreamID = id
        recentPings.removeAll()
        guard case .open = phase else {
            actions.append(.send(Frames.trailers(id, RPCStatus(code: .unavailable, message: "server shutting down"))))
            return
        }
        guard streams.count < Int(localSettings.maxConcurrentStreams) else {
            actions.append(.send(Frames.trailers(id, RPCStatus(code: .resourceExhausted, message: "more than \(localSettings.maxConcurrentStreams) concurrent calls on one connection"))))
            return
        }
        guard let headers = try? Envelope.CallHeaders(serializedBytes: frame.payload) else {
            actions.append(.send(Frames.trailers(id, RPCStatus(code: .invalidArgument, message: "HEADERS payload does not decode as CallHeaders"))))
            return
        }
        streams[id] = Stream(
            headers: headers,
            sendWindow: FlowWindow(remoteSettings.initialWindow),
            receiveWindow: FlowWindow(localSettings.initialWindow),
            request: nil
        )
    }

    private mutating func receiveMessage(_ frame: Frame, into actions: inout [Action]) throws(ConnectionError) {
        let id = frame.streamID
        let length = frame.payload.readableBytes
        guard id != 0 else { throw ConnectionError(code: .protocolError, message: "MESSAGE on stream 0") }
        guard connectionReceiveWindow.isOpen else {
            throw ConnectionError(code: .flowControlError, message: "MESSAGE sent while the connection window is exhausted")
        }
        connectionReceiveWindow.consume(length)
        // The payload is consumed at once (requests are buffered, not streamed), so the
        // connection credit goes back now.
        if let grant = connectionCredit.consume(length) {
            _ = connectionReceiveWindow.increment(grant)
            actions.append(.send(Frames.window(0, grant)))
        }
        guard var stream = streams[id] else {
            if id > highestStreamID { throw ConnectionError(code: .protocolError, message: "MESSAGE on stream \(id), which was never opened") }
            return // a stream that just ended: ignore
        }
        guard !stream.requestComplete else {
            throw ConnectionError(code: .protocolError, message: "MESSAGE on stream \(id) after END_STREAM")
        }
        guard stream.receiveWindow.isOpen else {
            throw ConnectionError(code: .flowControlError, message: "MESSAGE sent while the window of stream \(id) is exhausted")
        }
        stream.receiveWindow.consume(length)
        if stream.request == nil { stream.request = frame.payload } else { stream.extraMessages = true }
        if frame.flags.contains(.endStream) {
            stream.requestComplete = true
            let extra = stream.extraMessages
            streams[id] = stream
            if extra {
                actions += finishCall(id, status: RPCStatus(code: .invalidArgument, message: "a call takes exactly one request message"))
                return
            }
            actions.append(.startCall(streamID: id, headers: stream.headers, request: stream.request ?? ByteBuffer()))
        } else {
            // No stream credit is granted back for request messages: a call takes one request
            // message, so the stream window bounds what a client can make the server buffer.
            streams[id] = stream
        }
    }

    private mutating func receiveCancel(_ frame: Frame, into actions: inout [Action]) throws(ConnectionError) {
        let id = frame.streamID
        guard id != 0 else { throw ConnectionError(code: .protocolError, message: "CANCEL on stream 0") }
        guard let stream = streams.removeValue(forKey: id) else {
            if id > highestStreamID { throw ConnectionError(code: .protocolError, message: "CANCEL on stream \(id), which was never opened") }
            return
        }
        actions += failPending(stream, RPCError(code: .cancelled, message: "the client cancelled the call"))
        actions.append(.cancelCall(streamID: id))
        closeIfDrained(into: &actions)
    }

    private mutating func receiveWindow(_ frame: Frame, into actions: inout [Action]) throws(ConnectionError) {
        let increment = try Frames.windowIncrement(frame)
        let id = frame.streamID
        if id == 0 {
            guard connectionSendWindow.increment(increment) else {
                throw ConnectionError(code: .flowControlError, message: "WINDOW takes the connection window above 2^31-1")
            }
            flushBlockedOnConnection(into: &actions)
            return
        }
        guard streams[id] != nil else {
            if id > highestStreamID { throw ConnectionError(code: .protocolError, message: "WINDOW on stream \(id), which was never opened") }
            return
        }
        guard streams[id]!.sendWindow.increment(increment) else {
            throw ConnectionError(code: .flowControlError, message: "WINDOW takes the window of stream \(id) above 2^31-1")
        }
        flush(id, into: &actions)
    }

    private mutating func receivePing(_ frame: Frame, now: NIODeadline, into actions: inout [Action]) throws(ConnectionError) {
        guard frame.streamID == 0 else { throw ConnectionError(code: .protocolError, message: "PING on stream \(frame.streamID)") }
        guard frame.payload.readableBytes == 8 else { throw ConnectionError(code: .protocolError, message: "PING payload must be 8 bytes") }
        if frame.flags.contains(.ack) {
            actions.append(.pingAcknowledged)
            return
        }
        recentPings.append(now)
        while let first = recentPings.first, first + Self.pingFloodPeriod < now { recentPings.removeFirst() }
        if recentPings.count > Self.pingFloodLimit {
            throw ConnectionError(code: .enhanceYourCalm, message: "more than \(Self.pingFloodLimit) PINGs within \(Self.pingFloodPeriod) without a call")
        }
        actions.append(.send(Frames.ping(frame.payload, ack: true)))
    }

    // MARK: Outbound, from call handlers

    /// Queues a response message; it is sent as soon as both windows allow.
    mutating func sendMessage(_ id: UInt32, _ payload: ByteBuffer, completion: Completion?) -> [Action] {
        guard streams[id] != nil, !isClosed else {
            return completion.map { [.failWrite($0, RPCError(code: .cancelled, message: "the call has ended"))] } ?? []
        }
        if let error = oversize(payload) {
            return completion.map { [.failWrite($0, error)] } ?? []
        }
        streams[id]!.pending.append(.message(payload, completion))
        var actions: [Action] = []
        flush(id, into: &actions)
        return actions
    }

    /// Ends a call with TRAILERS(status), after the messages already queued and after
    /// `response` (a unary call's reply). A response larger than the client's `max_frame_size`
    /// is not sent; the call ends with RESOURCE_EXHAUSTED instead.
    mutating func finishCall(_ id: UInt32, response: ByteBuffer? = nil, status: RPCStatus) -> [Action] {
        guard streams[id] != nil else { return [] }
        var status = status
        if let response {
            if let error = oversize(response) {
                status = error.status
            } else {
                streams[id]!.pending.append(.message(response, nil))
            }
        }
        streams[id]!.pending.append(.trailers(status))
        var actions: [Action] = []
        flush(id, into: &actions)
        return actions
    }

    /// Ends a call at once with `status`, dropping its queued messages, and stops its handler
    /// (deadline passed, shutdown).
    mutating func abortCall(_ id: UInt32, status: RPCStatus) -> [Action] {
        guard let stream = streams.removeValue(forKey: id) else { return [] }
        var actions = failPending(stream, RPCError(status: status))
        actions.append(.send(Frames.trailers(id, status)))
        actions.append(.cancelCall(streamID: id))
        closeIfDrained(into: &actions)
        return actions
    }

    /// Starts a graceful shutdown: GOAWAY(NO_ERROR) and no new calls.
    mutating func beginShutdown() -> [Action] {
        guard case .open = phase else { return [] }
        phase = .draining
        var actions: [Action] = [.send(Frames.goAway(lastStreamID: highestStreamID, code: .noError, reason: "server shutting down"))]
        closeIfDrained(into: &actions)
        return actions
    }

    /// The grace period is over: end every call still running with UNAVAILABLE and close.
    mutating func forceClose() -> [Action] {
        guard !isClosed else { return [] }
        phase = .closed
        var actions = abortAll(RPCError(code: .unavailable, message: "server shutting down"), sendTrailers: true)
        actions.append(.close)
        return actions
    }

    /// The open streams, for the handler's shutdown decisions.
    var streamIDs: [UInt32] { Array(streams.keys) }

    /// The channel closed underneath us.
    mutating func channelClosed() -> [Action] {
        phase = .closed
        return abortAll(RPCError(code: .unavailable, message: "the connection closed"), sendTrailers: false)
    }

    // MARK: Internals

    private func oversize(_ payload: ByteBuffer) -> RPCError? {
        guard payload.readableBytes > Int(remoteSettings.maxFrameSize) else { return nil }
        return RPCError(code: .resourceExhausted, message: "a response of \(payload.readableBytes) bytes exceeds the client's max_frame_size \(remoteSettings.maxFrameSize)")
    }

    private mutating func abortAll(_ error: RPCError, sendTrailers: Bool) -> [Action] {
        var actions: [Action] = []
        for (id, stream) in streams.sorted(by: { $0.key < $1.key }) {
            actions += failPending(stream, error)
            if sendTrailers { actions.append(.send(Frames.trailers(id, error.status))) }
            actions.append(.cancelCall(streamID: id))
        }
        streams.removeAll()
        blockedOnConnection.removeAll()
        return actions
    }

    private func failPending(_ stream: Stream, _ error: RPCError) -> [Action] {
        stream.pending.compactMap { item in
            if case .message(_, let completion?) = item { .failWrite(completion, error) } else { nil }
        }
    }

    private mutating func flush(_ id: UInt32, into actions: inout [Action]) {
        guard var stream = streams[id] else { return }
        while let next = stream.pending.first {
            switch next {
            case .message(let payload, let completion):
                guard stream.sendWindow.isOpen else { streams[id] = stream; return }
                guard connectionSendWindow.isOpen else {
                    if !blockedOnConnection.contains(id) { blockedOnConnection.append(id) }
                    streams[id] = stream
                    return
                }
                stream.pending.removeFirst()
                stream.sendWindow.consume(payload.readableBytes)
                connectionSendWindow.consume(payload.readableBytes)
                actions.append(.send(Frames.message(id, payload, endStream: false)))
                if let completion { actions.append(.completeWrite(completion)) }
            case .trailers(let status):
                streams[id] = nil
                actions.append(.send(Frames.trailers(id, status)))
                closeIfDrained(into: &actions)
                return
            }
        }
        streams[id] = stream
    }

    private mutating func flushAll(into actions: inout [Action]) {
        for id in streams.keys.sorted() { flush(id, into: &actions) }
    }

    private mutating func flushBlockedOnConnection(into actions: inout [Action]) {
        let blocked = blockedOnConnection
        blockedOnConnection = []
        for id in blocked { flush(id, into: &actions) }
    }

    private mutating func closeIfDrained(into actions: inout [Action]) {
        if case .draining = phase, streams.isEmpty {
            phase = .closed
            actions.append(.close)
        }
    }
}
