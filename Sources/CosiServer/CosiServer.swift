import CosiMessages
import CosiRPC
import CosiState
import CosiStateService
import CosiTLS
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The version string `cosid` reports through Info.
public let cosiVersion = "0.1.0"

/// The `cosid` server: the COSI-RPC/1 transport with the COSI services mounted on it, run as a
/// swift-service-lifecycle `Service` (graceful shutdown on SIGTERM/SIGINT).
public final class CosiServer: Service, Sendable {
    public let rpc: RPCServer
    public let engine: StateEngine
    private let logger: Logger

    /// - Parameters:
    ///   - configuration: transport settings; the services are added here.
    ///   - engine: the state the State service serves.
    public init(configuration: RPCServerConfiguration, engine: StateEngine, logger: Logger, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        // Every State call passes the access policy first (and writes are audited).
        let policy = AccessPolicy.over(engine, audit: Logger(label: "cosid.audit"))
        let services = policy.guardedStateMethods(StateService.methods(engine: engine))
        // Info lists every method, itself included.
        let names = [InfoService.method] + services.map(\.name)
        var table = RPCMethodTable(services)
        table.register(InfoService.rpcMethod(methods: names))
        self.rpc = RPCServer(configuration: configuration, methods: table, group: group, logger: logger)
        self.engine = engine
        self.logger = logger
    }

    /// Starts listening; returns the bound address.
    @discardableResult
    public func start() async throws -> SocketAddress {
        try await rpc.start()
    }

    /// Starts (if not started), serves until graceful shutdown is requested, then drains.
    public func run() async throws {
        if rpc.localAddress == nil { try await start() }
        try? await gracefulShutdown()
        await rpc.shutdownGracefully()
        engine.shutdown()
        logger.info("stopped")
    }
}

/// `/cosi.rpc.v1.Server/Info`: the server's version, its methods and the caller's identity.
public enum InfoService {
    public static let method = "/cosi.rpc.v1.Server/Info"

    static func rpcMethod(methods: [String]) -> RPCMethod {
        .unaryInline(method, Envelope.InfoRequest.self, Envelope.InfoResponse.self) { _, context in
            Envelope.InfoResponse(
                version: cosiVersion, methods: methods.sorted(),
                identity: context.peer.commonName, roles: context.peer.organizations
            )
        }
    }
}
