import CosiController
import CosiMessages
import CosiRPC
import CosiServer
import CosiState
import CosiTLS
import CosiTesting
import Foundation
import NIOPosix
import Testing

/// The chain ints -> strings -> sentences with its middle controller in another process
/// (`cosi-controller-example`), over mutual TLS, across a disconnect.
@Suite("A remote controller in another process", .serialized, .timeLimit(.minutes(2)))
struct RemoteControllerTests {
    static var example: URL { CosidProcessTests.executable.deletingLastPathComponent().appendingPathComponent("cosi-controller-example") }

    func ids(_ engine: StateEngine, _ type: String) throws -> [String] {
        try engine.list(ResourceKind(namespace: "default", type: type)).map(\.metadata.id)
    }

    func spec(_ engine: StateEngine, _ type: String, _ id: String) -> String? {
        (try? engine.get(ResourceAddress(namespace: "default", type: type, id: id)))?.spec.yamlSpec
    }

    @Test func theChainConvergesAcrossAProcessBoundaryAndADisconnect() async throws {
        let dir = StateBackends.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificates = DevelopmentCertificates(directory: dir + "/Certs")
        try certificates.ensure()
        let tls = try TLSContext(role: .server, configuration: TLSConfiguration(
            certificateChain: .file(certificates.serverCertificate), privateKey: .file(certificates.serverKey), trustRoots: .file(certificates.caCertificate)
        ))
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        // The runtime and services of a cosid, with the transport started and stopped by hand.
        let cosid = CosiServer(configuration: RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: tls), engine: engine, logger: quietLogger("test"), audit: quietLogger("audit"))
        let methods = CosiServer.methods(engine: engine, controllers: cosid.controllerService, changes: cosid.changes, audit: quietLogger("audit"))
        func transport(port: Int) -> RPCServer {
            var configuration = RPCServerConfiguration(host: "127.0.0.1", port: port, tls: tls)
            configuration.gracePeriod = .seconds(1)
            return RPCServer(configuration: configuration, methods: methods, group: MultiThreadedEventLoopGroup.singleton, logger: quietLogger("test"))
        }
        try cosid.controllers.register(DerivingController.chain().1)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await cosid.controllers.run() }
            group.addTask { await cosid.controllerService.expireDisconnected() }
            let process = Process()
            defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }

            let port = try await withRunningServer(transport(port: 0)) { first in
                process.executableURL = Self.example
                process.arguments = [
                    "--endpoint", "127.0.0.1:\(first.port)", "--certs-dir", certificates.directory,
                    "--name", "ints-to-strings", "--from", "Ints.test.dev", "--to", "Strings.test.dev", "--template", "text: \"{value}\"",
                ]
                process.standardOutput = FileHandle.nullDevice
                try process.run()
                for value in 1...3 { _ = try await engine.create(int("n\(value)", value), owner: "") }
                try await eventually("three sentences") { try ids(engine, "Sentences.test.dev") == ["n1", "n2", "n3"] }
                #expect(spec(engine, "Sentences.test.dev", "n2") == "sentence: \"the number is 2\"\n")
                let remote = try #require(cosid.controllers.controllers.first { $0.name == "ints-to-strings" })
                #expect(remote.origin == .remote(identity: "admin"))
                // Disconnect: the transport goes away (the event stream ends with UNAVAILABLE).
                await first.shutdownGracefully()
                return first.port
            }

            // A change while the remote controller cannot be reached...
            var n1 = try engine.get(ResourceAddress(namespace: "default", type: "Ints.test.dev", id: "n1"))
            n1.spec.yamlSpec = "value: 10\n"
            _ = try await engine.update(n1, owner: "")
            try await eventually("the runtime noticed the disconnect") {
                cosid.controllers.controllers.first { $0.name == "ints-to-strings" }?.running == false
            }

            // ...is reconciled once it reconnects with its token to the same address.
            try await withRunningServer(transport(port: port)) { _ in
                try await eventually("the change reaches the sentence") {
                    spec(engine, "Sentences.test.dev", "n1") == "sentence: \"the number is 10\"\n"
                }
                // The reconcile may come first (the host retries a reconcile that failed while the
                // server was away), its event stream a backoff later.
                try await eventually("its event stream is back") {
                    cosid.controllers.controllers.first { $0.name == "ints-to-strings" }?.running == true
                }
                let remote = try #require(cosid.controllers.controllers.first { $0.name == "ints-to-strings" })
                #expect(remote.restarts >= 1, "the broken stream counts as a restart")
                #expect(cosid.controllers.controllers.count == 2, "still one registration: it kept its token")

                // Tearing an input down waits for both controllers, across the process boundary.
                try await engine.teardownAndDestroy(ResourceAddress(namespace: "default", type: "Ints.test.dev", id: "n2"), owner: "")
                try await eventually("no orphans") {
                    try ids(engine, "Strings.test.dev") == ["n1", "n3"] && ids(engine, "Sentences.test.dev") == ["n1", "n3"]
                }
                #expect(try engine.list(ResourceKind(namespace: "default", type: "Strings.test.dev")).allSatisfy { $0.metadata.finalizers == ["strings-to-sentences"] })
            }
            group.cancelAll()
        }
    }

    func int(_ id: String, _ value: Int) -> Resource {
        Resource(metadata: Metadata(namespace: "default", type: "Ints.test.dev", id: id), spec: Spec(yamlSpec: "value: \(value)\n"))
    }
}
