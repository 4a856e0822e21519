import CosiProtobuf
import CosiTLS
import NIOCore

/// What a server handler knows about the call it serves.
public struct CallContext: Sendable {
    /// `/package.Service/Method`.
    public var method: String
    /// Free-form call metadata from the client (keys lower-case).
    public var metadata: [String: String]
    /// When the call must be finished, if the client set a deadline.
    public var deadline: NIODeadline?
    /// The authenticated peer (from its client certificate).
    public var peer: PeerIdentity
    /// The peer's address, for logs.
    public var remoteAddress: String

    /// A context for a call made without a connection (a benchmark, a test).
    public init(method: String, metadata: [String: String] = [:], deadline: NIODeadline? = nil, peer: PeerIdentity, remoteAddress: String = "local") {
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
        self.remoteAddress = remoteAddress
    }
}

/// Sends the messages of a server-streaming call.
///
/// `write` returns once the message has been handed to the connection; it waits while the
/// stream has no flow-control credit, which is how a slow reader slows its producer down.
public struct ResponseWriter: Sendable {
    let sink: CallSink
    /// Runs before every write (an interceptor's ``RPCInterceptor/beforeWrite``); throwing ends
    /// the call with that error instead of sending.
    var check: (@Sendable () throws -> Void)?

    init(sink: CallSink) { self.sink = sink }

    /// Sends one message. Throws ``RPCError`` with `.cancelled` when the call has ended (cancelled
    /// by the client, past its deadline, or the connection closed).
    public func write(_ message: ByteBuffer) async throws {
        try check?()
        try await sink.write(message)
    }

    /// Sends several messages with one hop to the connection; returns once the last has been
    /// sent (flow control applies message by message, so this waits for the client's window).
    /// The messages are held until then: give a bounded number (``TypedResponseWriter`` chunks).
    public func write(contentsOf messages: [ByteBuffer]) async throws {
        try check?()
        try await sink.write(contentsOf: messages)
    }
}

/// The bytes-level shape of a method.
public enum RPCHandler: Sendable {
    /// One request, one response.
    case unary(@Sendable (ByteBuffer, CallContext) async throws -> ByteBuffer)
    /// One request, a stream of responses written through the writer.
    case serverStreaming(@Sendable (ByteBuffer, CallContext, ResponseWriter) async throws -> Void)
    /// One request, one response, computed synchronously on the connection's event loop: no
    /// task, no hops. Only for handlers that never block and finish in microseconds (a lookup).
    case unaryInline(@Sendable (ByteBuffer, CallContext) throws -> ByteBuffer)
    /// One request, one response, answered on the event loop by `inline` when it is cheap; when
    /// `inline` returns nil (the answer would cost more than a loop should spend: a large
    /// resource), the call runs `task` as a task instead.
    case unaryInlineWhenCheap(
        inline: @Sendable (ByteBuffer, CallContext) throws -> ByteBuffer?,
        task: @Sendable (ByteBuffer, CallContext) async throws -> ByteBuffer
    )
    /// One request, one response, started on the connection's event loop without a task:
    /// `direct` gets the request and a `respond` callback that it (or what it starts, such as a
    /// durable write) calls exactly once, from any thread; `direct` itself must return at once.
    /// A request larger than ``RPCHandler/directRequestLimit`` runs `task` as a task instead
    /// (decoding it is not cheap).
    ///
    /// The answer is given as an encoder, which the connection runs on its event loop: the
    /// thread that produced the answer (the committer) does not spend time encoding it.
    case unaryDirect(
        direct: @Sendable (ByteBuffer, CallContext, @escaping @Sendable (Result<@Sendable () -> ByteBuffer, any Error>) -> Void) -> Void,
        task: @Sendable (ByteBuffer, CallContext) async throws -> ByteBuffer
    )

    /// One request, a stream of responses produced without a task: `start` runs on the
    /// connection's event loop with a ``ServerStream`` and returns at once; whatever it sets up
    /// sends through the stream, on that loop, and finishes it. A request larger than
    /// ``RPCHandler/directRequestLimit`` runs `task` as a task instead.
    ///
    /// For streams that mostly wait (a watch): an idle one costs a few small objects, not a
    /// suspended task.
    case serverStreamingDirect(
        start: @Sendable (ByteBuffer, CallContext, ServerStream) -> Void,
        task: @Sendable (ByteBuffer, CallContext, ResponseWriter) async throws -> Void
    )

    /// The largest request a ``unaryDirect(direct:task:)`` method starts on the event loop.
    public static let directRequestLimit = 64 << 10
}

/// A method the server serves.
public struct RPCMethod: Sendable {
    /// `/package.Service/Method`.
    public var name: String
    public var handler: RPCHandler
    /// Calls of this method wait on others (a watch, a wait for a condition): graceful shutdown
    /// ends them at once with UNAVAILABLE instead of waiting for them.
    public var waitsOnOthers: Bool
    /// Decides from the call's HEADERS alone (method, metadata, peer) whether it may go on;
    /// throwing ends the call with that error before any of its request is buffered. Set by an
    /// interceptor's ``RPCInterceptor/admit``.
    public var admit: (@Sendable (CallContext) throws -> Void)?

    public init(name: String, handler: RPCHandler, waitsOnOthers: Bool = false) {
        self.name = name
        self.handler = handler
        self.waitsOnOthers = waitsOnOthers
    }

    /// A unary method with typed protobuf messages. A request that does not decode ends the call
    /// with INVALID_ARGUMENT before `body` runs.
    public static func unary<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        body: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) -> RPCMethod {
        RPCMethod(name: name, handler: .unary { bytes, context in
            let request = try decodeRequest(Request.self, bytes)
            return try await body(request, context).serializedBytes()
        })
    }

    /// A unary method with typed messages whose body runs on the connection's event loop (see
    /// ``RPCHandler/unaryInline(_:)``): for quick, non-blocking handlers.
    public static func unaryInline<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        body: @escaping @Sendable (Request, CallContext) throws -> Response
    ) -> RPCMethod {
        RPCMethod(name: name, handler: .unaryInline { bytes, context in
            try body(try decodeRequest(Request.self, bytes), context).serializedBytes()
        })
    }

    /// A unary method answered on the event loop when `inline` finds the answer cheap, and as a
    /// task otherwise (see ``RPCHandler/unaryInlineWhenCheap(inline:task:)``).
    public static func unaryInlineWhenCheap<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        inline: @escaping @Sendable (Request, CallContext) throws -> Response?,
        task: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) -> RPCMethod {
        RPCMethod(name: name, handler: .unaryInlineWhenCheap(
            inline: { bytes, context in try inline(try decodeRequest(Request.self, bytes), context)?.serializedBytes() },
            task: { bytes, context in try await task(try decodeRequest(Request.self, bytes), context).serializedBytes() }
        ))
    }

    /// A unary method started on the event loop without a task (see
    /// ``RPCHandler/unaryDirect(direct:task:)``): for handlers that hand their work to another
    /// thread and answer from there. `task` serves large requests.
    public static func unaryDirect<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        direct: @escaping @Sendable (Request, CallContext, @escaping @Sendable (Result<Response, any Error>) -> Void) -> Void,
        task: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) -> RPCMethod {
        RPCMethod(name: name, handler: .unaryDirect(
            direct: { bytes, context, respond in
                let request: Request
                do { request = try decodeRequest(Request.self, bytes) } catch {
                    respond(.failure(error))
                    return
                }
                direct(request, context) { result in respond(result.map { response in { response.serializedBytes() } }) }
            },
            task: { bytes, context in try await task(try decodeRequest(Request.self, bytes), context).serializedBytes() }
        ))
    }

    /// The same method, marked as waiting on others (graceful shutdown ends it at once).
    public func waitingOnOthers() -> RPCMethod {
        var method = self
        method.waitsOnOthers = true
        return method
    }

    /// A server-streaming method whose stream is produced on the event loop without a task
    /// (see ``RPCHandler/serverStreamingDirect(start:task:)``); `task` serves large requests.
    /// A request that does not decode ends the call with INVALID_ARGUMENT.
    public static func serverStreamingDirect<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        waitsOnOthers: Bool = false,
        start: @escaping @Sendable (Request, CallContext, ServerStream) -> Void,
        task: @escaping @Sendable (Request, CallContext, TypedResponseWriter<Response>) async throws -> Void
    ) -> RPCMethod {
        RPCMethod(name: name, handler: .serverStreamingDirect(
            start: { bytes, context, stream in
                let request: Request
                do { request = try decodeRequest(Request.self, bytes) } catch {
                    return stream.finish(error)
                }
                start(request, context, stream)
            },
            task: { bytes, context, writer in
                try await task(try decodeRequest(Request.self, bytes), context, TypedResponseWriter(writer: writer))
            }
        ), waitsOnOthers: waitsOnOthers)
    }

    /// A server-streaming method with typed protobuf messages.
    public static func serverStreaming<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        waitsOnOthers: Bool = false,
        body: @escaping @Sendable (Request, CallContext, TypedResponseWriter<Response>) async throws -> Void
    ) -> RPCMethod {
        RPCMethod(name: name, handler: .serverStreaming { bytes, context, writer in
            let request = try decodeRequest(Request.self, bytes)
            try await body(request, context, TypedResponseWriter(writer: writer))
        }, waitsOnOthers: waitsOnOthers)
    }
}

/// Code that runs around every call of a method, before its handler and after it ends: the one
/// place for cross-cutting checks such as authorization and auditing.
public struct RPCInterceptor: Sendable {
    /// Runs when the call's HEADERS arrive, before its request is read: throwing ends the call
    /// with that error at once (a caller whose roles allow no call of this method need not be
    /// allowed to make the server buffer its request).
    public var admit: (@Sendable (CallContext) throws -> Void)?
    /// Runs before the handler with the raw request; throwing ends the call with that error and
    /// the handler never runs.
    public var before: @Sendable (ByteBuffer, CallContext) throws -> Void
    /// Runs before every message a streaming call sends: throwing ends the call with that error
    /// before the message goes (a decision that may change while a call runs, such as whether
    /// the caller may still read what a watch sends).
    public var beforeWrite: (@Sendable (ByteBuffer, CallContext) throws -> Void)?
    /// Runs after the handler with the call's outcome (not for calls refused by `before`).
    public var after: @Sendable (ByteBuffer, CallContext, RPCStatus) -> Void

    public init(
        admit: (@Sendable (CallContext) throws -> Void)? = nil,
        before: @escaping @Sendable (ByteBuffer, CallContext) throws -> Void,
        beforeWrite: (@Sendable (ByteBuffer, CallContext) throws -> Void)? = nil,
        after: @escaping @Sendable (ByteBuffer, CallContext, RPCStatus) -> Void = { _, _, _ in }
    ) {
        self.admit = admit
        self.before = before
        self.beforeWrite = beforeWrite
        self.after = after
    }
}

extension RPCMethod {
    /// This method with `interceptor` around its handler.
    public func intercepted(by interceptor: RPCInterceptor) -> RPCMethod {
        @Sendable func outcome(_ error: any Error) -> RPCStatus {
            if error is CancellationError { return RPCStatus(code: .cancelled, message: "the call was cancelled") }
            return (error as? RPCError)?.status ?? RPCStatus(code: .unknown, message: "\(error)")
        }
        // One wrapper per shape of body; every handler kind is made of these.
        func task(_ body: @escaping @Sendable (ByteBuffer, CallContext) async throws -> ByteBuffer) -> @Sendable (ByteBuffer, CallContext) async throws -> ByteBuffer {
            { request, context in
                try interceptor.before(request, context)
                do {
                    let response = try await body(request, context)
                    interceptor.after(request, context, .ok)
                    return response
                } catch {
                    interceptor.after(request, context, outcome(error))
                    throw error
                }
            }
        }
        func inline<T>(_ body: @escaping @Sendable (ByteBuffer, CallContext) throws -> T?) -> @Sendable (ByteBuffer, CallContext) throws -> T? {
            { request, context in
                try interceptor.before(request, context)
                do {
                    // nil: the answer is costly and will be given by the task form.
                    guard let response = try body(request, context) else { return nil }
                    interceptor.after(request, context, .ok)
                    return response
                } catch {
                    interceptor.after(request, context, outcome(error))
                    throw error
                }
            }
        }
        func streaming(_ body: @escaping @Sendable (ByteBuffer, CallContext, ResponseWriter) async throws -> Void) -> @Sendable (ByteBuffer, CallContext, ResponseWriter) async throws -> Void {
            { request, context, writer in
                try interceptor.before(request, context)
                var writer = writer
                if let beforeWrite = interceptor.beforeWrite {
                    let inner = writer.check
                    writer.check = {
                        try inner?()
                        try beforeWrite(request, context)
                    }
                }
                do {
                    try await body(request, context, writer)
                    interceptor.after(request, context, .ok)
                } catch {
                    interceptor.after(request, context, outcome(error))
                    throw error
                }
            }
        }

        var method = self
        if let admit = interceptor.admit {
            let inner = self.admit
            method.admit = { context in
                try inner?(context)
                try admit(context)
            }
        }
        switch handler {
        case .unary(let body):
            method.handler = .unary(task(body))
        case .unaryInline(let body):
            let wrapped = inline(body)
            // (Never nil: an inline body always answers.)
            method.handler = .unaryInline { request, context in try wrapped(request, context)! }
        case .unaryInlineWhenCheap(let body, let costly):
            method.handler = .unaryInlineWhenCheap(inline: inline(body), task: task(costly))
        case .unaryDirect(let direct, let costly):
            method.handler = .unaryDirect(
                direct: { request, context, respond in
                    do { try interceptor.before(request, context) } catch {
                        respond(.failure(error))
                        return
                    }
                    direct(request, context) { result in
                        switch result {
                        case .success: interceptor.after(request, context, .ok)
                        case .failure(let error): interceptor.after(request, context, outcome(error))
                        }
                        respond(result)
                    }
                },
                task: task(costly)
            )
        case .serverStreaming(let body):
            method.handler = .serverStreaming(streaming(body))
        case .serverStreamingDirect(let start, let costly):
            method.handler = .serverStreamingDirect(
                start: { request, context, stream in
                    do { try interceptor.before(request, context) } catch {
                        return stream.finish(error)
                    }
                    if let beforeWrite = interceptor.beforeWrite {
                        let inner = stream.check
                        stream.check = {
                            try inner?()
                            try beforeWrite(request, context)
                        }
                    }
                    stream.addEndHook { status in interceptor.after(request, context, status) }
                    start(request, context, stream)
                },
                task: streaming(costly)
            )
        }
        return method
    }
}

/// A ``ResponseWriter`` that encodes typed messages.
public struct TypedResponseWriter<Response: ProtobufMessage>: Sendable {
    let writer: ResponseWriter
    public func write(_ message: Response) async throws {
        try await writer.write(message.serializedBytes())
    }

    /// How many encoded bytes ``write(contentsOf:)`` hands to the connection at a time.
    static var chunkBytes: Int { 64 << 10 }

    /// Sends several messages, a chunk of about 64 KiB (at least one message) per hop to the
    /// connection. Each message is encoded only when its chunk is made, and the next chunk waits
    /// until the last message of the previous one has been sent (the client's window allowed it):
    /// a stream whose client does not read holds at most a chunk and one message, however many
    /// messages it was given.
    public func write(contentsOf messages: [Response]) async throws {
        var chunk: [ByteBuffer] = []
        var bytes = 0
        for message in messages {
            let encoded = message.serializedBytes()
            chunk.append(encoded)
            bytes += encoded.readableBytes
            if bytes >= Self.chunkBytes {
                try await writer.write(contentsOf: chunk)
                chunk.removeAll(keepingCapacity: true)
                bytes = 0
            }
        }
        if !chunk.isEmpty { try await writer.write(contentsOf: chunk) }
    }

    /// The untyped writer, for messages encoded elsewhere.
    public var raw: ResponseWriter { writer }
}

private func decodeRequest<Request: ProtobufMessage>(_ type: Request.Type, _ bytes: ByteBuffer) throws -> Request {
    do {
        return try Request(serializedBytes: bytes)
    } catch {
        throw RPCError(code: .invalidArgument, message: "the request does not decode: \(error)")
    }
}

/// The methods a server serves, by name.
public struct RPCMethodTable: Sendable {
    private var methods: [String: RPCMethod] = [:]
    /// Every method name, sorted (kept, not sorted per Info call).
    public private(set) var names: [String] = []

    public init(_ methods: [RPCMethod] = []) {
        for method in methods { register(method) }
    }

    /// Adds or replaces a method.
    public mutating func register(_ method: RPCMethod) {
        if methods.updateValue(method, forKey: method.name) == nil {
            names.insert(method.name, at: names.firstIndex { $0 > method.name } ?? names.endIndex)
        }
    }

    public subscript(name: String) -> RPCMethod? { methods[name] }
}
