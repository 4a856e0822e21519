import CosiTLS
import CosiWire
import NIOCore

/// Identifies one client call across the hop to the event loop (streams get their ids there,
/// in the order their HEADERS are written).
final class CallHandle: Sendable {}

/// Runs the client side of COSI-RPC/1 on one connection, after the ``TLSHandler``.
///
/// Frames are decoded here and fed to ``ClientConnectionStateMachine``; the handler carries out
/// the actions: writing frames, completing the caller's promise or stream, deadline timers and
/// closing. It lives on its event loop; ``RPCClientConnection`` reaches it with `execute`.
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Where a call's responses go.
    enum Responder {
        case unary(EventLoopPromise<ByteBuffer>)
        case streaming(AsyncThrowingStream<ByteBuffer, any Error>.Continuation)
    }

    /// The state machine's token for a call.
    struct Call {
        var handle: ObjectIdentifier
        var responder: Responder
    }

    private var stateMachine: ClientConnectionStateMachine<Call>
    private let ready: EventLoopPromise<PeerIdentity?>
    private var decoder: FrameDecoder
    private let output = ConnectionOutput()
    private var context: ChannelHandlerContext?
    private var serverIdentity: PeerIdentity?
    /// Open calls by handle, and their deadline timers by stream.
    private var streamOfHandle: [ObjectIdentifier: UInt32] = [:]
    private var deadlines: [UInt32: Scheduled<Void>] = [:]
    /// Why the connection failed, when it did (a TLS refusal reads better than "closed").
    private var failure: String?

    init(settings: RPCSettings, ready: EventLoopPromise<PeerIdentity?>) {
        self.stateMachine = ClientConnectionStateMachine(localSettings: settings)
        self.ready = ready
        self.decoder = FrameDecoder(maxFrameSize: settings.maxFrameSize, requireSettingsFirst: true)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        output.attach(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        output.detach()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let handshake = event as? TLSHandshakeCompleted {
            serverIdentity = handshake.peer
            perform(stateMachine.start())
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if failure == nil { failure = (error as? TLSError)?.message ?? "\(error)" }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let actions = stateMachine.channelClosed(reason: failure)
        ready.fail(RPCError(code: .unavailable, message: stateMachine.unavailableReason ?? "the connection closed"))
        perform(actions, flush: false)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        decoder.append(unwrapInboundIn(data))
        while context.channel.isActive {
            switch decoder.nextFrameOrError() {
            case .success(let frame?):
                perform(stateMachine.receive(frame), flush: false)
                continue
            case .success(nil):
                break
            case .failure(let error):
                perform(stateMachine.connectionError(error), flush: false)
            }
            break
        }
        output.flush()
    }

    // MARK: From RPCClientConnection

    func startCall(_ handle: CallHandle, headers: Envelope.CallHeaders, request: ByteBuffer, responder: Responder) {
        let kind: ClientConnectionStateMachine<Call>.Kind = if case .unary = responder { .unary } else { .serverStreaming }
        let call = Call(handle: ObjectIdentifier(handle), responder: responder)
        let (id, actions) = stateMachine.startCall(headers, request: request, kind: kind, call: call)
        if let id {
            streamOfHandle[call.handle] = id
            if headers.timeoutMS > 0, let context {
                deadlines[id] = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(clamping: headers.timeoutMS))) {
                    self.perform(self.stateMachine.cancel(id, error: RPCError(code: .deadlineExceeded, message: "the call's deadline passed")))
                }
            }
        }
        perform(actions)
    }

    /// The application consumed `bytes` of a stream's messages: maybe grant credit.
    func consumed(_ handle: CallHandle, bytes: Int) {
        guard let id = streamOfHandle[ObjectIdentifier(handle)] else { return }
        perform(stateMachine.consumed(bytes, on: id))
    }

    /// The caller gave up on the call: CANCEL.
    func cancel(_ handle: CallHandle) {
        guard let id = streamOfHandle[ObjectIdentifier(handle)] else { return }
        perform(stateMachine.cancel(id, error: RPCError(code: .cancelled, message: "the call was cancelled")))
    }

    /// Starts a graceful close: GOAWAY(NO_ERROR), then close.
    func close() {
        perform(stateMachine.close())
    }

    // MARK: Actions

    private func perform(_ actions: [ClientConnectionStateMachine<Call>.Action], flush: Bool = true) {
        for action in actions {
            switch action {
            case .send(let frame):
                output.append(frame)
            case .ready:
                ready.succeed(serverIdentity)
            case .deliver(let call, let message):
                if case .streaming(let continuation) = call.responder { continuation.yield(message) }
            case .finish(let id, let call, let result):
                streamOfHandle[call.handle] = nil
                deadlines.removeValue(forKey: id)?.cancel()
                switch (call.responder, result) {
                case (.unary(let promise), .success(let response?)):
                    promise.succeed(response)
                case (.unary(let promise), .success(nil)):
                    promise.fail(RPCError(code: .internal, message: "the server ended a unary call without a response"))
                case (.unary(let promise), .failure(let error)):
                    promise.fail(error)
                case (.streaming(let continuation), .success):
                    continuation.finish()
                case (.streaming(let continuation), .failure(let error)):
                    continuation.finish(throwing: error)
                }
            case .close:
                output.flush()
                context?.close(promise: nil)
            }
        }
        if flush { output.scheduleFlush() }
    }
}
