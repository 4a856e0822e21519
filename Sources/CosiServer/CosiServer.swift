import CosiControllerRuntime
import CosiControllerService
import CosiMessages
import CosiRPC
import CosiState
import CosiStateService
import CosiTLS
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The `cosid` server: the COSI-RPC/1 transport with the COSI services mounted on it (Info, State,
/// the controller services), and the controller runtime, run as a swift-service-lifecycle
/// `Service` (graceful shutdown on SIGTERM/SIGINT). It owns their ends, in order: ``run()``
/// drains the transport, then stops the controllers, then shuts the engine down.
public final class CosiServer: Service, Sendable {
    public let rpc: RPCServer
    public let engine: StateEngine
    /// The controller runtime: register in-process controllers here (before or after `run()`).
    public let controllers: ControllerRuntime
    /// The remote side of the controllers: tokens, event streams, the reconnect grace period.
    public let controllerService: ControllerService
    /// The keeper of tried changes (reverts at deadlines, with no client needed).
    public let changes: ChangeKeeper
    private let logger: Logger

    /// - Parameters:
    ///   - configuration: transport settings; the services are added here.
    ///   - engine: the state the State service serves.
    ///   - controllerGrace: how long a disconnected remote controller keeps its registration.
    ///   - audit: where every refusal and every write is logged, with the caller's identity.
    public init(
        configuration: RPCServerConfiguration, engine: StateEngine, logger: Logger,
        controllers: ControllerRuntimeConfiguration = .init(), controllerGrace: Duration = .seconds(60),
        changes: ChangeKeeperConfiguration = .init(),
        audit: Logger = Logger(label: "cosid.audit"), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        let runtime = ControllerRuntime(engine: engine, configuration: controllers, logger: logger)
        let controllerService = ControllerService(runtime: runtime, gracePeriod: controllerGrace, logger: logger)
        let keeper = ChangeKeeper(engine: engine, configuration: changes, logger: logger)
        let table = Self.methods(engine: engine, controllers: controllerService, changes: keeper, audit: audit)
        self.rpc = RPCServer(configuration: configuration, methods: table, group: group, logger: logger)
        self.engine = engine
        self.controllers = runtime
        self.controllerService = controllerService
        self.changes = keeper
        self.logger = logger
    }

    /// Every method cosid serves: Info, State and the controller services, each State and
    /// controller method behind the access policy (writes audited). Info lists them all, itself
    /// included.
    public static func methods(engine: StateEngine, controllers: ControllerService, changes: ChangeKeeper, audit: Logger) -> RPCMethodTable {
        let policy = AccessPolicy.over(engine, audit: audit)
        let services = policy.guardedStateMethods(StateService.methods(engine: engine))
            + policy.guardedChangeMethods(ChangeService.methods(keeper: changes))
            + policy.guardedControllerMethods(controllers.methods, writes: ControllerService.writes)
        var table = RPCMethodTable(services)
        table.register(InfoService.rpcMethod(methods: [InfoService.method] + services.map(\.name)))
        return table
    }

    /// Serves until a graceful shutdown (swift-service-lifecycle's, or
    /// `rpc.beginGracefulShutdown()`) has drained every connection, or the task is cancelled;
    /// then stops the controllers and shuts the engine down, once nothing can use it any more.
    /// A controller runtime that fails (an input watch broke) shuts the server down and its error
    /// is thrown.
    ///
    /// - Throws: the bind error when an address cannot be listened on; the runtime's failure.
    public func run() async throws {
        defer {
            engine.shutdown()
            logger.info("stopped")
        }
        let rpc = self.rpc, runtime = controllers, logger = self.logger
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await runtime.run()
                } catch {
                    logger.critical("the controller runtime failed; shutting down", metadata: ["error": "\(error)"])
                    rpc.beginGracefulShutdown()
                    throw error
                }
            }
            group.addTask { await self.controllerService.expireDisconnected() }
            group.addTask { await self.changes.run() }
            try await withGracefulShutdownHandler {
                try await rpc.serve()
            } onGracefulShutdown: {
                rpc.beginGracefulShutdown()
            }
            group.cancelAll()
            try await group.waitForAll()
        }
    }
}

/// `/cosi.rpc.v1.Server/Info`: the server's version, its methods and the caller's identity.
public enum InfoService {
    public static let method = "/cosi.rpc.v1.Server/Info"

    static func rpcMethod(methods: [String]) -> RPCMethod {
        .unaryOnLoop(method, Envelope.InfoRequest.self, Envelope.InfoResponse.self) { _, context in
            Envelope.InfoResponse(
                version: cosiVersion, methods: methods.sorted(),
                identity: context.peer.commonName, roles: context.peer.organizations
            )
        }
    }
}
