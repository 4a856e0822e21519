import CosiTLS
import CosiWire
import DequeModule
import Logging
import NIOCore

/// Server-side connection options.
public struct ServerConnectionOptions: Sendable {
    /// What this server announces in SETTINGS.
    public var settings: RPCSettings = .defaults
    /// An idle connection is pinged after this long without frames.
    public var keepaliveInterval: TimeAmount = .seconds(60)
    /// A ping not acknowledged within this time closes the connection.
    public var keepaliveTimeout: TimeAmount = .seconds(20)
    /// How long a graceful shutdown (`ChannelShouldQuiesceEvent`) lets calls in flight finish.
    public var gracePeriod: TimeAmount = .seconds(10)
    /// How long after the TLS handshake the client's SETTINGS may take.
    public var settingsTimeout: TimeAmount = .seconds(10)
    public init() {}
}

/// Runs the server side of COSI-RPC/1 on one connection, after the ``TLSHandler`` (or the
/// ``PeerCredentialsHandler`` of a Unix socket).
///
/// Frames are decoded here and fed to ``ServerConnectionStateMachine``; the handler carries out
/// the actions it returns: writing frames, passing complete calls on, cancelling them, closing.
/// A call whose handler is asynchronous leaves as a ``ServerCall`` read (the pipeline's tail,
/// an `NIOAsyncChannel`, hands it to the server's task group); quick inline handlers run here.
/// The handler never leaves its event loop; calls reach it back through their ``CallSink``.
///
/// `ChannelShouldQuiesceEvent` (from NIOExtras' `ServerQuiescingHelper`) starts a graceful
/// shutdown: GOAWAY, calls that wait on others end with UNAVAILABLE, the rest have the grace
/// period.
///
/// Backpressure: while the socket's outbound buffer is full (the channel is not writable), the
/// handler neither reads nor decodes (what was read stays in the decoder), MESSAGE frames wait
/// in their streams' queues (their writers wait too), and at most ``outputAllowance`` bytes of
/// them are handed to the connection per flush. So what a peer that does not read makes the
/// server hold is bounded, whatever windows it grants. Frames the server must send anyway while
/// blocked (TRAILERS, acknowledgements) are capped at ``maxFramesWhileBlocked``.
final class ServerConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ServerCall
    typealias OutboundIn = Never
    typealias OutboundOut = ByteBuffer

    private struct RunningCall {
        var cancellation: CallCancellation
        /// A costly answer being encoded in a task (see ``maxCostlyCalls``).
        var costly = false
        var deadline: Scheduled<Void>?
        var waitsOnOthers: Bool
        var method: String
        var started: ContinuousClock.Instant
        /// The stream of a call produced on this loop (``RPCHandler/serverStreamingOnLoop(_:)``).
        var stream: ServerStream?
    }

    private let methods: RPCMethodTable
    private let options: ServerConnectionOptions
    private var logger: Logger
    private var stateMachine: ServerConnectionStateMachine<EventLoopPromise<Void>>
    private var decoder: FrameDecoder
    private let output = ConnectionOutput()
    private var context: ChannelHandlerContext?
    private var peer: PeerIdentity?
    private var remoteAddress = "?"
    private var calls: [UInt32: RunningCall] = [:]
    private var lastActivity = NIODeadline.now()
    private var keepaliveTask: Scheduled<Void>?
    private var pingTimeout: Scheduled<Void>?
    private var graceTimer: Scheduled<Void>?
    private var callCount = 0
    private var closeReason: String?
    private var settingsTimer: Scheduled<Void>?
    private var expiryTimer: Scheduled<Void>?
    private var certificate: PeerCertificate?
    /// A read was asked for while the channel was not writable: issued once it is.
    private var pendingRead = false
    private var framesWhileBlocked = 0
    private var pumping = false
    /// Costly answers being encoded in tasks, and those waiting to be.
    private var costlyRunning = 0
    private var costlyWaiting: Deque<(streamID: UInt32, encode: @Sendable () -> ByteBuffer)> = []

    /// Costly answers (a Get of a large resource) computed at once per connection, at most; the
    /// others wait for one to end, and none starts while the peer does not read. So what they
    /// make the server hold per connection is bounded by a few answers.
    static let maxCostlyCalls = 4

    /// MESSAGE payload bytes handed to the connection per flush, at most (plus one message).
    static let outputAllowance = 1 << 20
    /// Bytes appended by handling inbound frames before they are flushed (so that the
    /// channel's writability reflects them).
    static let flushThreshold = 64 << 10
    /// Frames the server may queue while the peer does not read before it gives up on it
    /// (GOAWAY ENHANCE_YOUR_CALM), as swift-nio-http2 does for control frames.
    static let maxFramesWhileBlocked = 10_000

    init(methods: RPCMethodTable, options: ServerConnectionOptions, logger: Logger) {
        self.methods = methods
        self.options = options
        self.logger = logger
        self.stateMachine = ServerConnectionStateMachine(localSettings: options.settings)
        self.decoder = FrameDecoder(maxFrameSize: options.settings.maxFrameSize, requireSettingsFirst: true)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        output.attach(context)
        output.afterFlush = { [unowned self] in self.pumpOutput() }
        remoteAddress = context.channel.remoteAddress?.description ?? "?"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        output.detach()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let handshake as TLSHandshakeCompleted:
            peer = handshake.peer
            certificate = handshake.certificate
            if let seconds = handshake.certificate?.secondsUntilExpiry() {
                // The connection lasts as long as the certificate that opened it.
                expiryTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(max(0, seconds))) {
                    self.revoke("the client certificate expired")
                }
            }
            logger[metadataKey: "peer"] = "\(handshake.peer?.commonName ?? "?")"
            logger.info("connection open", metadata: [
                "remote": "\(remoteAddress)",
                "roles": "\(handshake.peer?.organizations.joined(separator: ",") ?? "")",
                "sha256": "\(handshake.peer?.fingerprint ?? "")",
            ])
            RPCMetrics.connections.increment()
            perform(stateMachine.start())
            perform(stateMachine.allowOutput(Self.outputAllowance))
            lastActivity = context.eventLoop.now
            scheduleKeepalive(after: options.keepaliveInterval)
            settingsTimer = context.eventLoop.assumeIsolated().scheduleTask(in: options.settingsTimeout) {
                guard !self.stateMachine.hasReceivedSettings else { return }
                self.closeReason = "no SETTINGS within \(self.options.settingsTimeout)"
                self.perform(self.stateMachine.connectionError(ConnectionError(code: .protocolError, message: "no SETTINGS within the timeout")))
            }
        case is ChannelShouldQuiesceEvent:
            beginGracefulShutdown()
            return
        case let change as TrustChanged:
            if let certificate, let reason = certificate.verificationFailure(against: change.context) {
                revoke("the client certificate no longer verifies: \(reason)")
            }
            return
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Ends every call with PERMISSION_DENIED and closes with GOAWAY: the client may no longer
    /// be served.
    private func revoke(_ reason: String) {
        guard !stateMachine.isClosed else { return }
        closeReason = reason
        logger.notice("connection revoked", metadata: ["remote": "\(remoteAddress)", "reason": "\(reason)"])
        perform(stateMachine.revoke(RPCStatus(code: .permissionDenied, message: reason)))
    }

    private func beginGracefulShutdown() {
        guard let context, closeReason == nil else { return }
        closeReason = "server shutting down"
        if peer == nil {
            // Still handshaking: nothing to drain.
            context.close(promise: nil)
            return
        }
        perform(stateMachine.beginShutdown())
        // Calls that wait on others end now, so their clients can resume elsewhere.
        for (id, call) in calls.sorted(by: { $0.key < $1.key }) where call.waitsOnOthers {
            perform(stateMachine.abortCall(id, status: RPCStatus(code: .unavailable, message: "server shutting down")))
        }
        graceTimer = context.eventLoop.assumeIsolated().scheduleTask(in: options.gracePeriod) {
            self.perform(self.stateMachine.forceClose())
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        decoder.append(unwrapInboundIn(data))
        processFrames()
    }

    /// Handles the frames buffered in the decoder while the peer reads what the server sends;
    /// stops when the socket's outbound buffer is full, leaving the rest for
    /// `channelWritabilityChanged`.
    private func processFrames() {
        guard let context else { return }
        while !stateMachine.isClosed, context.channel.isWritable {
            switch decoder.nextFrameOrError() {
            case .success(let frame?):
                // Activity is a complete frame, not a byte.
                let now = context.eventLoop.now
                if frame.type != .ping || frame.flags.contains(.ack) { lastActivity = now }
                if frame.type == .goAway, closeReason == nil { closeReason = "the client sent GOAWAY" }
                perform(stateMachine.receive(frame, now: now), flush: false)
                if output.bufferedBytes >= Self.flushThreshold { output.flush() }
                continue
            case .success(nil):
                break
            case .failure(let error):
                perform(stateMachine.connectionError(error))
            }
            break
        }
        output.flush()
    }

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            // The peer does not read what we send: stop reading what it sends.
            pendingRead = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            framesWhileBlocked = 0
            output.flush()
            launchWaitingCostlyCalls()
            processFrames()
            if pendingRead, context.channel.isWritable {
                pendingRead = false
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Hands messages that wait for output allowance to the connection while the socket takes
    /// them (after every flush).
    private func pumpOutput() {
        guard !pumping else { return }
        pumping = true
        defer { pumping = false }
        while let context, context.channel.isWritable, stateMachine.hasWaitingOutput {
            perform(stateMachine.allowOutput(Self.outputAllowance), flush: false)
            guard output.bufferedBytes > 0 else { break }
            output.flush()
        }
        if let context, context.channel.isWritable, !stateMachine.hasWaitingOutput {
            // Nothing waits: the next messages may go at once, up to the allowance.
            perform(stateMachine.allowOutput(Self.outputAllowance), flush: false)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        settingsTimer?.cancel()
        expiryTimer?.cancel()
        keepaliveTask?.cancel()
        pingTimeout?.cancel()
        graceTimer?.cancel()
        perform(stateMachine.channelClosed(), flush: false)
        if peer != nil {
            RPCMetrics.connections.decrement()
            logger.info("connection closed", metadata: [
                "remote": "\(remoteAddress)", "calls": .stringConvertible(callCount),
                "reason": "\(closeReason ?? "peer closed")",
            ])
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? TLSError {
            RPCMetrics.handshakeFailure("\(error.code)")
            logger.notice("TLS handshake refused", metadata: ["remote": "\(remoteAddress)", "error": "\(error.message)"])
        } else {
            logger.debug("connection error", metadata: ["remote": "\(remoteAddress)", "error": "\(error)"])
        }
        closeReason = closeReason ?? "\(error)"
        context.close(promise: nil)
    }

    // MARK: Calls

    /// A message of a streaming call, from its task (through ``CallSink``).
    func enqueue(_ streamID: UInt32, _ message: ByteBuffer, completion: EventLoopPromise<Void>?) {
        perform(stateMachine.sendMessage(streamID, message, completion: completion))
    }

    /// The end of a call, from its task (through ``CallSink``) or its ``ServerStream``.
    func finish(_ streamID: UInt32, response: ByteBuffer?, status: RPCStatus) {
        guard let call = calls.removeValue(forKey: streamID) else { return }
        call.deadline?.cancel()
        RPCMetrics.call(call.method, status, started: call.started)
        perform(stateMachine.finishCall(streamID, response: response, status: status))
        if call.costly { costlyCallEnded() }
        call.stream?.ended(status)
    }

    /// A message of a call produced on this loop (from its ``ServerStream``); returns whether
    /// the stream's queue is empty after it (the message has left). A message larger than the
    /// client's frame limit ends the call with RESOURCE_EXHAUSTED.
    func streamSend(_ streamID: UInt32, _ message: ByteBuffer) -> Bool {
        if let error = stateMachine.oversize(message) {
            finish(streamID, response: nil, status: error.status)
            return true
        }
        perform(stateMachine.sendMessage(streamID, message, completion: nil))
        return stateMachine.isDrained(streamID)
    }

    private func costlyCallEnded() {
        costlyRunning -= 1
        launchWaitingCostlyCalls()
    }

    /// Starts the costly calls that wait, as far as the limit and the peer's reading allow.
    private func launchWaitingCostlyCalls() {
        guard let context else { return }
        while costlyRunning < Self.maxCostlyCalls, context.channel.isWritable, let next = costlyWaiting.popFirst() {
            // A call that ended while it waited (cancelled, its deadline) is gone.
            encodeInTask(next.streamID, next.encode)
        }
    }

    private func callContext(_ headers: Envelope.CallHeaders, _ context: ChannelHandlerContext) -> CallContext {
        // The loop's clock (the real one, or a test's).
        let deadline = headers.timeoutMS > 0 ? context.eventLoop.now + .milliseconds(Int64(clamping: headers.timeoutMS)) : nil
        return CallContext(
            method: headers.method, metadata: headers.metadata, deadline: deadline,
            peer: peer ?? PeerIdentity(commonName: "", organizations: [], fingerprint: ""),
            remoteAddress: remoteAddress
        )
    }

    /// A call's HEADERS: an unknown method, or a caller the method's admission check refuses,
    /// ends the call now, before its request is buffered.
    private func admitCall(_ streamID: UInt32, headers: Envelope.CallHeaders) {
        guard let context else { return }
        let status: RPCStatus
        if let method = methods[headers.method] {
            guard let admit = method.admit else { return }
            do {
                try admit(callContext(headers, context))
                return
            } catch let error as RPCError {
                status = error.status
            } catch {
                status = RPCStatus(code: .permissionDenied, message: "\(error)")
            }
        } else {
            status = RPCStatus(code: .unimplemented, message: "unknown method \(headers.method)")
        }
        callCount += 1
        RPCMetrics.call(headers.method, status, started: ContinuousClock.now)
        perform(stateMachine.refuseCall(streamID, status: status), flush: false)
    }

    private func startCall(_ streamID: UInt32, headers: Envelope.CallHeaders, request: ByteBuffer) {
        guard let context else { return }
        callCount += 1
        let started = ContinuousClock.now
        guard let method = methods[headers.method] else {
            let status = RPCStatus(code: .unimplemented, message: "unknown method \(headers.method)")
            RPCMetrics.call(headers.method, status, started: started)
            perform(stateMachine.finishCall(streamID, status: status), flush: false)
            return
        }
        let callContext = callContext(headers, context)
        switch method.handler {
        case .unaryOnLoop(let handler) where request.readableBytes <= RPCHandler.onLoopRequestLimit:
            startUnaryOnLoop(streamID, method: method.name, handler, request: request, context: callContext, started: started)
        case .serverStreamingOnLoop(let handler) where request.readableBytes <= RPCHandler.onLoopRequestLimit:
            track(streamID, RunningCall(cancellation: CallCancellation(), waitsOnOthers: method.waitsOnOthers, method: method.name, started: started), deadline: callContext.deadline)
            let body: @Sendable (ServerStream) -> Void
            // The stream may live long, and what it keeps of its request must not hold the
            // whole read buffer.
            do { body = try handler.prepare(ServerConnectionStateMachine<EventLoopPromise<Void>>.owned(request), callContext) } catch {
                return finish(streamID, response: nil, status: Self.status(of: error))
            }
            runOnLoop(streamID, body)
        default:
            // A task handler, or an on-loop one whose request is too large to decode here.
            launch(streamID, method: method, request: request, context: callContext, started: started)
        }
    }

    /// A unary call on this loop. An answer given at once (a lookup) finishes the call at once:
    /// no deadline timer, no bookkeeping; one given later reaches the call through the loop.
    private func startUnaryOnLoop(
        _ streamID: UInt32, method: String, _ handler: OnLoopHandler<UnaryResponder>, request: ByteBuffer, context callContext: CallContext,
        started: ContinuousClock.Instant
    ) {
        guard let context else { return }
        let body: @Sendable (UnaryResponder) -> Void
        do { body = try handler.prepare(request, callContext) } catch {
            let status = Self.status(of: error)
            RPCMetrics.call(method, status, started: started)
            perform(stateMachine.finishCall(streamID, response: nil, status: status), flush: false)
            return
        }
        let eventLoop = context.eventLoop
        let connection = NIOLoopBound(self, eventLoop: eventLoop)
        // `.starting` while `body` runs: an answer given then is kept here, not delivered.
        let phase = NIOLoopBoundBox(ImmediateAnswer.starting, eventLoop: eventLoop)
        body(UnaryResponder { result in
            guard eventLoop.inEventLoop else {
                return eventLoop.execute { connection.value.answer(streamID, result) }
            }
            if case .starting = phase.value {
                phase.value = .answered(result)
            } else {
                connection.value.answer(streamID, result)
            }
        })
        switch phase.value {
        case .answered(.success(let answer)) where !answer.costly:
            RPCMetrics.call(method, .ok, started: started)
            perform(stateMachine.finishCall(streamID, response: answer.encode(), status: .ok), flush: false)
        case .answered(.failure(let error)):
            let status = Self.status(of: error)
            RPCMetrics.call(method, status, started: started)
            perform(stateMachine.finishCall(streamID, response: nil, status: status), flush: false)
        case .answered(let result):
            track(streamID, RunningCall(cancellation: CallCancellation(), waitsOnOthers: false, method: method, started: started), deadline: callContext.deadline)
            answer(streamID, result)
        case .starting, .running:
            phase.value = .running
            track(streamID, RunningCall(cancellation: CallCancellation(), waitsOnOthers: false, method: method, started: started), deadline: callContext.deadline)
        }
    }

    private enum ImmediateAnswer {
        case starting
        case answered(Result<UnaryAnswer, any Error>)
        case running
    }

    /// Runs the body of a unary on-loop handler for a tracked call (one whose request was
    /// prepared in a task).
    func runOnLoop(_ streamID: UInt32, _ body: @Sendable (UnaryResponder) -> Void) {
        guard let context, calls[streamID] != nil else { return }
        let eventLoop = context.eventLoop
        let connection = NIOLoopBound(self, eventLoop: eventLoop)
        body(UnaryResponder { result in
            if eventLoop.inEventLoop {
                connection.value.answer(streamID, result)
            } else {
                eventLoop.execute { connection.value.answer(streamID, result) }
            }
        })
    }

    /// Runs the body of a streaming on-loop handler for a tracked call.
    func runOnLoop(_ streamID: UInt32, _ body: @Sendable (ServerStream) -> Void) {
        guard let context, calls[streamID] != nil else { return }
        let stream = ServerStream(connection: self, eventLoop: context.eventLoop, streamID: streamID)
        calls[streamID]?.stream = stream
        body(stream)
    }

    /// The answer of a tracked unary call (dropped if the call has ended). A costly one is
    /// encoded in a task, when the limit and the peer's reading allow.
    private func answer(_ streamID: UInt32, _ result: Result<UnaryAnswer, any Error>) {
        guard let context, calls[streamID] != nil else { return }
        switch result {
        case .failure(let error):
            finish(streamID, response: nil, status: Self.status(of: error))
        case .success(let answer) where !answer.costly:
            finish(streamID, response: answer.encode(), status: .ok)
        case .success(let answer):
            if costlyRunning < Self.maxCostlyCalls, context.channel.isWritable {
                encodeInTask(streamID, answer.encode)
            } else {
                costlyWaiting.append((streamID, answer.encode))
            }
        }
    }

    /// Hands a costly answer's encoding to a task.
    private func encodeInTask(_ streamID: UInt32, _ encode: @escaping @Sendable () -> ByteBuffer) {
        guard let context, calls[streamID] != nil else { return }
        let cancellation = CallCancellation()
        calls[streamID]?.costly = true
        calls[streamID]?.cancellation = cancellation
        costlyRunning += 1
        context.fireChannelRead(wrapInboundOut(ServerCall(
            work: .encode(encode), sink: CallSink(handler: self, eventLoop: context.eventLoop, streamID: streamID), cancellation: cancellation
        )))
    }

    private static func status(of error: any Error) -> RPCStatus {
        (error as? RPCError)?.status ?? RPCStatus(code: .unknown, message: "\(error)")
    }

    /// Records a running call, with a timer that ends it at its deadline.
    private func track(_ streamID: UInt32, _ call: RunningCall, deadline: NIODeadline?) {
        guard let context else { return }
        var running = call
        if let deadline {
            running.deadline = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
                guard let call = self.calls[streamID] else { return }
                RPCMetrics.call(call.method, RPCStatus(code: .deadlineExceeded), started: call.started)
                // abortCall's cancelCall action stops the call's task.
                self.perform(self.stateMachine.abortCall(streamID, status: RPCStatus(code: .deadlineExceeded, message: "the call's deadline passed")))
            }
        }
        calls[streamID] = running
    }

    /// Runs a call as a task (handed to the server's task group through the pipeline).
    private func launch(_ streamID: UInt32, method: RPCMethod, request: ByteBuffer, context callContext: CallContext, started: ContinuousClock.Instant) {
        guard let context else { return }
        let running = RunningCall(cancellation: CallCancellation(), waitsOnOthers: method.waitsOnOthers, method: method.name, started: started)
        track(streamID, running, deadline: callContext.deadline)
        let call = ServerCall(
            work: .handler(method.handler, request: ServerConnectionStateMachine<EventLoopPromise<Void>>.owned(request), context: callContext),
            sink: CallSink(handler: self, eventLoop: context.eventLoop, streamID: streamID),
            cancellation: running.cancellation
        )
        context.fireChannelRead(wrapInboundOut(call))
    }

    // MARK: Actions

    private func perform(_ actions: [ServerConnectionStateMachine<EventLoopPromise<Void>>.Action], flush: Bool = true) {
        for action in actions {
            switch action {
            case .send(let frame):
                output.append(frame)
                if let context, !context.channel.isWritable {
                    framesWhileBlocked += 1
                    if framesWhileBlocked == Self.maxFramesWhileBlocked {
                        closeReason = "the client does not read"
                        perform(stateMachine.connectionError(ConnectionError(
                            code: .enhanceYourCalm, message: "more than \(Self.maxFramesWhileBlocked) frames queued for a client that does not read"
                        )))
                    }
                }
            case .admitCall(let id, let headers):
                admitCall(id, headers: headers)
            case .startCall(let id, let headers, let request):
                startCall(id, headers: headers, request: request)
            case .cancelCall(let id):
                if let call = calls.removeValue(forKey: id) {
                    call.deadline?.cancel()
                    call.cancellation.cancel()
                    if call.costly { costlyCallEnded() }
                    call.stream?.ended(RPCStatus(code: .cancelled, message: "the call was ended by the connection"))
                }
            case .completeWrite(let promise):
                promise.succeed()
            case .failWrite(let promise, let error):
                promise.fail(error)
            case .streamDrained(let id):
                calls[id]?.stream?.drained()
            case .pingAcknowledged:
                pingTimeout?.cancel()
                pingTimeout = nil
            case .close:
                output.flush()
                context?.close(promise: nil)
            }
        }
        if flush { output.scheduleFlush() }
    }

    // MARK: Keepalive

    /// Pings a connection idle for `interval`; a ping unanswered within the timeout closes it.
    private func scheduleKeepalive(after delay: TimeAmount) {
        guard let context else { return }
        keepaliveTask = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            self.keepaliveTick()
        }
    }

    private func keepaliveTick() {
        guard let context else { return }
        let interval = options.keepaliveInterval
        let idle = context.eventLoop.now - lastActivity
        guard idle >= interval else {
            scheduleKeepalive(after: interval - idle)
            return
        }
        if pingTimeout == nil {
            var payload = ByteBuffer()
            payload.writeInteger(UInt64.random(in: .min ... .max))
            output.append(Frames.ping(payload, ack: false))
            output.flush()
            pingTimeout = context.eventLoop.assumeIsolated().scheduleTask(in: options.keepaliveTimeout) {
                self.closeReason = "keepalive ping not acknowledged"
                self.context?.close(promise: nil)
            }
        }
        scheduleKeepalive(after: interval)
    }
}
