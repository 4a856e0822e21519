import CosiWire
import DequeModule
import NIOCore

/// The server side of one COSI-RPC/1 connection, as a plain state machine.
///
/// It owns the calls' bookkeeping (stream ids, requests, trailers), the ping-flood guard and
/// shutdown; windows and credit are the ``FlowControl`` core it shares with the client. It does
/// no I/O: every input returns the actions the handler must carry out, in order. `Completion` is
/// an opaque token the handler attaches to outbound messages and gets back when the message
/// leaves the queue (the handler uses promises; tests use integers).
struct ServerConnectionStateMachine<Completion> {
    enum Action {
        /// Write this frame to the peer.
        case send(Frame)
        /// A call's HEADERS arrived: decide now whether it may go on (method known, caller
        /// allowed); refuse it with ``ServerConnectionStateMachine/refuseCall(_:status:)``
        /// before its request is read.
        case admitCall(streamID: UInt32, headers: Envelope.CallHeaders)
        /// A request is complete: run the method's handler.
        case startCall(streamID: UInt32, headers: Envelope.CallHeaders, request: ByteBuffer)
        /// Stop the handler of this call (cancelled, expired or aborted); send nothing more for it.
        case cancelCall(streamID: UInt32)
        /// An outbound message was handed to the connection.
        case completeWrite(Completion)
        /// An outbound message will never be sent.
        case failWrite(Completion, RPCError)
        /// Every message queued on this open call has been handed to the connection.
        case streamDrained(streamID: UInt32)
        /// A PING we sent was acknowledged.
        case pingAcknowledged
        /// Close the connection (after the frames already returned).
        case close
    }

    private struct Call {
        var headers: Envelope.CallHeaders
        var request: ByteBuffer?
        /// Request bytes received and charged to the connection window, whose credit is given
        /// back when the request is complete or the call ends.
        var requestBytes = 0
        var extraMessages = false
        var requestComplete = false
        /// How the call ends, once its handler has finished: sent when its queue drains.
        var trailers: RPCStatus?
    }

    private enum Phase {
        case open
        /// GOAWAY(NO_ERROR) sent: no new calls, close once the last one ends.
        case draining
        case closed
    }

    /// Windows, queues and each open call's state, one entry per stream.
    private var flow: FlowControl<Completion, Call>
    private var phase = Phase.open
    private var highestStreamID: UInt32 = 0
    /// Times of the PINGs received since the last call started (at most 10 kept), for the flood
    /// guard: more than 10 within 10 s with no call in between is ENHANCE_YOUR_CALM.
    private var recentPings: Deque<NIODeadline> = []
    static var pingFloodLimit: Int { 10 }
    static var pingFloodPeriod: TimeAmount { .seconds(10) }
    /// SETTINGS after the first: 10 at once, then one per 10 seconds (each may walk the streams).
    private var settingsChanges = RateGuard(burst: 10, perSecond: 0.1)
    /// Frames of unknown type (ignored, but read): 1,000 at once, then 100 per second.
    private var unknownFrames = RateGuard(burst: 1_000, perSecond: 100)

    init(localSettings: RPCSettings) {
        self.flow = FlowControl(local: localSettings)
    }

    var localSettings: RPCSettings { flow.local }
    var remoteSettings: RPCSettings { flow.remote }
    /// The number of calls open on the connection.
    var openStreams: Int { flow.count }
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

    /// A frame-level error found by the decoder, or a protocol error.
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
            if !frame.flags.contains(.ack), flow.hasReceivedSettings, !settingsChanges.allow(now: now) {
                throw ConnectionError(code: .enhanceYourCalm, message: "too many SETTINGS frames (more than 10, then one per 10 s)")
            }
            var out: [FlowControl<Completion, Call>.Output] = []
            _ = try flow.receiveSettings(frame, into: &out)
            apply(out, into: &actions)
        case .headers:
            try receiveHeaders(frame, into: &actions)
        case .message:
            try receiveMessage(frame, into: &actions)
        case .trailers:
            throw ConnectionError(code: .protocolError, message: "TRAILERS may only be sent by the server")
        case .cancel:
            try receiveCancel(frame, into: &actions)
        case .window:
            if frame.streamID != 0 { try requireOpened(frame) }
            var out: [FlowControl<Completion, Call>.Output] = []
            try flow.receiveWindow(frame, into: &out)
            apply(out, into: &actions)
        case .ping:
            try receivePing(frame, now: now, into: &actions)
        case .goAway:
            guard frame.streamID == 0 else { throw ConnectionError(code: .protocolError, message: "GOAWAY on stream \(frame.streamID)") }
            if case .open = phase { phase = .draining }
            closeIfDrained(into: &actions)
        default:
            // Unknown types are ignored, within a budget.
            guard unknownFrames.allow(now: now) else {
                throw ConnectionError(code: .enhanceYourCalm, message: "too many frames of unknown type (more than 1,000, then 100 per second)")
            }
        }
    }

    /// A frame on a stream the client never opened is a PROTOCOL_ERROR; one on a stream that
    /// has ended is ignored (it crossed our TRAILERS or CANCEL).
    private func requireOpened(_ frame: Frame) throws(ConnectionError) {
        guard frame.streamID != 0 else { throw ConnectionError(code: .protocolError, message: "\(frame.type) on stream 0") }
        if !flow.isOpen(frame.streamID), frame.streamID > highestStreamID {
            throw ConnectionError(code: .protocolError, message: "\(frame.type) on stream \(frame.streamID), which was never opened")
        }
    }

    private mutating func receiveHeaders(_ frame: Frame, into actions: inout [Action]) throws(ConnectionError) {
        let id = frame.streamID
        guard id != 0, id > highestStreamID else {
            throw ConnectionError(code: .protocolError, message: "HEADERS on stream \(id), not above the last stream \(highestStreamID)")
        }
        highestStreamID = id
        guard case .open = phase else {
            actions.append(.send(Frames.trailers(id, RPCStatus(code: .unavailable, message: "server shutting down"))))
            return
        }
        guard flow.count < Int(localSettings.maxConcurrentStreams) else {
            actions.append(.send(Frames.trailers(id, RPCStatus(code: .resourceExhausted, message: "more than \(localSettings.maxConcurrentStreams) concurrent calls on one connection"))))
            return
        }
        guard let headers = try? Envelope.CallHeaders(serializedBytes: frame.payload) else {
            actions.append(.send(Frames.trailers(id, RPCStatus(code: .invalidArgument, message: "HEADERS payload does not decode as CallHeaders"))))
            return
        }
        flow.open(id, Call(headers: headers))
        actions.append(.admitCall(streamID: id, headers: headers))
    }

    private mutating func receiveMessage(_ frame: Frame, into actions: inout [Action]) throws(ConnectionError) {
        let id = frame.streamID
        let length = frame.payload.readableBytes
        guard id != 0 else { throw ConnectionError(code: .protocolError, message: "MESSAGE on stream 0") }
        try flow.chargeConnection(length)
        try requireOpened(frame)
        guard let complete = flow.withState(id, { $0.requestComplete }) else {
            // A stream that has ended (or was refused): the bytes are dropped, the credit goes back.
            release(length, into: &actions)
            return
        }
        guard !complete else {
            throw ConnectionError(code: .protocolError, message: "MESSAGE on stream \(id) after END_STREAM")
        }
        // No stream credit is granted back for requests: a call takes one request message, so
        // the stream window bounds what one call can make the server buffer; the connection
        // credit of an incomplete request is kept, so the connection window bounds them all.
        try flow.receiveOnStream(length, on: id)
        let endStream = frame.flags.contains(.endStream)
        let ready: (headers: Envelope.CallHeaders, request: ByteBuffer, extra: Bool, bytes: Int)? = flow.withState(id) { call in
            call.requestBytes += length
            if call.request == nil { call.request = endStream ? frame.payload : Self.owned(frame.payload) } else { call.extraMessages = true }
            guard endStream else { return nil }
            call.requestComplete = true
            // The call no longer needs its request once it starts.
            defer {
                call.request = nil
                call.requestBytes = 0
            }
            return (call.headers, call.request ?? ByteBuffer(), call.extraMessages, call.requestBytes)
        } ?? nil
        guard let ready else { return }
        release(ready.bytes, into: &actions)
        if ready.extra {
            actions += finishCall(id, status: RPCStatus(code: .invalidArgument, message: "a call takes exactly one request message"))
            return
        }
        // A call: the peer is doing useful work, and may ping again.
        recentPings.removeAll()
        actions.append(.startCall(streamID: id, headers: ready.headers, request: ready.request))
    }

    private mutating func receiveCancel(_ frame: Frame, into actions: inout [Action]) throws(ConnectionError) {
        try requireOpened(frame)
        let id = frame.streamID
        guard let closed = flow.close(id) else { return }
        release(closed.state.requestBytes, into: &actions)
        failWrites(closed.unsent, RPCError(code: .cancelled, message: "the client cancelled the call"), into: &actions)
        actions.append(.cancelCall(streamID: id))
        closeIfDrained(into: &actions)
    }

    private mutating func receivePing(_ frame: Frame, now: NIODeadline, into actions: inout [Action]) throws(ConnectionError) {
        try Frames.validatePing(frame)
        if frame.flags.contains(.ack) {
            actions.append(.pingAcknowledged)
            return
        }
        while let first = recentPings.first, first + Self.pingFloodPeriod < now { recentPings.removeFirst() }
        guard recentPings.count < Self.pingFloodLimit else {
            throw ConnectionError(code: .enhanceYourCalm, message: "more than \(Self.pingFloodLimit) PINGs within \(Self.pingFloodPeriod) without a call")
        }
        recentPings.append(now)
        actions.append(.send(Frames.ping(frame.payload, ack: true)))
    }

    // MARK: Outbound, from call handlers

    /// Queues a response message; it is sent as soon as both windows allow.
    mutating func sendMessage(_ id: UInt32, _ payload: ByteBuffer, completion: Completion?) -> [Action] {
        guard flow.withState(id, { $0.trailers == nil }) == true, !isClosed else {
            return completion.map { [.failWrite($0, RPCError(code: .cancelled, message: "the call has ended"))] } ?? []
        }
        if let error = oversize(payload) {
            return completion.map { [.failWrite($0, error)] } ?? []
        }
        var out: [FlowControl<Completion, Call>.Output] = []
        flow.send(payload, completion: completion, on: id, into: &out)
        var actions: [Action] = []
        apply(out, into: &actions)
        return actions
    }

    /// Ends a call with TRAILERS(status), after the messages already queued and after
    /// `response` (a unary call's reply). A response larger than the client's `max_frame_size`
    /// is not sent; the call ends with RESOURCE_EXHAUSTED instead.
    mutating func finishCall(_ id: UInt32, response: ByteBuffer? = nil, status: RPCStatus) -> [Action] {
        var status = status
        var response = response
        if let payload = response, let error = oversize(payload) {
            status = error.status
            response = nil
        }
        let finishing = flow.withState(id) { call -> Bool in
            guard call.trailers == nil else { return false }
            call.trailers = status
            return true
        }
        guard finishing == true else { return [] }
        var out: [FlowControl<Completion, Call>.Output] = []
        if let response {
            flow.send(response, completion: nil, on: id, into: &out)
        } else {
            flow.flush(id, into: &out)
        }
        var actions: [Action] = []
        apply(out, into: &actions)
        return actions
    }

    /// Refuses a call whose HEADERS arrived (``Action/admitCall(streamID:headers:)``): it ends
    /// with TRAILERS(status) before its request is read; what arrives of it is dropped.
    mutating func refuseCall(_ id: UInt32, status: RPCStatus) -> [Action] {
        guard let closed = flow.close(id) else { return [] }
        var actions: [Action] = []
        release(closed.state.requestBytes, into: &actions)
        actions.append(.send(Frames.trailers(id, status)))
        closeIfDrained(into: &actions)
        return actions
    }

    /// Ends a call at once with `status`, dropping its queued messages, and stops its handler
    /// (deadline passed, shutdown).
    mutating func abortCall(_ id: UInt32, status: RPCStatus) -> [Action] {
        guard let closed = flow.close(id) else { return [] }
        var actions: [Action] = []
        release(closed.state.requestBytes, into: &actions)
        failWrites(closed.unsent, RPCError(status: status), into: &actions)
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

    /// The client may no longer be served (its certificate expired, was revoked, or no longer
    /// chains to a trusted CA): every call ends with `status`, then GOAWAY(NO_ERROR) and close.
    mutating func revoke(_ status: RPCStatus) -> [Action] {
        guard !isClosed else { return [] }
        phase = .closed
        var actions = abortAll(RPCError(status: status), sendTrailers: true)
        actions.append(.send(Frames.goAway(lastStreamID: highestStreamID, code: .noError, reason: status.message)))
        actions.append(.close)
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

    /// The channel closed underneath us.
    mutating func channelClosed() -> [Action] {
        phase = .closed
        return abortAll(RPCError(code: .unavailable, message: "the connection closed"), sendTrailers: false)
    }

    /// Lets MESSAGE frames go up to `bytes` more payload bytes (nil: no limit), and sends what
    /// waited for it. The handler sets it from its socket's progress.
    mutating func allowOutput(_ bytes: Int?) -> [Action] {
        var out: [FlowControl<Completion, Call>.Output] = []
        flow.allowOutput(bytes, into: &out)
        var actions: [Action] = []
        apply(out, into: &actions)
        return actions
    }

    /// Whether every message queued on `id` has been handed to the connection (true when the
    /// call is gone).
    func isDrained(_ id: UInt32) -> Bool { flow.isDrained(id) }

    /// Whether a call is open on `id`.
    func isOpen(_ id: UInt32) -> Bool { flow.isOpen(id) }

    /// Whether the client's first SETTINGS has arrived.
    var hasReceivedSettings: Bool { flow.hasReceivedSettings }

    /// Whether a message waits for connection credit or output allowance.
    var hasWaitingOutput: Bool { flow.hasWaitingStreams }

    // MARK: Internals

    private mutating func release(_ bytes: Int, into actions: inout [Action]) {
        var out: [FlowControl<Completion, Call>.Output] = []
        flow.releaseConnection(bytes, into: &out)
        apply(out, into: &actions)
    }

    /// A request kept for a while (an incomplete request, or the request of a call that runs as
    /// a task): copied out of the read buffer when it is a small part of it, so that it does not
    /// hold the whole buffer.
    static func owned(_ payload: ByteBuffer) -> ByteBuffer {
        guard payload.storageCapacity > 2 * payload.readableBytes + 4_096 else { return payload }
        var copy = ByteBufferAllocator().buffer(capacity: payload.readableBytes)
        copy.writeImmutableBuffer(payload)
        return copy
    }

    func oversize(_ payload: ByteBuffer) -> RPCError? {
        guard payload.readableBytes > Int(remoteSettings.maxFrameSize) else { return nil }
        return RPCError(code: .resourceExhausted, message: "a response of \(payload.readableBytes) bytes exceeds the client's max_frame_size \(remoteSettings.maxFrameSize)")
    }

    /// Carries out the flow core's outputs; a finished call's TRAILERS go once its queue drains.
    private mutating func apply(_ outputs: [FlowControl<Completion, Call>.Output], into actions: inout [Action]) {
        for output in outputs {
            switch output {
            case .frame(let frame):
                actions.append(.send(frame))
            case .written(let completion):
                actions.append(.completeWrite(completion))
            case .drained(let id):
                guard let status = flow.withState(id, { $0.trailers }) ?? nil else {
                    actions.append(.streamDrained(streamID: id))
                    continue
                }
                _ = flow.close(id)
                actions.append(.send(Frames.trailers(id, status)))
                closeIfDrained(into: &actions)
            }
        }
    }

    private mutating func abortAll(_ error: RPCError, sendTrailers: Bool) -> [Action] {
        var actions: [Action] = []
        for (id, _, unsent) in flow.closeAll() {
            failWrites(unsent, error, into: &actions)
            if sendTrailers { actions.append(.send(Frames.trailers(id, error.status))) }
            actions.append(.cancelCall(streamID: id))
        }
        return actions
    }

    private func failWrites(_ completions: [Completion], _ error: RPCError, into actions: inout [Action]) {
        for completion in completions { actions.append(.failWrite(completion, error)) }
    }

    private mutating func closeIfDrained(into actions: inout [Action]) {
        if case .draining = phase, flow.count == 0 {
            phase = .closed
            actions.append(.close)
        }
    }
}
