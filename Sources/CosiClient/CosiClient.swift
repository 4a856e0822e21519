import CosiMessages
import CosiProtobuf
import CosiRPC
import CosiTLS
import NIOConcurrencyHelpers
import NIOCore

/// Where a ``CosiClient`` connects and with which certificate.
public struct CosiClientConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// The client's certificate chain, private key and the CA bundle that the server's
    /// certificate must chain to.
    public var tls: TLSConfiguration
    /// The name or IP the server certificate must match; defaults to `host`.
    public var serverName: String?
    /// Default deadline of unary calls; nil means none.
    public var defaultTimeout: Duration? = .seconds(30)
    /// How long connecting and the TLS handshake may take.
    public var connectTimeout: Duration = .seconds(10)
    /// When set, connect to this Unix domain socket instead (no TLS; `tls` is not used).
    public var unixSocketPath: String?

    public init(host: String = "127.0.0.1", port: Int = 50000, tls: TLSConfiguration, serverName: String? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.serverName = serverName
    }

    /// The configuration for the development certificates `cosid` creates in `directory`.
    public static func development(directory: String = "Certs", host: String = "127.0.0.1", port: Int = 50000) -> CosiClientConfiguration {
        CosiClientConfiguration(host: host, port: port, tls: TLSConfiguration(
            certificateChain: .file(directory + "/admin.crt"),
            privateKey: .file(directory + "/admin.key"),
            trustRoots: .file(directory + "/ca.crt")
        ))
    }
}

/// Connects a ``CosiClient``, runs `body` with it, and closes its connection (GOAWAY) before
/// returning, whether `body` returns or throws.
///
/// ```swift
/// let info = try await withCosiClient(.development()) { client in
///     try await client.info()
/// }
/// ```
public func withCosiClient<R>(_ configuration: CosiClientConfiguration, _ body: (CosiClient) async throws -> R) async throws -> R {
    try await CosiClient.connect(configuration).closing(after: body)
}

/// A typed client of `cosid`.
///
/// For a client used within one scope, ``withCosiClient(_:_:)`` closes it for you. A long-lived
/// client is made with ``connect(_:)`` and must be closed with ``close()``:
///
/// ```swift
/// let client = try await CosiClient.connect(.development())
/// let info = try await client.info()
/// print(info.identity, info.roles)
/// await client.close()
/// ```
///
/// One client holds one connection; calls from many tasks share it concurrently.
public final class CosiClient: Sendable {
    public let configuration: CosiClientConfiguration
    private let tls: TLSContext?
    private let current: NIOLockedValueBox<RPCClientConnection>
    /// Set by ``close()``: no new connection is made after it.
    private let closed = NIOLockedValueBox(false)

    private init(connection: RPCClientConnection, tls: TLSContext?, configuration: CosiClientConfiguration) {
        self.current = NIOLockedValueBox(connection)
        self.tls = tls
        self.configuration = configuration
    }

    /// Connects and authenticates.
    public static func connect(_ configuration: CosiClientConfiguration) async throws -> CosiClient {
        let context = configuration.unixSocketPath == nil ? try TLSContext(role: .client, configuration: configuration.tls) : nil
        return try await connect(configuration, tls: context)
    }

    /// Connects with a TLS context made already (from `configuration.tls`): many clients with
    /// the same certificates share one (a ``CosiFleet`` does), which saves its memory per
    /// connection.
    public static func connect(_ configuration: CosiClientConfiguration, tls context: TLSContext?) async throws -> CosiClient {
        let connection = try await open(configuration, context)
        return CosiClient(connection: connection, tls: context, configuration: configuration)
    }

    private static func open(_ configuration: CosiClientConfiguration, _ tls: TLSContext?) async throws -> RPCClientConnection {
        if let path = configuration.unixSocketPath {
            return try await RPCClientConnection.connect(unixDomainSocketPath: path)
        }
        return try await RPCClientConnection.connect(
            host: configuration.host, port: configuration.port, tls: tls!, serverName: configuration.serverName,
            connectTimeout: TimeAmount(configuration.connectTimeout)
        )
    }

    /// The connection calls use right now, for calls this type has no method for.
    public var connection: RPCClientConnection { current.withLockedValue { $0 } }

    /// The current connection if it is open; otherwise a new one (calls made after a dropped
    /// connection, and resuming watches, come through here).
    public func activeConnection() async throws -> RPCClientConnection {
        let existing = connection
        if existing.isActive { return existing }
        if closed.withLockedValue({ $0 }) { throw RPCError(code: .cancelled, message: "the client was closed") }
        let fresh = try await Self.open(configuration, tls)
        let chosen = current.withLockedValue { connection in
            if connection.isActive { return (connection, false) }
            connection = fresh
            return (fresh, true)
        }
        if !chosen.1 { await fresh.close() }
        return chosen.0
    }

    /// `/cosi.rpc.v1.Server/Info`: the server's version and methods, and who it thinks we are.
    public func info(timeout: Duration? = nil) async throws -> Envelope.InfoResponse {
        try await unary("/cosi.rpc.v1.Server/Info", Envelope.InfoRequest(), as: Envelope.InfoResponse.self, timeout: timeout)
    }

    /// Makes a typed unary call.
    public func unary<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ method: String, _ request: Request, as: Response.Type, metadata: [String: String] = [:], timeout: Duration? = nil
    ) async throws -> Response {
        let bytes = try await activeConnection().unary(method, request: request.serializedBytes(), metadata: metadata, timeout: timeout ?? configuration.defaultTimeout)
        do {
            return try Response(serializedBytes: bytes)
        } catch {
            throw RPCError(code: .internal, message: "the server's response does not decode: \(error)")
        }
    }

    /// Makes a typed server-streaming call. The call starts when iteration starts, on the current
    /// connection, or on a new one when it dropped (as unary calls do).
    public func serverStream<Request: ProtobufMessage, Response: ProtobufMessage>(
        _ method: String, _ request: Request, as: Response.Type, timeout: Duration? = nil
    ) -> ResponseStream<Response> {
        ResponseStream(client: self, method: method, request: request.serializedBytes(), timeout: timeout)
    }

    /// Closes the connection. Calls made after it fail with CANCELLED (the client does not
    /// reconnect), and a resuming watch of it ends.
    public func close() async {
        closed.withLockedValue { $0 = true }
        await connection.close()
    }

    /// Runs `body` with this client, then closes it, whether `body` returns or throws.
    public func closing<R>(after body: (CosiClient) async throws -> R) async throws -> R {
        do {
            let result = try await body(self)
            await close()
            return result
        } catch {
            await close()
            throw error
        }
    }
}

/// The responses of one server-streaming call (``CosiClient/serverStream(_:_:as:timeout:)``),
/// decoded. The call is made when iteration starts, through
/// ``CosiClient/activeConnection()``; it ends with the call (a dropped connection ends it with
/// UNAVAILABLE; ``CosiClient/watch(_:maximumBackoff:onConnection:)`` is the watch that resumes).
public struct ResponseStream<Response: ProtobufMessage>: AsyncSequence, Sendable {
    public typealias Element = Response
    let client: CosiClient
    let method: String
    let request: ByteBuffer
    let timeout: Duration?

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(stream: self)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: ResponseStream
        var call: RPCResponseStream.AsyncIterator?

        public mutating func next() async throws -> Response? {
            if call == nil {
                call = try await stream.client.activeConnection()
                    .serverStream(stream.method, request: stream.request, timeout: stream.timeout)
                    .makeAsyncIterator()
            }
            guard let bytes = try await call!.next() else { return nil }
            do {
                return try Response(serializedBytes: bytes)
            } catch {
                throw RPCError(code: .internal, message: "the server's response does not decode: \(error)")
            }
        }
    }
}
