import CosiTLS
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
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
        var listeners: [any Channel] = []
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
        state.withLockedValue { $0.listeners.first?.localAddress }
    }

    /// The number of open connections.
    public var connectionCount: Int {
        state.withLockedValue { $0.connections.count }
    }

    /// Binds the listening sockets and starts accepting connections; returns the first address.
    @discardableResult
    public func start() async throws -> SocketAddress {
        let first = try await bind(.tcp(host: configuration.host, port: configuration.port))
        for address in configuration.additionalListeners {
            _ = try await bind(address)
        }
        return first
    }

    private func bind(_ address: ListenAddress) async throws -> SocketAddress {
        let configuration = self.configuration
        let methods = self.methods
        let logger = self.logger
        let unix: Bool = if case .unix = address { true } else { false }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [weak self] channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let self, self.track(channel) else {
                        throw ChannelError.ioOnClosedChannel
                    }
                    if unix {
                        try channel.pipeline.syncOperations.addHandler(PeerCredentialsHandler())
                    } else {
                        _ = channel.setOption(.socketOption(.tcp_nodelay), value: 1)
                        try channel.pipeline.syncOperations.addHandler(TLSHandler(context: self.tls, handshakeTimeout: configuration.handshakeTimeout))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ServerConnectionHandler(methods: methods, options: configuration.connection, logger: logger)
                    )
                }
            }
        let listener: any Channel
        switch address {
        case .tcp(let host, let port):
            listener = try await bootstrap.bind(host: host, port: port).get()
        case .unix(let path):
            listener = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            chmod(path, 0o600)
        }
        state.withLockedValue { $0.listeners.append(listener) }
        logger.info("listening", metadata: ["address": "\(listener.localAddress.map { "\($0)" } ?? "\(address)")"])
        return listener.localAddress!
    }

    private func track(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let limit = configuration.maximumConnections
        let (accepted, full) = state.withLockedValue { state -> (Bool, Bool) in
            guard !state.shuttingDown else { return (false, false) }
            guard state.connections.count < limit else { return (false, true) }
            state.connections[id] = channel
            return (true, false)
        }
        if full {
            logger.warning("connection refused: the server has \(limit) connections open (--max-connections)", metadata: [
                "remote": "\(channel.remoteAddress.map { "\($0)" } ?? "?")",
            ])
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
        let (listeners, connections) = state.withLockedValue { state -> ([any Channel], [any Channel]) in
            state.shuttingDown = true
            return (state.listeners, Array(state.connections.values))
        }
        for listener in listeners { try? await listener.close() }
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
        let (listeners, connections) = state.withLockedValue { state -> ([any Channel], [any Channel]) in
            state.shuttingDown = true
            return (state.listeners, Array(state.connections.values))
        }
        for listener in listeners { try? await listener.close() }
        for channel in connections { try? await channel.close() }
    }
}
