import CosiWire
import NIOCore

/// The client side of one COSI-RPC/1 connection, as a plain state machine: the mirror of
/// ``ServerConnectionStateMachine``, on the same ``FlowControl`` core.
///
/// It assigns stream ids, tracks each call until its TRAILERS (or CANCEL, GOAWAY, a connection
/// error), buffers a unary call's response, and decides when the connection is ready (the
/// server's first SETTINGS) and when no new call may start. It does no I/O: the handler carries
/// out the actions. `Call` is the handler's token for a call (promises and continuations in the
/// handler; integers in tests); the machine hands it back when the call has something to deliver.
struct ClientConnectionStateMachine<Call> {
    enum Action {
        /// Write this frame to the server.
        case send(Frame)
        /// The server's first SETTINGS arrived: the connection is ready for calls.
        case ready
        /// A message of a server-streaming call.
        case deliver(Call, ByteBuffer)
        /// The call ended: with its response (a unary call's reply; nil for a stream) or an error.
        /// The stream is gone; drop its timers.
        case finish(streamID: UInt32, Call, Result<ByteBuffer?, RPCError>)
        /// Close the connection (after the frames already returned).
        case close
    }

    /// How a call's responses are delivered.
    enum Kind {
        /// One response message, delivered with the TRAILERS.
        case unary
        /// Each message as it arrives.
        case serverStreaming
    }

    private struct Stream {
        var call: Call
        var kind: Kind
        var response: ByteBuffer?
    }

    private enum Phase {
        /// Waiting for the server's first SETTINGS.
        case connecting
        case open
        /// No new calls (GOAWAY received or sent, ids exhausted, connection error): why.
        case unavailable(String)
    }

    /// Windows, queues and each call's state, one entry per stream.
    private var flow: FlowControl<Never, Stream>
    private var phase = Phase.connecting
    private var nextStreamID: UInt32 = 1

    init(localSettings: RPCSettings) {
        self.flow = FlowControl(local: localSettings)
    }

    var localSettings: RPCSettings { flow.local }
    var remoteSettings: RPCSettings { flow.remote }
    /// The number of calls in flight.
    var openStreams: Int { flow.count }

    /// Why no new call may start, or nil while calls may start.
    var unavailableReason: String? {
        if case .unavailable(let reason) = phase { reason } else { nil }
    }

    /// The connection's first frame: our SETTINGS (sent once TLS is up).
    func start() -> [Action] {
        [.send(Frames.settings(localSettings))]
    }

    // MARK: Calls

    /// Starts a call: HEADERS, then the request as one MESSAGE with END_STREAM once the windows
    /// allow. Returns the call's stream id, or nil when it could not start (the actions then hold
    /// its `.finish` with the reason).
    mutating func startCall(_ headers: Envelope.CallHeaders, request: ByteBuffer, kind: Kind, call: Call) -> (streamID: UInt32?, actions: [Action]) {
        func refuse(_ code: RPCStatus.Code, _ message: String) -> (UInt32?, [Action]) {
            (nil, [.finish(streamID: 0, call, .failure(RPCError(code: code, message: message)))])
        }
        if let reason = unavailableReason { return refuse(.unavailable, reason) }
        guard request.readableBytes <= Int(remoteSettings.maxFrameSize) else {
            return refuse(.resourceExhausted, "a request of \(request.readableBytes) bytes exceeds the server's max_frame_size \(remoteSettings.maxFrameSize)")
        }
        guard flow.count < Int(remoteSettings.maxConcurrentStreams) else {
            return refuse(.resourceExhausted, "the server allows \(remoteSettings.maxConcurrentStreams) concurrent calls on one connection")
        }
        guard nextStreamID < UInt32(Int32.max) else {
            phase = .unavailable("stream ids exhausted on this connection")
            return refuse(.unavailable, "stream ids exhausted on this connection")
        }
        let id = nextStreamID
        nextStreamID += 1
        flow.open(id, Stream(call: call, kind: kind))
        var actions: [Action] = [.send(Frames.headers(id, headers))]
        var out: [FlowControl<Never, Stream>.Output] = []
        flow.send(request, endStream: true, completion: nil, on: id, into: &out)
        apply(out, into: &actions)
        return (id, actions)
    }

    /// The caller gave up on a call (task cancelled, deadline passed): CANCEL, and the call
    /// ends with `error`.
    mutating func cancel(_ id: UInt32, error: RPCError) -> [Action] {
        guard let stream = remove(id) else { return [] }
        return [.send(Frames.cancel(id)), .finish(streamID: id, stream.call, .failure(error))]
    }

    /// The application consumed `bytes` of a stream's messages: maybe grant credit.
    mutating func consumed(_ bytes: Int, on id: UInt32) -> [Action] {
        var out: [FlowControl<Never, Stream>.Output] = []
        flow.consumed(bytes, on: id, into: &out)
        var actions: [Action] = []
        apply(out, into: &actions)
        return actions
    }

    /// Closes gracefully from our side: GOAWAY(NO_ERROR), then close. Calls in flight end with
    /// UNAVAILABLE when the channel closes.
    mutating func close() -> [Action] {
        if unavailableReason == nil { phase = .unavailable("the client closed the connection") }
        return [.send(Frames.goAway(lastStreamID: 0, code: .noError, reason: "client closing")), .close]
    }

    // MARK: Inbound frames

    mutating func receive(_ frame: Frame) -> [Action] {
        var actions: [Action] = []
        do {
            try receive(frame, into: &actions)
        } catch {
            actions += connectionError(error)
        }
        return actions
    }

    /// A frame-level error found by the decoder, or a protocol error: GOAWAY and close.
    mutating func connectionError(_ error: ConnectionError) -> [Action] {
        phase = .unavailable("connection error \(error)")
        return [.send(Frames.goAway(lastStreamID: 0, code: error.code, reason: error.message)), .close]
    }

    /// The channel closed (or failed with `reason`): every call in flight ends with UNAVAILABLE.
    mutating func channelClosed(reason: String? = nil) -> [Action] {
        let reason = unavailableReason ?? reason ?? "the connection closed"
        phase = .unavailable(reason)
        let error = RPCError(code: .unavailable, message: reason)
        return flow.closeAll().map { .finish(streamID: $0.id, $0.state.call, .failure(error)) }
    }

    private mutating func receive(_ frame: Frame, into actions: inout [Action]) throws(ConnectionError) {
        switch frame.type {
        case .settings:
            var out: [FlowControl<Never, Stream>.Output] = []
            let first = try flow.receiveSettings(frame, into: &out)
            apply(out, into: &actions)
            if first == true, case .connecting = phase {
                phase = .open
                actions.append(.ready)
            }
        case .message:
            guard frame.streamID != 0 else { throw ConnectionError(code: .protocolError, message: "MESSAGE on stream 0") }
            var out: [FlowControl<Never, Stream>.Output] = []
            try flow.receiveOnConnection(frame.payload.readableBytes, into: &out)
            apply(out, into: &actions)
            try requireOpened(frame)
            guard flow.isOpen(frame.streamID) else { return }
            try flow.receiveOnStream(frame.payload.readableBytes, on: frame.streamID)
            let streaming: Call? = flow.withState(frame.streamID) { stream in
                switch stream.kind {
                case .unary:
                    stream.response = frame.payload
                    return nil
                case .serverStreaming:
                    return stream.call
                }
            } ?? nil
            if let streaming { actions.append(.deliver(streaming, frame.payload)) }
        case .trailers:
            try requireOpened(frame)
            guard let stream = remove(frame.streamID) else { return }
            let status: RPCStatus
            do { status = RPCStatus(try Envelope.Status(serializedBytes: frame.payload)) } catch {
                status = RPCStatus(code: .internal, message: "TRAILERS payload does not decode")
            }
            actions.append(.finish(streamID: frame.streamID, stream.call, outcome(stream, status)))
        case .cancel:
            try requireOpened(frame)
            guard let stream = remove(frame.streamID) else { return }
            actions.append(.finish(streamID: frame.streamID, stream.call, .failure(RPCError(code: .cancelled, message: "the server cancelled the call"))))
        case .window:
            if frame.streamID != 0 { try requireOpened(frame) }
            var out: [FlowControl<Never, Stream>.Output] = []
            try flow.receiveWindow(frame, into: &out)
            apply(out, into: &actions)
        case .ping:
            try Frames.validatePing(frame)
            if !frame.flags.contains(.ack) { actions.append(.send(Frames.ping(frame.payload, ack: true))) }
        case .goAway:
            guard frame.streamID == 0 else { throw ConnectionError(code: .protocolError, message: "GOAWAY on stream \(frame.streamID)") }
            let goAway = (try? Envelope.GoAway(serializedBytes: frame.payload)) ?? Envelope.GoAway(lastStreamID: 0, code: ConnectionErrorCode.protocolError.rawValue)
            let reason = "the server sent GOAWAY(\(ConnectionErrorCode(rawValue: goAway.code)))\(goAway.reason.isEmpty ? "" : ": \(goAway.reason)")"
            phase = .unavailable(reason)
            // Calls above the last stream the server processes will never be answered.
            for id in flow.ids.sorted() where id > goAway.lastStreamID {
                let stream = remove(id)!
                actions.append(.finish(streamID: id, stream.call, .failure(RPCError(code: .unavailable, message: reason))))
            }
        default:
            break // unknown types are skipped by the decoder
        }
    }

    /// A frame on a stream we never opened is a PROTOCOL_ERROR; one on a stream that has ended
    /// is ignored (it crossed our CANCEL).
    private func requireOpened(_ frame: Frame) throws(ConnectionError) {
        guard frame.streamID != 0 else { throw ConnectionError(code: .protocolError, message: "\(frame.type) on stream 0") }
        if !flow.isOpen(frame.streamID), frame.streamID >= nextStreamID {
            throw ConnectionError(code: .protocolError, message: "\(frame.type) on stream \(frame.streamID), which was never opened")
        }
    }

    private mutating func remove(_ id: UInt32) -> Stream? {
        flow.close(id)?.state
    }

    private func outcome(_ stream: Stream, _ status: RPCStatus) -> Result<ByteBuffer?, RPCError> {
        guard status.code == .ok else { return .failure(RPCError(status: status)) }
        switch stream.kind {
        case .serverStreaming:
            return .success(nil)
        case .unary:
            guard let response = stream.response else {
                return .failure(RPCError(code: .internal, message: "the server ended a unary call without a response"))
            }
            return .success(response)
        }
    }

    private func apply(_ outputs: [FlowControl<Never, Stream>.Output], into actions: inout [Action]) {
        for output in outputs {
            if case .frame(let frame) = output { actions.append(.send(frame)) }
        }
    }
}
