import CosiClient
import Foundation
import Testing

/// Runs the real `cosid` executable: first-run certificates, Info over mutual TLS, logs, SIGTERM.
@Suite("cosid process", .timeLimit(.minutes(1)))
struct CosidProcessTests {
    /// The `cosid` built next to the test bundle.
    static var executable: URL {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // On Linux the test binary sits in the build directory; elsewhere inside a bundle.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("cosid").path), directory.path != "/" {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("cosid")
    }

    /// The port cosid logged it listens on.
    static func port(from output: Output) async throws -> Int {
        for _ in 0..<400 {
            if let line = output.value.split(separator: "\n").first(where: { $0.contains("listening") }),
               let digits = line.split(separator: ":").last?.prefix(while: \.isNumber), let port = Int(digits) {
                return port
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw CancellationError()
    }

    /// Waits until cosid logs `text`.
    static func waitFor(_ text: String, in output: Output) async throws {
        for _ in 0..<400 {
            if output.value.contains(text) { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        Issue.record("cosid did not log \"\(text)\": \(output.value)")
    }

    final class Output: @unchecked Sendable {
        private let lock = NSLock()
        private var text = ""
        func append(_ data: Data) { lock.withLock { text += String(decoding: data, as: UTF8.self) } }
        var value: String { lock.withLock { text } }
    }

    @Test func firstRunServesInfoAndShutsDownOnSIGTERM() async throws {
        let certs = FileManager.default.temporaryDirectory.appendingPathComponent("cosid-test-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: certs) }

        let process = Process()
        process.executableURL = Self.executable
        process.arguments = ["--listen", "127.0.0.1:0", "--certs-dir", certs]
        let pipe = Pipe()
        let output = Output()
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        // The bound port, from the "listening" log line.
        var port: Int?
        for _ in 0..<200 where port == nil {
            try await Task.sleep(for: .milliseconds(50))
            if let line = output.value.split(separator: "\n").first(where: { $0.contains("listening") }),
               let digits = line.split(separator: ":").last?.prefix(while: \.isNumber) {
                port = Int(digits)
            }
        }
        let boundPort = try #require(port, "cosid did not log its address: \(output.value)")

        // Development certificates were created, keys private.
        for name in ["ca.key", "server.key", "admin.key"] {
            let attributes = try FileManager.default.attributesOfItem(atPath: certs + "/" + name)
            #expect((attributes[.posixPermissions] as? Int) == 0o600, "\(name)")
        }

        let client = try await CosiClient.connect(.development(directory: certs, port: boundPort))
        let info = try await client.info()
        #expect(info.identity == "admin")
        #expect(info.roles == ["os:admin"])
        #expect(info.methods.contains("/cosi.rpc.v1.Server/Info"))
        #expect(!info.version.isEmpty)

        // SIGTERM: the server says GOAWAY, the client connection ends, the process exits cleanly.
        process.terminate()
        try await client.connection.closeFuture.get()
        for _ in 0..<100 where process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!process.isRunning)
        #expect(process.terminationStatus == 0)
        let log = output.value
        #expect(log.contains("connection open"), "\(log)")
        #expect(log.contains("peer=admin"), "\(log)")
        #expect(log.contains("stopped"), "\(log)")
    }

    @Test func badCertificatePathIsOneClearError() async throws {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = ["--listen", "127.0.0.1:0", "--ca", "/nonexistent/ca.crt", "--cert", "/nonexistent/s.crt", "--key", "/nonexistent/s.key"]
        let pipe = Pipe()
        process.standardError = pipe
        try process.run()
        process.waitUntilExit()
        let log = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus != 0)
        #expect(log.contains("cannot read certificate file /nonexistent/s.crt"), "\(log)")
    }
}

@Suite("cosid configuration file")
struct CosidConfigTests {
    func run(_ arguments: [String]) throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = CosidProcessTests.executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outText = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, outText, errText)
    }

    @Test func settingsComeFromTheFileAndFlagsWin() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cosid-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "listen: 0.0.0.0:6000\nsync: normal\nretain-events: 500\nin-memory: true\n".write(toFile: path, atomically: true, encoding: .utf8)
        let (status, out, _) = try run(["--config", path, "--print-config", "--retain-events", "7"])
        #expect(status == 0)
        #expect(out.contains("listen: 0.0.0.0:6000\n"))
        #expect(out.contains("sync: normal\n"))
        #expect(out.contains("in-memory: true\n"))
        #expect(out.contains("retain-events: 7\n"), "the flag wins over the file")
        #expect(out.contains("data-dir: data\n"), "defaults fill the rest")
    }

    @Test func unknownSettingsAndBadValuesAreClearErrors() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cosid-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "lisen: 1\n".write(toFile: path, atomically: true, encoding: .utf8)
        let (status, _, err) = try run(["--config", path, "--print-config"])
        #expect(status != 0)
        #expect(err.contains("unknown setting \"lisen\""))
        try "sync: sometimes\n".write(toFile: path, atomically: true, encoding: .utf8)
        let (status2, _, err2) = try run(["--config", path, "--print-config"])
        #expect(status2 != 0)
        #expect(err2.contains("--sync must be full or normal"))
    }
}

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@Suite("cosid metrics", .timeLimit(.minutes(1)))
struct CosidMetricsTests {
    @Test func metricsAreExportedInThePrometheusFormat() async throws {
        let certs = FileManager.default.temporaryDirectory.appendingPathComponent("cosid-metrics-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: certs) }
        let metricsPort = Int.random(in: 20_000...60_000)
        let process = Process()
        process.executableURL = CosidProcessTests.executable
        process.arguments = ["--listen", "127.0.0.1:0", "--in-memory", "--certs-dir", certs, "--metrics-listen", "127.0.0.1:\(metricsPort)"]
        let pipe = Pipe()
        let output = CosidProcessTests.Output()
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
        try process.run()
        defer { process.terminate() }
        let port = try await CosidProcessTests.port(from: output)
        try await CosidProcessTests.waitFor("metrics endpoint listening", in: output)
        let client = try await CosiClient.connect(.development(directory: certs, port: port))
        _ = try await client.info()
        _ = try? await client.get(namespace: "default", type: "Missing.test.dev", id: "x")
        let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("cosi_connections 1"), "\(text.prefix(2000))")
        #expect(text.contains(#"cosi_calls_total{method="/cosi.resource.State/Get",code="NOT_FOUND"} 1"#))
        #expect(text.contains("cosi_state_revision") || text.contains("cosi_call_duration_seconds"))
        await client.close()
    }
}
