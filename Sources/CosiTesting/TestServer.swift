import CosiRPC
import CosiTLS
import Logging
import NIOCore
import NIOPosix

/// Runs `body` against an ``RPCServer`` listening on 127.0.0.1 (a free port), then closes it.
public func withTestServer<R>(
    pki: TestPKI, methods: RPCMethodTable,
    configure: (inout RPCServerConfiguration) -> Void = { _ in },
    _ body: (RPCServer, Int) async throws -> R
) async throws -> R {
    var configuration = RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.serverContext())
    configure(&configuration)
    var logger = Logger(label: "test-server")
    logger.logLevel = .critical
    let server = RPCServer(configuration: configuration, methods: methods, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
    let address = try await server.start()
    do {
        let result = try await body(server, address.port!)
        await server.close()
        return result
    } catch {
        await server.close()
        throw error
    }
}

/// Connects a client with a certificate from `pki`.
public func connectTestClient(pki: TestPKI, port: Int, name: String = "tester", roles: [String] = ["os:admin"]) async throws -> RPCClientConnection {
    try await RPCClientConnection.connect(host: "127.0.0.1", port: port, tls: try pki.clientContext(name: name, roles: roles))
}
