import CosiTLS
import CosiWire
import NIOCore

/// Identifies one client call across the hop to the event loop (streams get their ids there,
/// in the order their HEADERS are written).
final class CallHandle: Sendable {}

/// Runs the client side of COSI-RPC/1 on one connection, after the ``TLSHandler``.
///
/// Lives on its event loop; ``RPCClientConnection`` reaches it with `execute`.
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Responder {
        case unary(EventLoopPromise<ByteBuffer>)
        case streaming(AsyncThrowingStream<ByteBuffer, any Error>.Continuation)
    }

    private struct Stream {
        var handle: ObjectIdentifier
        var responder: Responder
        var response: ByteBuffer?
        var sendWindow: FlowWindow
        var receiveWindow: FlowWindow
        var receiveCredit: CreditGrant
        var pendingRequest: ByteBuffer?
        var deadline: Scheduled<Void>?
    }

    let localSettings: RPCSettings
    private var peer = PeerSettings()
    private var remoteSettings: RPCSettings { peer.current }
    private let ready: EventLoopPromise<PeerIdentity?>
    private var decoder: FrameDecoder
    private var output = FrameWriteBuffer(allocator: ByteBufferAllocator())
    private var context: ChannelHandlerContext?
    private var serverIdentity: PeerIdentity?
    private var streams: [UInt32: Stream] = [:]
    private var handles: [ObjectIdentifier: UInt32] = [:]
    private var nextStreamID: UInt32 = 1
    private var connectionSendWindow = FlowWindow(RPCSettings.defaultInitialConnectionWindow)
    private var connectionReceiveWindow: FlowWindow
    private var connectionCredit: CreditGrant
    /// Streams whose request waits for connection credit.
    private var blocked: [UInt32] = []
    /// Set once no new calls may start: why.
    private var unavailableReason: String?
    private var goAwayLastStreamID: UInt32?
    private var flushScheduled = false

    init(settings: RPCSettings, ready: EventLoopPromise<PeerIdentity?>) {
        self.localSettings = settings
        self.ready = ready
        self.decoder = FrameDecoder(maxFrameSize: settings.maxFrameSize, requireSettingsFirst: true)
        self.connectionReceiveWindow = FlowWindow(settings.initialConnectionWindow)
        self.connectionCredit = CreditGrant(window: settings.initialConnectionWindow)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let handshake = event as? TLSHandshakeCompleted {
            serverIdentity = handshake.peer
            output.append(Frames.settings(localSettings))
            flush()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if unavailableReason == nil {
            unavailableReason = (error as? TLSError)?.message ?? "\(error)"
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let reason = unavailableReason ?? "the connection closed"
        unavailableReason = reason
        ready.fail(RPCError(code: .unavailable, message: reason))
        for (_, stream) in streams {
            stream.deadline?.cancel()
            fail(stream.responder, RPCError(code: .unavailable, message: reason))
        }
        streams.removeAll()
        handles.removeAll()
        context.fireChannelInactive()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        decoder.append(unwrapInboundIn(data))
        while context.channel.isActive {
            do {
                guard let frame = try decoder.nextFrame() else { break }
                try receive(frame)
            } catch let error as FrameDecodingError {
                connectionError(ConnectionError(code: error.code == .frameTooLarge ? .frameSizeError : .protocolError, message: error.message))
                return
            } catch let error as ConnectionError {
                connectionError(error)
                return
            } catch {
                connectionError(ConnectionError(code: .internalError, message: "\(error)"))
                return
            }
        }
        flush()
    }

    private func receive(_ frame: Frame) throws {
        switch frame.type {
        case .settings:
            guard let change = try peer.apply(frame) else { return }
            connectionSendWindow.adjust(by: change.connectionWindowDelta)
            for id in streams.keys { streams[id]!.sendWindow.adjust(by: change.streamWindowDelta) }
            output.append(Frames.settingsAck)
            if change.isFirst { ready.succeed(serverIdentity) }
            flushBlocked()
        case .message:
            try receiveMessage(frame)
        case .trailers:
            guard let stream = streams.removeValue(forKey: frame.streamID) else {
                if frame.streamID >= nextStreamID { throw ConnectionError(code: .protocolError, message: "TRAILERS on stream \(frame.streamID), which was never opened") }
                return
            }
            handles[stream.handle] = nil
            stream.deadline?.cancel()
            let status: RPCStatus
            do { status = RPCStatus(try Envelope.Status(serializedBytes: frame.payload)) } catch {
                status = RPCStatus(code: .internal, message: "TRAILERS payload does not decode")
            }
            complete(stream, status: status)
        case .cancel:
            if let stream = streams.removeValue(forKey: frame.streamID) {
                handles[stream.handle] = nil
                stream.deadline?.cancel()
                fail(stream.responder, RPCError(code: .cancelled, message: "the server cancelled the call"))
            }
        case .window:
            let increment = try Frames.windowIncrement(frame)
            if frame.streamID == 0 {
                guard connectionSendWindow.increment(increment) else { throw ConnectionError(code: .flowControlError, message: "connection window overflow") }
                flushBlocked()
            } else if streams[frame.streamID] != nil {
                guard streams[frame.streamID]!.sendWindow.increment(increment) else { throw ConnectionError(code: .flowControlError, message: "stream window overflow") }
                sendPendingRequest(frame.streamID)
            }
        case .ping:
            guard frame.payload.readableBytes == 8 else { throw ConnectionError(code: .protocolError, message: "PING payload must be 8 bytes") }
            if !frame.flags.contains(.ack) { output.append(Frames.ping(frame.payload, ack: true)) }
        case .goAway:
            let goAway = (try? Envelope.GoAway(serializedBytes: frame.payload)) ?? Envelope.GoAway(lastStreamID: 0, code: ConnectionErrorCode.protocolError.rawValue)
            let code = ConnectionErrorCode(rawValue: goAway.code)
            goAwayLastStreamID = goAway.lastStreamID
            unavailableReason = "the server sent GOAWAY(\(code))\(goAway.reason.isEmpty ? "" : ": \(goAway.reason)")"
            for id in streams.keys where id > goAway.lastStreamID {
                let stream = streams.removeValue(forKey: id)!
                handles[stream.handle] = nil
                stream.deadline?.cancel()
                fail(stream.responder, RPCError(code: .unavailable, message: unavailableReason!))
            }
        default:
            break
        }
    }

    private func receiveMessage(_ frame: Frame) throws {
        let length = frame.payload.readableBytes
        guard frame.streamID != 0 else { throw ConnectionError(code: .protocolError, message: "MESSAGE on stream 0") }
        guard connectionReceiveWindow.isOpen else { throw ConnectionError(code: .flowControlError, message: "MESSAGE while the connection window is exhausted") }
        connectionReceiveWindow.consume(length)
        // Messages are buffered per stream (bounded by the stream window), so connection credit
        // returns at once: a stream whose reader stalls never blocks the others.
        if let grant = connectionCredit.consume(length) {
            _ = connectionReceiveWindow.increment(grant)
            output.append(Frames.window(0, grant))
        }
        guard var stream = streams[frame.streamID] else {
            if frame.streamID >= nextStreamID { throw ConnectionError(code: .protocolError, message: "MESSAGE on stream \(frame.streamID), which was never opened") }
            return
        }
        guard stream.receiveWindow.isOpen else { throw ConnectionError(code: .flowControlError, message: "MESSAGE while the window of stream \(frame.streamID) is exhausted") }
        stream.receiveWindow.consume(length)
        switch stream.responder {
        case .unary:
            stream.response = frame.payload
            streams[frame.streamID] = stream
        case .streaming(let continuation):
            streams[frame.streamID] = stream
            continuation.yield(frame.payload)
        }
    }

    private func complete(_ stream: Stream, status: RPCStatus) {
        switch stream.responder {
        case .unary(let promise):
            if status.code != .ok {
                promise.fail(RPCError(status: status))
            } else if let response = stream.response {
                promise.succeed(response)
            } else {
                promise.fail(RPCError(code: .internal, message: "the server ended a unary call without a response"))
            }
        case .streaming(let continuation):
            if status.code == .ok { continuation.finish() } else { continuation.finish(throwing: RPCError(status: status)) }
        }
    }

    private func fail(_ responder: Responder, _ error: RPCError) {
        switch responder {
        case .unary(let promise): promise.fail(error)
        case .streaming(let continuation): continuation.finish(throwing: error)
        }
    }

    private func connectionError(_ error: ConnectionError) {
        unavailableReason = "connection error \(error)"
        output.append(Frames.goAway(lastStreamID: 0, code: error.code, reason: error.message))
        flush()
        context?.close(promise: nil)
    }

    // MARK: Outbound, from RPCClientConnection

    func startCall(_ handle: CallHandle, headers: Envelope.CallHeaders, request: ByteBuffer, responder: Responder) {
        if let reason = unavailableReason {
            fail(responder, RPCError(code: .unavailable, message: reason))
            return
        }
        guard request.readableBytes <= Int(remoteSettings.maxFrameSize) else {
            fail(responder, RPCError(code: .resourceExhausted, message: "a request of \(request.readableBytes) bytes exceeds the server's max_frame_size \(remoteSettings.maxFrameSize)"))
            return
        }
        guard streams.count < Int(remoteSettings.maxConcurrentStreams) else {
            fail(responder, RPCError(code: .resourceExhausted, message: "the server allows \(remoteSettings.maxConcurrentStreams) concurrent calls on one connection"))
            return
        }
        guard nextStreamID < UInt32(Int32.max) else {
            unavailableReason = "stream ids exhausted on this connection"
            fail(responder, RPCError(code: .unavailable, message: unavailableReason!))
            return
        }
        let id = nextStreamID
        nextStreamID += 1
        var stream = Stream(
            handle: ObjectIdentifier(handle), responder: responder, response: nil,
            sendWindow: FlowWindow(remoteSettings.initialWindow),
            receiveWindow: FlowWindow(localSettings.initialWindow),
            receiveCredit: CreditGrant(window: localSettings.initialWindow),
            pendingRequest: request, deadline: nil
        )
        if headers.timeoutMS > 0, let context {
            stream.deadline = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(clamping: headers.timeoutMS))) {
                self.abandon(id, error: RPCError(code: .deadlineExceeded, message: "the call's deadline passed"))
            }
        }
        streams[id] = stream
        handles[ObjectIdentifier(handle)] = id
        output.append(Frames.headers(id, headers))
        sendPendingRequest(id)
        scheduleFlush()
    }

    /// The application consumed `bytes` of a stream's messages: maybe grant credit.
    func consumed(_ handle: CallHandle, bytes: Int) {
        guard let id = handles[ObjectIdentifier(handle)], var stream = streams[id] else { return }
        if let grant = stream.receiveCredit.consume(bytes) {
            _ = stream.receiveWindow.increment(grant)
            output.append(Frames.window(id, grant))
            scheduleFlush()
        }
        streams[id] = stream
    }

    /// The caller gave up on the call: send CANCEL.
    func cancel(_ handle: CallHandle) {
        guard let id = handles[ObjectIdentifier(handle)] else { return }
        abandon(id, error: RPCError(code: .cancelled, message: "the call was cancelled"))
    }

    private func abandon(_ id: UInt32, error: RPCError) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        handles[stream.handle] = nil
        stream.deadline?.cancel()
        output.append(Frames.cancel(id))
        fail(stream.responder, error)
        flush()
    }

    /// Starts a graceful close: GOAWAY(NO_ERROR), then close when calls are done (or now).
    func close() {
        unavailableReason = unavailableReason ?? "the client closed the connection"
        output.append(Frames.goAway(lastStreamID: 0, code: .noError, reason: "client closing"))
        flush()
        context?.close(promise: nil)
    }

    private func sendPendingRequest(_ id: UInt32) {
        guard var stream = streams[id], let request = stream.pendingRequest else { return }
        guard stream.sendWindow.isOpen else { return }
        guard connectionSendWindow.isOpen else {
            if !blocked.contains(id) { blocked.append(id) }
            return
        }
        stream.pendingRequest = nil
        stream.sendWindow.consume(request.readableBytes)
        connectionSendWindow.consume(request.readableBytes)
        streams[id] = stream
        output.append(Frames.message(id, request, endStream: true))
    }

    private func flushBlocked() {
        let ids = blocked
        blocked = []
        for id in ids { sendPendingRequest(id) }
        for id in streams.keys where streams[id]?.pendingRequest != nil && !blocked.contains(id) { sendPendingRequest(id) }
    }

    /// Flushes once the event loop has run the tasks already queued, so calls started together
    /// leave in one TLS record and one system call.
    private func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flush()
        }
    }

    private func flush() {
        guard let context, let bytes = output.take(allocator: context.channel.allocator) else { return }
        context.writeAndFlush(NIOAny(bytes), promise: nil)
    }
}
