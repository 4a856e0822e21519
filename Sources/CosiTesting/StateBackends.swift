import CosiClient
import CosiRPC
import CosiServer
import CosiState
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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

    /// The engine on SQLite in a fresh temporary directory.
    public static func sqlite(directory: String? = nil, configuration: StateEngineConfiguration = .init()) throws -> EngineBackend {
        let owned = directory == nil
        let directory = directory ?? temporaryDirectory()
        return EngineBackend(
            name: "sqlite",
            engine: try StateEngine(storage: SQLiteStorage(directory: directory, sync: .normal), configuration: configuration, logger: quietLogger),
            cleanup: { if owned { removeDirectory(directory) } }
        )
    }

    /// A new empty directory under the system's temporary directory.
    public static func temporaryDirectory() -> String {
        var template = Array("/tmp/cosi-test-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    /// Removes a test directory and its files (one level: what SQLiteStorage writes).
    public static func removeDirectory(_ path: String) {
        guard let dir = opendir(path) else { return }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { unlink(path + "/" + name) }
        }
        closedir(dir)
        rmdir(path)
    }

    /// `cosid`'s server on 127.0.0.1 over mutual TLS, backed by `engine`, with a client, for the
    /// duration of `body`; then the client closes, the server stops and the engine shuts down.
    public static func withWire<R>(engine: StateEngine, pki: TestPKI, _ body: (WireBackend) async throws -> R) async throws -> R {
        let configuration = RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.serverContext())
        let server = CosiServer(configuration: configuration, engine: engine, logger: quietLogger)
        return try await withRunningServer(server.rpc, serve: { try await server.run() }) { running in
            try await withCosiClient(CosiClientConfiguration(host: "127.0.0.1", port: running.port, tls: try pki.client())) { client in
                try await body(WireBackend(name: "wire", client: client))
            }
        }
    }
}
