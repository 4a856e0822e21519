import CosiTLS
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An address an ``RPCServer`` listens on.
public enum ListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// TCP with mutual TLS.
    case tcp(host: String, port: Int)
    /// A Unix domain socket for local administration: no TLS; the peer's identity comes from
    /// its process credentials (uid 0 is `root` with role `os:admin`, anyone else `uid:N` with
    /// no role). The socket file is created with mode 0600.
    case unix(path: String)

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// How an ``RPCServer`` listens and treats its connections.
public struct RPCServerConfiguration: Sendable {
    /// The address to listen on, e.g. `127.0.0.1`.
    public var host: String
    /// The port to listen on; 0 picks a free one (see ``RPCServer/listeningAddress``).
    public var port: Int
    /// The server's TLS context (role `.server`).
    public var tls: TLSContext
    /// SETTINGS, keepalive and the grace period of a graceful shutdown.
    public var connection = ServerConnectionOptions()
    /// A peer that has not finished the TLS handshake by then is disconnected, and so is one that
    /// has not sent its SETTINGS that long after the handshake.
    public var handshakeTimeout: TimeAmount {
        get { connection.settingsTimeout }
        set { connection.settingsTimeout = newValue }
    }
    /// How long graceful shutdown lets calls in flight finish.
    public var gracePeriod: TimeAmount {
        get { connection.gracePeriod }
        set { connection.gracePeriod = newValue }
    }
    /// More addresses to listen on, besides `host`:`port`.
    public var additionalListeners: [ListenAddress] = []
    /// The most connections open at once; further ones are closed on accept (and logged).
    public var maximumConnections = 10_000

    public init(host: String, port: Int, tls: TLSContext) {
        self.host = host
        self.port = port
        self.tls = tls
    }
}

/// A COSI-RPC/1 server: mutual TLS, frames, calls dispatched to ``RPCMethodTable`` handlers.
///
/// It knows methods by name and bytes only; what the methods mean is up to their handlers.
///
/// ``serve()`` owns everything the server starts: the listeners, a task per connection and a
/// child task per call, all in one structured task tree. It returns only when every one of them
/// has ended, so whatever the handlers use (a state engine) may be closed right after it.
///
/// ```swift
/// let server = RPCServer(configuration: config, methods: table, group: .singletonMultiThreadedEventLoopGroup, logger: logger)
/// try await withThrowingDiscardingTaskGroup { group in
///     group.addTask { try await server.serve() }
///     print(try await server.listeningAddress)
///     // ...
///     server.beginGracefulShutdown()   // serve() returns once every call has ended
/// }
/// ```
///
/// Graceful shutdown (``beginGracefulShutdown()``, or swift-service-lifecycle's graceful
/// shutdown when `serve()` runs in a `Service`): stop accepting, GOAWAY on every connection, end
/// calls that wait on others (watches) with UNAVAILABLE, let the rest finish within the grace
/// period, close. Cancelling the task running `serve()` closes every connection at once.
public final class RPCServer: Sendable {
    public let configuration: RPCServerConfiguration
    private let methods: RPCMethodTable
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state: NIOLockedValueBox<State>

    private struct State {
        var tls: TLSContext
        var connections = 0
        /// Open TLS connections, to tell them when the trusted material changes.
        var channels: [ObjectIdentifier: any Channel] = [:]
        var quiescing: [ServerQuiescingHelper] = []
        var shuttingDown = false
        var address = AddressState.pending([])
    }

    private enum AddressState {
        case pending([CheckedContinuation<SocketAddress, any Error>])
        case bound(SocketAddress)
        case failed(any Error)
    }

    public init(configuration: RPCServerConfiguration, methods: RPCMethodTable, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.methods = methods
        self.group = group
        self.logger = logger
        self.state = NIOLockedValueBox(State(tls: configuration.tls))
    }

    /// Replaces the TLS context (server certificate, key, trusted client CAs, CRLs). New
    /// handshakes use it; each established connection checks its client's certificate against
    /// it and carries on if it still verifies, or ends every call with PERMISSION_DENIED and
    /// closes with GOAWAY if it does not (a CA removed, a certificate revoked).
    public func reloadTLS(_ context: TLSContext) {
        let channels = state.withLockedValue { state in
            state.tls = context
            return Array(state.channels.values)
        }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(TrustChanged(context: context))
        }
    }

    /// The TLS context new handshakes use.
    public var tls: TLSContext { state.withLockedValue { $0.tls } }

    /// The number of open connections.
    public var connectionCount: Int { state.withLockedValue { $0.connections } }

    /// The address of the first listener, or nil until ``serve()`` has bound it.
    public var localAddress: SocketAddress? {
        state.withLockedValue { if case .bound(let address) = $0.address { address } else { nil } }
    }

    /// The address of the first listener, once ``serve()`` has bound it (port 0 is resolved).
    /// Throws the bind error when binding failed, or when the server shut down before binding.
    public var listeningAddress: SocketAddress {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let known: Result<SocketAddress, any Error>? = state.withLockedValue { state in
                    switch state.address {
                    case .pending(var waiters):
                        waiters.append(continuation)
                        state.address = .pending(waiters)
                        return nil
                    case .bound(let address): return .success(address)
                    case .failed(let error): return .failure(error)
                    }
                }
                if let known { continuation.resume(with: known) }
            }
        }
    }

    /// Binds every listener, then serves connections until a graceful shutdown has drained them
    /// (or the calling task is cancelled). Returns when every connection and call has ended.
    ///
    /// - Throws: the bind error, when an address cannot be listened on.
    public func serve() async throws {
        var listeners: [(NIOAsyncChannel<NIOAsyncChannel<ServerCall, Never>, Never>, ServerQuiescingHelper)] = []
        do {
            for address in [.tcp(host: configuration.host, port: configuration.port)] + configuration.additionalListeners {
                listeners.append(try await bind(address))
            }
        } catch {
            for (listener, _) in listeners { try? await listener.channel.close() }
            resolveAddress(.failure(error))
            throw error
        }
        let shuttingDown = state.withLockedValue { state in
            state.quiescing = listeners.map(\.1)
            return state.shuttingDown
        }
        resolveAddress(.success(listeners[0].0.channel.localAddress!))
        if shuttingDown { beginGracefulShutdown() }

        try await withThrowingDiscardingTaskGroup { group in
            for (listener, _) in listeners {
                group.addTask {
                    try await listener.executeThenClose { connections in
                        try await withThrowingDiscardingTaskGroup { group in
                            for try await connection in connections {
                                group.addTask { await Self.serve(connection) }
                            }
                        }
                    }
                }
            }
        }
        logger.info("stopped serving")
    }

    /// Starts a graceful shutdown (see ``RPCServer``); ``serve()`` returns once it is complete.
    /// Safe to call more than once, and before `serve()` has bound.
    public func beginGracefulShutdown() {
        let helpers = state.withLockedValue { state in
            state.shuttingDown = true
            return state.quiescing
        }
        guard !helpers.isEmpty else { return }
        logger.info("shutting down", metadata: ["connections": .stringConvertible(connectionCount), "grace": "\(configuration.gracePeriod)"])
        for helper in helpers { helper.initiateShutdown(promise: nil) }
    }

    /// One connection: its calls run as child tasks of this one, which ends when the connection
    /// has closed and every call has returned.
    private static func serve(_ connection: NIOAsyncChannel<ServerCall, Never>) async {
        do {
            try await connection.executeThenClose { calls, _ in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await call in calls {
                            group.addTask { await call.run() }
                        }
                    } catch {
                        // The connection failed; its handler has logged why and ends its calls.
                    }
                }
            }
        } catch {
            // Closing an already closed connection.
        }
    }

    private func resolveAddress(_ result: Result<SocketAddress, any Error>) {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<SocketAddress, any Error>] in
            guard case .pending(let waiters) = state.address else { return [] }
            switch result {
            case .success(let address): state.address = .bound(address)
            case .failure(let error): state.address = .failed(error)
            }
            return waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    private func bind(_ address: ListenAddress) async throws -> (NIOAsyncChannel<NIOAsyncChannel<ServerCall, Never>, Never>, ServerQuiescingHelper) {
        let quiescing = ServerQuiescingHelper(group: group)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
        let unix: Bool = if case .unix = address { true } else { false }
        let initializer: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<ServerCall, Never>> = { [self] channel in
            channel.eventLoop.makeCompletedFuture {
                try self.admit(channel)
                if unix {
                    try channel.pipeline.syncOperations.addHandler(PeerCredentialsHandler())
                } else {
                    _ = channel.setOption(.socketOption(.tcp_nodelay), value: 1)
                    try channel.pipeline.syncOperations.addHandler(TLSHandler(context: self.tls, handshakeTimeout: self.configuration.handshakeTimeout))
                }
                try channel.pipeline.syncOperations.addHandler(
                    ServerConnectionHandler(methods: self.methods, options: self.configuration.connection, logger: self.logger)
                )
                // Calls arrive one element each; a burst of them must not stop the connection
                // from reading (its WINDOW and CANCEL frames), so the buffer is generous.
                return try NIOAsyncChannel(
                    wrappingChannelSynchronously: channel,
                    configuration: .init(backPressureStrategy: .init(lowWatermark: 64, highWatermark: 1024))
                )
            }
        }
        let listener: NIOAsyncChannel<NIOAsyncChannel<ServerCall, Never>, Never>
        switch address {
        case .tcp(let host, let port):
            listener = try await bootstrap.bind(host: host, port: port, childChannelInitializer: initializer)
        case .unix(let path):
            listener = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true, childChannelInitializer: initializer)
            chmod(path, 0o600)
        }
        logger.info("listening", metadata: ["address": "\(listener.channel.localAddress.map { "\($0)" } ?? "\(address)")"])
        return (listener, quiescing)
    }

    /// Counts an accepted connection, or refuses it beyond the limit: closed at once (before any
    /// TLS), so the client fails promptly instead of waiting for a handshake that never comes.
    private func admit(_ channel: any Channel) throws {
        let limit = configuration.maximumConnections
        let admitted = state.withLockedValue { state -> Bool in
            guard state.connections < limit else { return false }
            state.connections += 1
            return true
        }
        guard admitted else {
            logger.warning("connection refused: the server has \(limit) connections open (--max-connections)", metadata: [
                "remote": "\(channel.remoteAddress.map { "\($0)" } ?? "?")",
            ])
            channel.close(promise: nil)
            throw ChannelError.ioOnClosedChannel
        }
        let id = ObjectIdentifier(channel)
        state.withLockedValue { $0.channels[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.state.withLockedValue { state in
                state.connections -= 1
                state.channels[id] = nil
            }
        }
    }
}

/// The server's trusted material changed (SIGHUP): sent to every connection, which checks its
/// client's certificate against it.
struct TrustChanged: Sendable {
    let context: TLSContext
}
