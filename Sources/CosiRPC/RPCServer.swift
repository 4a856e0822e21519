import CosiTLS
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// How an ``RPCServer`` listens and treats its connections.
public struct RPCServerConfiguration: Sendable {
    /// The address to listen on, e.g. `127.0.0.1`.
    public var host: String
    /// The port to listen on; 0 picks a free one (see ``RPCServer/localAddress``).
    public var port: Int
    /// The server's TLS context (role `.server`).
    public var tls: TLSContext
    /// SETTINGS and keepalive.
    public var connection = ServerConnectionOptions()
    /// A peer that has not finished the TLS handshake by then is disconnected.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// How long graceful shutdown lets calls in flight finish.
    public var gracePeriod: TimeAmount = .seconds(10)

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
/// ```swift
/// let server = RPCServer(configuration: config, methods: table, group: .singletonMultiThreadedEventLoopGroup, logger: logger)
/// try await server.start()
/// // ...
/// await server.shutdownGracefully()
/// ```
public final class RPCServer: Sendable {
    public let configuration: RPCServerConfiguration
    private let methods: RPCMethodTable
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state: NIOLockedValueBox<State>

    private struct State {
        var tls: TLSContext
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var shuttingDown = false
    }

    public init(configuration: RPCServerConfiguration, methods: RPCMethodTable, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.methods = methods
        self.group = group
        self.logger = logger
        self.state = NIOLockedValueBox(State(tls: configuration.tls))
    }

    /// Replaces the TLS context (server certificate, key, trusted client CAs). New handshakes use
    /// it; established connections keep going undisturbed.
    public func reloadTLS(_ context: TLSContext) {
        state.withLockedValue { $0.tls = context }
    }

    /// The TLS context new handshakes use.
    public var tls: TLSContext { state.withLockedValue { $0.tls } }

    /// The bound address, once started.
    public var localAddress: SocketAddress? {
        state.withLockedValue { $0.listener?.localAddress }
    }

    /// The number of open connections.
    public var connectionCount: Int {
        state.withLockedValue { $0.connections.count }
    }

    /// Binds the listening socket and starts accepting connections.
    @discardableResult
    public func start() async throws -> SocketAddress {
        let configuration = self.configuration
        let methods = self.methods
        let logger = self.logger
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [weak self] channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let self, self.track(channel) else {
                        throw ChannelError.ioOnClosedChannel
                    }
                    let tls = try TLSHandler(context: self.tls, handshakeTimeout: configuration.handshakeTimeout)
                    try channel.pipeline.syncOperations.addHandler(tls)
                    try channel.pipeline.syncOperations.addHandler(
                        ServerConnectionHandler(methods: methods, options: configuration.connection, logger: logger)
                    )
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        state.withLockedValue { $0.listener = listener }
        let address = listener.localAddress!
        logger.info("listening", metadata: ["address": "\(address)"])
        return address
    }

    private func track(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let accepted = state.withLockedValue { state in
            guard !state.shuttingDown else { return false }
            state.connections[id] = channel
            return true
        }
        if accepted {
            channel.closeFuture.whenComplete { [weak self] _ in
                _ = self?.state.withLockedValue { $0.connections.removeValue(forKey: id) }
            }
        }
        return accepted
    }

    /// Graceful shutdown: stop accepting, GOAWAY on every connection, end waiting calls with
    /// UNAVAILABLE, let other calls finish within the grace period, then close everything.
    public func shutdownGracefully() async {
        let (listener, connections) = state.withLockedValue { state -> ((any Channel)?, [any Channel]) in
            state.shuttingDown = true
            return (state.listener, Array(state.connections.values))
        }
        try? await listener?.close()
        logger.info("shutting down", metadata: ["connections": "\(connections.count)", "grace": "\(configuration.gracePeriod)"])
        let event = GracefulShutdownEvent(gracePeriod: configuration.gracePeriod)
        for channel in connections {
            channel.triggerUserOutboundEvent(event, promise: nil)
        }
        for channel in connections {
            // Each connection closes itself once drained or when its grace timer fires.
            try? await channel.closeFuture.get()
        }
    }

    /// Closes the listener and every connection at once.
    public func close() async {
        let (listener, connections) = state.withLockedValue { state -> ((any Channel)?, [any Channel]) in
            state.shuttingDown = true
            return (state.listener, Array(state.connections.values))
        }
        try? await listener?.close()
        for channel in connections { try? await channel.close() }
    }
}
