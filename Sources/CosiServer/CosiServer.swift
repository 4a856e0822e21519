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
/// swift-service-lifecycle `Service` (graceful shutdown on SIGTERM/SIGINT). It owns the engine's
/// end: ``run()`` shuts the engine down after the transport has returned.
public final class CosiServer: Service, Sendable {
    public let rpc: RPCServer
    public let engine: StateEngine
    private let logger: Logger

    /// - Parameters:
    ///   - configuration: transport settings; the services are added here.
    ///   - engine: the state the State service serves.
    ///   - audit: where every refusal and every write is logged, with the caller's identity.
    public init(
        configuration: RPCServerConfiguration, engine: StateEngine, logger: Logger,
        audit: Logger = Logger(label: "cosid.audit"), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        // Every State call passes the access policy first (and writes are audited).
        let policy = AccessPolicy.over(engine, audit: audit)
        let services = policy.guardedStateMethods(StateService.methods(engine: engine))
        // Info lists every method, itself included.
        let names = [InfoService.method] + services.map(\.name)
        var table = RPCMethodTable(services)
        table.register(InfoService.rpcMethod(methods: names))
        self.rpc = RPCServer(configuration: configuration, methods: table, group: group, logger: logger)
        self.engine = engine
        self.logger = logger
    }

    /// Serves until a graceful shutdown (swift-service-lifecycle's, or
    /// `rpc.beginGracefulShutdown()`) has drained every connection, or the task is cancelled;
    /// then shuts the engine down, once no call can use it any more.
    ///
    /// - Throws: the bind error when an address cannot be listened on.
    public func run() async throws {
        defer {
            engine.shutdown()
            logger.info("stopped")
        }
        try await withGracefulShutdownHandler {
            try await rpc.serve()
        } onGracefulShutdown: {
            self.rpc.beginGracefulShutdown()
        }
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
