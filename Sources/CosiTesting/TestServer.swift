import CosiRPC
import CosiTLS
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A server running inside ``withRunningServer(_:serve:_:)``.
public struct RunningServer: Sendable {
    public let server: RPCServer
    /// The port it listens on (127.0.0.1).
    public let port: Int
    let stopped: Latch

    /// Begins a graceful shutdown and waits until the server has returned from serving.
    public func shutdownGracefully() async {
        server.beginGracefulShutdown()
        await stopped.wait()
    }
}

/// Runs `serve` (by default `server.serve()`) in a child task while `body` runs; when `body`
/// returns or throws, the server is cancelled (every connection closes at once) and awaited, so
/// nothing it started outlives the call.
public func withRunningServer<R>(
    _ server: RPCServer,
    serve: (@Sendable () async throws -> Void)? = nil,
    _ body: (RunningServer) async throws -> R
) async throws -> R {
    let stopped = Latch()
    let serve = serve ?? { try await server.serve() }
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            defer { stopped.open() }
            do {
                try await serve()
            } catch is CancellationError {
                // Closed at the end of the scope.
            }
        }
        do {
            let address = try await server.listeningAddress
            let result = try await body(RunningServer(server: server, port: address.port!, stopped: stopped))
            group.cancelAll()
            try await group.waitForAll()
            return result
        } catch {
            group.cancelAll()
            try? await group.waitForAll()
            throw error
        }
    }
}

/// Runs `body` against an ``RPCServer`` listening on 127.0.0.1 (a free port), then closes it.
///
/// `group` runs the server's connections: the shared singleton by default; a test that counts
/// progress (flow control, backpressure) passes a group of its own, so that other tests keeping
/// the shared loops busy cannot starve it.
public func withTestServer<R>(
    pki: TestPKI, methods: RPCMethodTable,
    configure: (inout RPCServerConfiguration) -> Void = { _ in },
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    logger: Logger = quietLogger("test-server"),
    _ body: (RPCServer, Int) async throws -> R
) async throws -> R {
    var configuration = RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.serverContext())
    configure(&configuration)
    let server = RPCServer(configuration: configuration, methods: methods, group: group, logger: logger)
    return try await withRunningServer(server) { running in try await body(server, running.port) }
}

/// Connects a client with a certificate from `pki`.
public func connectTestClient(
    pki: TestPKI, port: Int, name: String = "tester", roles: [String] = ["os:admin"],
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
) async throws -> RPCClientConnection {
    try await RPCClientConnection.connect(host: "127.0.0.1", port: port, tls: try pki.clientContext(name: name, roles: roles), group: group)
}

/// Runs `body` with an event loop group of its own (one thread), shut down afterwards.
public func withOwnEventLoops<R>(_ body: (any EventLoopGroup) async throws -> R) async throws -> R {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    do {
        let result = try await body(group)
        try await group.shutdownGracefully()
        return result
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
}

/// A logger that only reports critical problems, for servers under test.
public func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .critical
    return logger
}

/// A one-way gate: `wait()` returns once `open()` has been called.
public final class Latch: Sendable {
    private let state = NIOLockedValueBox((open: false, waiters: [CheckedContinuation<Void, Never>]()))

    public init() {}

    public func open() {
        let waiters = state.withLockedValue { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    public func wait() async {
        await withCheckedContinuation { continuation in
            let isOpen = state.withLockedValue { state in
                if !state.open { state.waiters.append(continuation) }
                return state.open
            }
            if isOpen { continuation.resume() }
        }
    }
}
