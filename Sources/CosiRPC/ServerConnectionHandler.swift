import CosiTLS
import CosiWire
import Logging
import NIOCore

/// Asks a server connection to shut down gracefully (sent as a user outbound event).
struct GracefulShutdownEvent: Sendable {
    var gracePeriod: TimeAmount
}

/// Server-side connection options.
public struct ServerConnectionOptions: Sendable {
    /// What this server announces in SETTINGS.
    public var settings: RPCSettings = .defaults
    /// An idle connection is pinged after this long without frames.
    public var keepaliveInterval: TimeAmount = .seconds(60)
    /// A ping not acknowledged within this time closes the connection.
    public var keepaliveTimeout: TimeAmount = .seconds(20)
    public init() {}
}

/// Sends responses of one call from its handler task to the connection's event loop.
final class CallSink: Sendable {
    private let handler: NIOLoopBound<ServerConnectionHandler>
    private let eventLoop: any EventLoop
    let streamID: UInt32

    init(handler: ServerConnectionHandler, eventLoop: any EventLoop, streamID: UInt32) {
        self.handler = NIOLoopBound(handler, eventLoop: eventLoop)
        self.eventLoop = eventLoop
        self.streamID = streamID
    }

    func write(_ message: ByteBuffer) async throws {
        let promise = eventLoop.makePromise(of: Void.self)
        eventLoop.execute { [handler, streamID] in handler.value.enqueue(streamID, message, completion: promise) }
        try await promise.futureResult.get()
    }

    /// Queues several messages in one hop; returns when the last has been handed to the
    /// connection (or fails as soon as one cannot be sent).
    func write(contentsOf messages: [ByteBuffer]) async throws {
        guard let last = messages.last else { return }
        let promise = eventLoop.makePromise(of: Void.self)
        eventLoop.execute { [handler, streamID] in
            for message in messages.dropLast() { handler.value.enqueue(streamID, message, completion: nil) }
            handler.value.enqueue(streamID, last, completion: promise)
        }
        try await promise.futureResult.get()
    }

    func finish(response: ByteBuffer?, status: RPCStatus) {
        eventLoop.execute { [handler, streamID] in handler.value.finish(streamID, response: response, status: status) }
    }
}

/// Runs the server side of COSI-RPC/1 on one connection, after the ``TLSHandler``.
///
/// Frames are decoded here and fed to ``ServerConnectionStateMachine``; the handler carries out
/// the actions it returns: writing frames, starting call handlers as tasks, cancelling them, and
/// closing. It never leaves its event loop; call handlers reach it through ``CallSink``.
final class ServerConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Never
    typealias OutboundOut = ByteBuffer

    private struct RunningCall {
        var task: Task<Void, Never>?
        var deadline: Scheduled<Void>?
        var waitsOnOthers: Bool
        var method = ""
        var started = ContinuousClock.now
    }

    private let methods: RPCMethodTable
    private let options: ServerConnectionOptions
    private var logger: Logger
    private var stateMachine: ServerConnectionStateMachine<EventLoopPromise<Void>>
    private var decoder: FrameDecoder
    private var output: FrameWriteBuffer
    private var context: ChannelHandlerContext?
    private var peer: PeerIdentity?
    private var remoteAddress = "?"
    private var calls: [UInt32: RunningCall] = [:]
    private var lastActivity = NIODeadline.now()
    private var keepaliveTask: RepeatedTask?
    private var pingTimeout: Scheduled<Void>?
    private var graceTimer: Scheduled<Void>?
    private var callCount = 0
    private var closeReason: String?
    private var flushScheduled = false

    init(methods: RPCMethodTable, options: ServerConnectionOptions, logger: Logger) {
        self.methods = methods
        self.options = options
        self.logger = logger
        self.stateMachine = ServerConnectionStateMachine(localSettings: options.settings)
        self.decoder = FrameDecoder(maxFrameSize: options.settings.maxFrameSize, requireSettingsFirst: true)
        self.output = FrameWriteBuffer(allocator: ByteBufferAllocator())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        remoteAddress = context.channel.remoteAddress?.description ?? "?"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let handshake = event as? TLSHandshakeCompleted {
            peer = handshake.peer
            logger[metadataKey: "peer"] = "\(handshake.peer?.commonName ?? "?")"
            logger.info("connection open", metadata: [
                "remote": "\(remoteAddress)",
                "roles": "\(handshake.peer?.organizations.joined(separator: ",") ?? "")",
                "sha256": "\(handshake.peer?.fingerprint ?? "")",
            ])
            RPCMetrics.connections.increment()
            perform(stateMachine.start())
            startKeepalive(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let shutdown = event as? GracefulShutdownEvent else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        promise?.succeed()
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
        graceTimer = context.eventLoop.assumeIsolated().scheduleTask(in: shutdown.gracePeriod) {
            self.perform(self.stateMachine.forceClose())
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActivity = .now()
        decoder.append(unwrapInboundIn(data))
        let now = lastActivity
        while !stateMachine.isClosed {
            let frame: Frame?
            do {
                frame = try decoder.nextFrame()
            } catch {
                let code: ConnectionErrorCode = error.code == .frameTooLarge ? .frameSizeError : .protocolError
                perform(stateMachine.connectionError(ConnectionError(code: code, message: error.message)))
                break
            }
            guard let frame else { break }
            perform(stateMachine.receive(frame, now: now), flush: false)
        }
        flushOutput()
    }

    func channelInactive(context: ChannelHandlerContext) {
        keepaliveTask?.cancel()
        pingTimeout?.cancel()
        graceTimer?.cancel()
        perform(stateMachine.channelClosed(), flush: false)
        if peer != nil {
            RPCMetrics.connections.decrement()
            logger.info("connection closed", metadata: [
                "remote": "\(remoteAddress)", "calls": "\(callCount)",
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
        closeReason = "\(error)"
        context.close(promise: nil)
    }

    // MARK: Calls

    fileprivate func enqueue(_ streamID: UInt32, _ message: ByteBuffer, completion: EventLoopPromise<Void>?) {
        perform(stateMachine.sendMessage(streamID, message, completion: completion))
    }

    fileprivate func finish(_ streamID: UInt32, response: ByteBuffer?, status: RPCStatus) {
        guard let call = calls.removeValue(forKey: streamID) else { return }
        call.deadline?.cancel()
        RPCMetrics.call(call.method, status, started: call.started)
        perform(stateMachine.finishCall(streamID, response: response, status: status))
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
        let deadline = headers.timeoutMS > 0 ? NIODeadline.now() + .milliseconds(Int64(clamping: headers.timeoutMS)) : nil
        let callContext = CallContext(
            method: headers.method, metadata: headers.metadata, deadline: deadline,
            peer: peer ?? PeerIdentity(commonName: "", organizations: [], fingerprint: ""),
            remoteAddress: remoteAddress
        )
        if case .unaryInline(let body) = method.handler {
            // Quick handlers answer on the event loop itself: no task, no deadline timer.
            let status: RPCStatus
            var response: ByteBuffer?
            do {
                response = try body(request, callContext)
                status = .ok
            } catch let error as RPCError {
                status = error.status
            } catch {
                status = RPCStatus(code: .unknown, message: "\(error)")
            }
            RPCMetrics.call(headers.method, status, started: started)
            perform(stateMachine.finishCall(streamID, response: response, status: status), flush: false)
            return
        }
        var call = RunningCall(task: nil, deadline: nil, waitsOnOthers: method.waitsOnOthers, method: headers.method, started: started)
        if let deadline {
            call.deadline = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
                guard let running = self.calls[streamID] else { return }
                RPCMetrics.call(running.method, RPCStatus(code: .deadlineExceeded), started: running.started)
                // abortCall's cancelCall action stops the handler task.
                self.perform(self.stateMachine.abortCall(streamID, status: RPCStatus(code: .deadlineExceeded, message: "the call's deadline passed")))
            }
        }
        let sink = CallSink(handler: self, eventLoop: context.eventLoop, streamID: streamID)
        let handler = method.handler
        call.task = Self.spawn(handler, request: request, context: callContext, sink: sink)
        calls[streamID] = call
    }

    private static func spawn(_ handler: RPCHandler, request: ByteBuffer, context: CallContext, sink: CallSink) -> Task<Void, Never> {
        Task { await run(handler, request: request, context: context, sink: sink) }
    }

    private static func run(_ handler: RPCHandler, request: ByteBuffer, context: CallContext, sink: CallSink) async {
        do {
            switch handler {
            case .unary(let body):
                let response = try await body(request, context)
                sink.finish(response: response, status: .ok)
            case .serverStreaming(let body):
                try await body(request, context, ResponseWriter(sink: sink))
                sink.finish(response: nil, status: .ok)
            case .unaryInline(let body):
                sink.finish(response: try body(request, context), status: .ok)
            }
        } catch let error as RPCError {
            sink.finish(response: nil, status: error.status)
        } catch is CancellationError {
            sink.finish(response: nil, status: RPCStatus(code: .cancelled, message: "the call was cancelled"))
        } catch {
            sink.finish(response: nil, status: RPCStatus(code: .unknown, message: "\(error)"))
        }
    }

    // MARK: Actions

    private func perform(_ actions: [ServerConnectionStateMachine<EventLoopPromise<Void>>.Action], flush: Bool = true) {
        for action in actions {
            switch action {
            case .send(let frame):
                output.append(frame)
            case .startCall(let id, let headers, let request):
                startCall(id, headers: headers, request: request)
            case .cancelCall(let id):
                if let call = calls.removeValue(forKey: id) {
                    call.deadline?.cancel()
                    call.task?.cancel()
                }
            case .completeWrite(let promise):
                promise.succeed()
            case .failWrite(let promise, let error):
                promise.fail(error)
            case .pingAcknowledged:
                pingTimeout?.cancel()
                pingTimeout = nil
            case .close:
                flushOutput()
                context?.close(promise: nil)
            }
        }
        if flush { scheduleFlush() }
    }

    /// Flushes once the event loop has run the tasks already queued: responses that complete
    /// together (many calls in flight) leave in one TLS record and one system call.
    private func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flushOutput()
        }
    }

    private func flushOutput() {
        guard let context, let bytes = output.take(allocator: context.channel.allocator) else { return }
        context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
    }

    // MARK: Keepalive

    private func startKeepalive(context: ChannelHandlerContext) {
        let interval = options.keepaliveInterval
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepaliveTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let handler = bound.value
            handler.keepaliveTick(interval: interval)
        }
    }

    private func keepaliveTick(interval: TimeAmount) {
        do {
            guard let context = self.context, self.pingTimeout == nil else { return }
            guard NIODeadline.now() - self.lastActivity >= interval else { return }
            var payload = ByteBuffer()
            payload.writeInteger(UInt64.random(in: .min ... .max))
            self.output.append(Frames.ping(payload, ack: false))
            self.flushOutput()
            self.pingTimeout = context.eventLoop.assumeIsolated().scheduleTask(in: self.options.keepaliveTimeout) {
                self.closeReason = "keepalive ping not acknowledged"
                self.context?.close(promise: nil)
            }
        }
    }
}
