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

/// The bytes-level shape of a method: unary or server-streaming, run as a task or on the
/// connection's event loop.
public enum RPCHandler: Sendable {
    /// One request, one response, computed in a task (a handler that waits or blocks).
    case unary(@Sendable (ByteBuffer, CallContext) async throws -> ByteBuffer)
    /// One request, a stream of responses written through the writer, in a task.
    case serverStreaming(@Sendable (ByteBuffer, CallContext, ResponseWriter) async throws -> Void)
    /// One request, one response, started on the connection's event loop without a task: the
    /// handler answers through its ``UnaryResponder`` exactly once, at once (a lookup) or later
    /// from any thread (what it hands its work to, such as the committer). It must not block.
    case unaryOnLoop(OnLoopHandler<UnaryResponder>)
    /// One request, a stream of responses produced on the connection's event loop without a task,
    /// through a ``ServerStream``: for streams that mostly wait (a watch), an idle one costs a few
    /// small objects, not a suspended task.
    case serverStreamingOnLoop(OnLoopHandler<ServerStream>)

    /// The largest request an on-loop handler is prepared for on the event loop; a larger one is
    /// prepared (decoded) in a task, and its body then runs on the loop all the same.
    public static let onLoopRequestLimit = 64 << 10
}

/// A handler that runs on its connection's event loop, in two steps: ``prepare`` reads the
/// request (decodes it, checks it) and returns the call's body, which the connection runs on its
/// loop with the call's output (a ``UnaryResponder`` or a ``ServerStream``).
///
/// `prepare` runs on the loop for a request of up to ``RPCHandler/onLoopRequestLimit`` bytes and
/// in a task for a larger one (decoding it is not cheap); throwing ends the call with that error.
public struct OnLoopHandler<Output: Sendable>: Sendable {
    public var prepare: @Sendable (ByteBuffer, CallContext) throws -> @Sendable (Output) -> Void

    public init(prepare: @escaping @Sendable (ByteBuffer, CallContext) throws -> @Sendable (Output) -> Void) {
        self.prepare = prepare
    }
}

/// A unary answer, given as an encoder the connection runs: on its event loop (the thread that
/// produced the answer, such as the committer, does not spend time encoding it), or in a task
/// when the answer is ``costly`` (a large resource), at most a few at once per connection and
/// none while the peer does not read.
public struct UnaryAnswer: Sendable {
    public var encode: @Sendable () -> ByteBuffer
    public var costly: Bool

    public init(costly: Bool = false, encode: @escaping @Sendable () -> ByteBuffer) {
        self.encode = encode
        self.costly = costly
    }
}

/// Answers a unary call run on the event loop (``RPCHandler/unaryOnLoop(_:)``): exactly once,
/// from any thread. A second answer, or one after the call ended (cancelled, past its
/// deadline), is dropped.
public struct UnaryResponder: Sendable {
    let deliver: @Sendable (Result<UnaryAnswer, any Error>) -> Void

    /// A responder that hands the answer to `deliver` (a benchmark or a test driving a handler).
    public init(_ deliver: @escaping @Sendable (Result<UnaryAnswer, any Error>) -> Void) {
        self.deliver = deliver
    }

    public func callAsFunction(_ result: Result<UnaryAnswer, any Error>) { deliver(result) }
    public func succeed(_ answer: UnaryAnswer) { deliver(.success(answer)) }
    /// Ends the call with an error: an ``RPCError``'s status, UNKNOWN for anything else.
    public func fail(_ error: any Error) { deliver(.failure(error)) }
}

/// A ``UnaryResponder`` for a typed response.
public struct TypedUnaryResponder<Response: ProtobufMessage>: Sendable {
    public let untyped: UnaryResponder

    /// Answers with the response (encoded by the connection; in a task when `costly`).
    public func succeed(_ response: Response, costly: Bool = false) {
        untyped.succeed(UnaryAnswer(costly: costly) { response.serializedBytes() })
    }

    public func fail(_ error: any Error) { untyped.fail(error) }

    public func callAsFunction(_ result: Result<Response, any Error>) {
        switch result {
        case .success(let response): succeed(response)
        case .failure(let error): fail(error)
        }
    }
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

    /// A unary method with typed protobuf messages, run as a task. A request that does not
    /// decode ends the call with INVALID_ARGUMENT before `body` runs.
    public static func unary<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        body: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) -> RPCMethod {
        RPCMethod(name: name, handler: .unary { bytes, context in
            let request = try decodeRequest(Request.self, bytes)
            return try await body(request, context).serializedBytes()
        })
    }

    /// A unary method with typed messages run on the connection's event loop (see
    /// ``RPCHandler/unaryOnLoop(_:)``): `body` answers through `respond`, at once or later from
    /// any thread, and must not block.
    public static func unaryOnLoop<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        body: @escaping @Sendable (Request, CallContext, TypedUnaryResponder<Response>) -> Void
    ) -> RPCMethod {
        RPCMethod(name: name, handler: .unaryOnLoop(OnLoopHandler { bytes, context in
            let request = try decodeRequest(Request.self, bytes)
            return { responder in body(request, context, TypedUnaryResponder(untyped: responder)) }
        }))
    }

    /// A unary method run on the event loop whose answer is computed at once (a lookup).
    public static func unaryOnLoop<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        answer: @escaping @Sendable (Request, CallContext) throws -> Response
    ) -> RPCMethod {
        unaryOnLoop(name, Request.self, Response.self) { request, context, respond in
            respond(Result { try answer(request, context) })
        }
    }

    /// A server-streaming method with typed protobuf messages, run as a task.
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

    /// A server-streaming method whose stream is produced on the event loop without a task
    /// (see ``RPCHandler/serverStreamingOnLoop(_:)``). A request that does not decode ends the
    /// call with INVALID_ARGUMENT.
    public static func serverStreamingOnLoop<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ name: String, _ request: Request.Type = Request.self, _ response: Response.Type = Response.self,
        waitsOnOthers: Bool = false,
        body: @escaping @Sendable (Request, CallContext, ServerStream) -> Void
    ) -> RPCMethod {
        RPCMethod(name: name, handler: .serverStreamingOnLoop(OnLoopHandler { bytes, context in
            let request = try decodeRequest(Request.self, bytes)
            return { stream in body(request, context, stream) }
        }), waitsOnOthers: waitsOnOthers)
    }

    /// The same method, marked as waiting on others (graceful shutdown ends it at once).
    public func waitingOnOthers() -> RPCMethod {
        var method = self
        method.waitsOnOthers = true
        return method
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
        /// `before`, then the inner preparation; a refusal by `before` is not reported to `after`.
        @Sendable func prepared<Output>(_ inner: OnLoopHandler<Output>, _ request: ByteBuffer, _ context: CallContext) throws -> @Sendable (Output) -> Void {
            try interceptor.before(request, context)
            do { return try inner.prepare(request, context) } catch {
                interceptor.after(request, context, outcome(error))
                throw error
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
            method.handler = .unary { request, context in
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
        case .serverStreaming(let body):
            method.handler = .serverStreaming { request, context, writer in
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
        case .unaryOnLoop(let inner):
            method.handler = .unaryOnLoop(OnLoopHandler { request, context in
                let body = try prepared(inner, request, context)
                return { responder in
                    body(UnaryResponder { result in
                        switch result {
                        case .success: interceptor.after(request, context, .ok)
                        case .failure(let error): interceptor.after(request, context, outcome(error))
                        }
                        responder(result)
                    })
                }
            })
        case .serverStreamingOnLoop(let inner):
            method.handler = .serverStreamingOnLoop(OnLoopHandler { request, context in
                let body = try prepared(inner, request, context)
                return { stream in
                    if let beforeWrite = interceptor.beforeWrite {
                        let inner = stream.check
                        stream.check = {
                            try inner?()
                            try beforeWrite(request, context)
                        }
                    }
                    stream.addEndHook { status in interceptor.after(request, context, status) }
                    body(stream)
                }
            })
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
