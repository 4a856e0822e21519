import CosiClient
import CosiRPC
import CosiServer
import CosiState
import Logging

/// Builds the conformance backends.
public enum StateBackends {
    static var quietLogger: Logger {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return logger
    }

    /// The engine in memory.
    public static func memory(configuration: StateEngineConfiguration = .init()) throws -> EngineBackend {
        EngineBackend(name: "memory", engine: try StateEngine(storage: MemoryStorage(), configuration: configuration, logger: quietLogger))
    }

    /// `cosid`'s server on 127.0.0.1 over mutual TLS, backed by `engine`, with a client.
    public static func wire(engine: StateEngine, pki: TestPKI) async throws -> WireBackend {
        let configuration = RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.serverContext())
        let server = CosiServer(configuration: configuration, engine: engine, logger: quietLogger)
        let address = try await server.start()
        let client = try await CosiClient.connect(CosiClientConfiguration(host: "127.0.0.1", port: address.port!, tls: try pki.client()))
        return WireBackend(name: "wire", client: client) {
            await server.rpc.close()
            engine.shutdown()
        }
    }
}
