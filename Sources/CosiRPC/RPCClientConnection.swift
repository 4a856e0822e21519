import CosiTLS
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// A client connection to a COSI-RPC/1 server: mutual TLS, many concurrent calls multiplexed on
/// one connection.
///
/// ```swift
/// let tls = try TLSContext(role: .client, configuration: .init(
///     certificateChain: .file("Certs/admin.crt"), privateKey: .file("Certs/admin.key"), trustRoots: .file("Certs/ca.crt")))
/// let connection = try await RPCClientConnection.connect(host: "127.0.0.1", port: 50000, tls: tls)
/// let reply = try await connection.unary("/cosi.rpc.v1.Server/Info", request: ByteBuffer())
/// ```
///
/// Calls are cancelled by cancelling the task that awaits them (the server receives CANCEL).
/// A server stream grants flow-control credit as it is consumed, so a slow consumer slows the
/// server down instead of buffering without bound.
public final class RPCClientConnection: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<ClientConnectionHandler>
    /// The server's identity from its certificate.
    public let serverIdentity: PeerIdentity?

    /// A streaming call reports what its reader consumed (which returns credit to the server)
    /// once this many bytes have been read, not per message: one hop to the event loop per
    /// batch. An eighth of the stream window, so credit still flows long before the window is
    /// used up (it is granted at half the window).
    private let creditReport: Int

    private init(channel: any Channel, handler: NIOLoopBound<ClientConnectionHandler>, serverIdentity: PeerIdentity?, settings: RPCSettings) {
        self.channel = channel
        self.handler = handler
        self.serverIdentity = serverIdentity
        self.creditReport = max(1, Int(settings.initialWindow) / 8)
    }

    /// Connects, completes the TLS handshake and waits for the server's SETTINGS, so a server
    /// that refuses this client's certificate is reported here. Cancelling the calling task
    /// abandons the handshake.
    ///
    /// - Parameters:
    ///   - serverName: the name or IP the server certificate's SAN must match; defaults to `host`.
    public static func connect(
        host: String, port: Int, tls: TLSContext, serverName: String? = nil,
        settings: RPCSettings = .defaults,
        connectTimeout: TimeAmount = .seconds(10),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RPCClientConnection {
        let eventLoop = group.next()
        let ready = eventLoop.makePromise(of: PeerIdentity?.self)
        let expectedName = serverName ?? host
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(connectTimeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(TLSHandler(context: tls, serverName: expectedName, handshakeTimeout: connectTimeout))
                        try channel.pipeline.syncOperations.addHandler(ClientConnectionHandler(settings: settings, ready: ready))
                    }
                }
                .connect(host: host, port: port)
                .get()
        } catch {
            ready.fail(error)
            throw RPCError(code: .unavailable, message: "cannot connect to \(host):\(port): \(Self.describe(error))")
        }
        // Cancelling the connecting task ends the handshake (the channel closes, `ready` fails).
        let serverIdentity = try await withTaskCancellationHandler {
            try await ready.futureResult.get()
        } onCancel: {
            channel.close(promise: nil)
        }
        let handler: NIOLoopBound<ClientConnectionHandler>
        do {
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ClientConnectionHandler.self), eventLoop: channel.eventLoop)
            }.get()
        } catch {
            // The server closed the connection right after the handshake (its pipeline is gone).
            throw RPCError(code: .unavailable, message: "cannot connect to \(host):\(port): the server closed the connection as it opened")
        }
        return RPCClientConnection(channel: channel, handler: handler, serverIdentity: serverIdentity, settings: settings)
    }

    /// Connects to a server's local Unix domain socket (no TLS: the server identifies this
    /// process by its credentials).
    public static func connect(
        unixDomainSocketPath path: String, settings: RPCSettings = .defaults,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RPCClientConnection {
        let eventLoop = group.next()
        let ready = eventLoop.makePromise(of: PeerIdentity?.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(PlaintextStartHandler())
                        try channel.pipeline.syncOperations.addHandler(ClientConnectionHandler(settings: settings, ready: ready))
                    }
                }
                .connect(unixDomainSocketPath: path)
                .get()
        } catch {
            ready.fail(error)
            throw RPCError(code: .unavailable, message: "cannot connect to unix:\(path): \(error)")
        }
        let serverIdentity = try await ready.futureResult.get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ClientConnectionHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return RPCClientConnection(channel: channel, handler: handler, serverIdentity: serverIdentity, settings: settings)
    }

    /// Makes a unary call and returns the response message's bytes.
    ///
    /// - Throws: ``RPCError`` with the server's status, or UNAVAILABLE when the connection is
    ///   gone, DEADLINE_EXCEEDED when `timeout` passes, CANCELLED when the task is cancelled.
    public func unary(
        _ method: String, request: ByteBuffer, metadata: [String: String] = [:], timeout: Duration? = nil
    ) async throws -> ByteBuffer {
        let handle = CallHandle()
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        let headers = Envelope.CallHeaders(method: method, metadata: metadata, timeoutMS: timeout.map(Self.milliseconds) ?? 0)
        let handler = self.handler
        channel.eventLoop.execute {
            handler.value.startCall(handle, headers: headers, request: request, responder: .unary(promise))
        }
        return try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: { [channel] in
            channel.eventLoop.execute { handler.value.cancel(handle) }
        }
    }

    /// Starts a server-streaming call. Iterate the result to receive messages; it ends when the
    /// server's TRAILERS arrive (throwing ``RPCError`` unless the status is OK). Cancelling the
    /// iterating task, or dropping the sequence, cancels the call.
    public func serverStream(
        _ method: String, request: ByteBuffer, metadata: [String: String] = [:], timeout: Duration? = nil
    ) -> RPCResponseStream {
        let handle = CallHandle()
        let (stream, continuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
        let handler = self.handler
        let eventLoop = channel.eventLoop
        continuation.onTermination = { termination in
            if case .cancelled = termination {
                eventLoop.execute { handler.value.cancel(handle) }
            }
        }
        let headers = Envelope.CallHeaders(method: method, metadata: metadata, timeoutMS: timeout.map(Self.milliseconds) ?? 0)
        eventLoop.execute {
            handler.value.startCall(handle, headers: headers, request: request, responder: .streaming(continuation))
        }
        return RPCResponseStream(base: stream, reportEvery: creditReport, consumed: { bytes in
            eventLoop.execute { handler.value.consumed(handle, bytes: bytes) }
        })
    }

    /// Sends GOAWAY and closes the connection; calls in flight fail with UNAVAILABLE.
    public func close() async {
        let handler = self.handler
        channel.eventLoop.execute { handler.value.close() }
        try? await channel.closeFuture.get()
    }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    /// Completes when the connection has closed.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// A connection failure in a few words: "connection refused", "no route to host", ...
    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as NIOConnectionError:
            if let failure = error.connectionErrors.first { return describe(failure.error) }
            if let dns = error.dnsAError ?? error.dnsAAAAError { return "the name does not resolve (\(dns))" }
            return "\(error)"
        case let error as IOError:
            return String(cString: strerror(error.errnoCode)).lowercased()
        case ChannelError.connectTimeout(let amount):
            return "no answer within \(amount.nanoseconds / 1_000_000) ms"
        default:
            return "\(error)"
        }
    }

    private static func milliseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(1, seconds * 1000 + attoseconds / 1_000_000_000_000_000))
    }
}

/// The messages of a server-streaming call, as they arrive.
public struct RPCResponseStream: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    let base: AsyncThrowingStream<ByteBuffer, any Error>
    let reportEvery: Int
    let consumed: @Sendable (Int) -> Void

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<ByteBuffer, any Error>.AsyncIterator
        let reportEvery: Int
        let consumed: @Sendable (Int) -> Void
        /// Bytes read and not yet reported.
        var unreported = 0

        public mutating func next() async throws -> ByteBuffer? {
            guard let message = try await base.next() else { return nil }
            unreported += message.readableBytes
            if unreported >= reportEvery {
                consumed(unreported)
                unreported = 0
            }
            return message
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), reportEvery: reportEvery, consumed: consumed)
    }
}

/// Starts the protocol on a connection without TLS (a Unix domain socket).
final class PlaintextStartHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        context.fireUserInboundEventTriggered(TLSHandshakeCompleted(peer: nil, alpn: nil))
    }
}
