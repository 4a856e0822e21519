import CosiTLS
import NIOConcurrencyHelpers
import NIOCore

/// A call whose request is complete, handed by a connection's event loop to the server's task
/// group, which runs it as a child task (``RPCServer/serve()``).
///
/// The call owns no task of its own: it runs inside the task that ``run()`` is called from,
/// and stops when its connection says so (CANCEL, deadline, shutdown) through `cancellation`.
struct ServerCall: Sendable {
    /// What the task does.
    enum Work: Sendable {
        /// Runs a handler: a task handler whole; an on-loop handler's preparation (a request
        /// too large to decode on the loop), whose body is then handed back to the loop.
        case handler(RPCHandler, request: ByteBuffer, context: CallContext)
        /// Encodes a costly unary answer (``UnaryAnswer/costly``).
        case encode(@Sendable () -> ByteBuffer)
    }

    let work: Work
    let sink: CallSink
    let cancellation: CallCancellation

    /// Runs the handler until it finishes or the call is cancelled; the outcome (or nothing, if
    /// the connection already ended the call) goes to the connection.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            // The handler runs in a child so that cancelling the call cancels exactly it.
            group.addTask { [self] in
                await execute()
                cancellation.finish()
            }
            await withTaskCancellationHandler {
                await cancellation.wait()
            } onCancel: {
                cancellation.cancel()
            }
            group.cancelAll()
        }
    }

    private func execute() async {
        do {
            switch work {
            case .encode(let encode):
                sink.finish(response: encode(), status: .ok)
            case .handler(.unary(let body), let request, let context):
                sink.finish(response: try await body(request, context), status: .ok)
            case .handler(.serverStreaming(let body), let request, let context):
                try await body(request, context, ResponseWriter(sink: sink))
                sink.finish(response: nil, status: .ok)
            case .handler(.unaryOnLoop(let handler), let request, let context):
                let body = try handler.prepare(request, context)
                sink.onLoop { connection, streamID in connection.runOnLoop(streamID, body) }
            case .handler(.serverStreamingOnLoop(let handler), let request, let context):
                let body = try handler.prepare(request, context)
                sink.onLoop { connection, streamID in connection.runOnLoop(streamID, body) }
            }
        } catch let error as RPCError {
            sink.finish(response: nil, status: error.status)
        } catch is CancellationError {
            sink.finish(response: nil, status: RPCStatus(code: .cancelled, message: "the call was cancelled"))
        } catch {
            sink.finish(response: nil, status: RPCStatus(code: .unknown, message: "\(error)"))
        }
    }
}

/// The signal that ends a running call: set by its connection (CANCEL, deadline, shutdown, the
/// connection closing) or by the call itself when its handler returns.
final class CallCancellation: Sendable {
    private enum State {
        case running(waiter: CheckedContinuation<Void, Never>?)
        case cancelled
        case finished
    }

    private let state = NIOLockedValueBox(State.running(waiter: nil))

    /// Stops the call (no effect once it has finished).
    func cancel() { end(.cancelled) }

    /// The handler returned.
    func finish() { end(.finished) }

    /// Whether the call was cancelled.
    var isCancelled: Bool {
        state.withLockedValue { if case .cancelled = $0 { true } else { false } }
    }

    /// Returns once the call is cancelled or finished.
    func wait() async {
        await withCheckedContinuation { continuation in
            let ended = state.withLockedValue { state -> Bool in
                guard case .running = state else { return true }
                state = .running(waiter: continuation)
                return false
            }
            if ended { continuation.resume() }
        }
    }

    private func end(_ outcome: State) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard case .running(let waiter) = state else { return nil }
            state = outcome
            return waiter
        }
        waiter?.resume()
    }
}

/// Sends responses of one call from its task to the connection's event loop.
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

    /// Runs `body` on the connection's loop (the body of an on-loop handler prepared here).
    func onLoop(_ body: @escaping @Sendable (ServerConnectionHandler, UInt32) -> Void) {
        eventLoop.execute { [handler, streamID] in body(handler.value, streamID) }
    }

    func finish(response: ByteBuffer?, status: RPCStatus) {
        eventLoop.execute { [handler, streamID] in handler.value.finish(streamID, response: response, status: status) }
    }
}
