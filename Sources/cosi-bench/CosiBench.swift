import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import CosiTLS
import Foundation
import Histogram
import NIOCore
import NIOPosix

/// `cosi-bench`: measures cosid over mutual TLS on loopback.
///
/// By default it starts `cosid` (from the same directory as itself) as a separate process on a
/// free port with fresh development certificates, so client and server do not share a heap and
/// the server's memory can be read from /proc. `--port` measures a server that is already running.
@main
struct CosiBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cosi-bench",
        abstract: "Benchmarks cosid: unary call throughput and latency, handshakes, idle-connection memory.",
        discussion: """
        Build both in release mode first: swift build -c release --product cosid; swift build -c release --product cosi-bench

        Examples:
          .build/release/cosi-bench unary --in-flight 64 --seconds 10
          .build/release/cosi-bench handshakes --seconds 5
          .build/release/cosi-bench idle --connections 1000
          .build/release/cosi-bench all
        """,
        subcommands: [Unary.self, Handshakes.self, Idle.self, All.self, StateWrites.self, StateReads.self, WatchDelivery.self, IdleWatches.self, StateAll.self, ControllersBench.self, OSControllersBench.self, NetworkBench.self, LogRetention.self, PutLoad.self, GetLoad.self, WatchLoad.self, EngineWrites.self, ChangesBench.self, FleetBench.self, CrashLoop.self, Soak.self],
        defaultSubcommand: All.self
    )
}

struct ServerOptions: ParsableArguments {
    @Option(help: "Port of an already running cosid (default: start one).")
    var port: Int?

    @Option(help: "Directory of the certificates for --port (admin.crt, admin.key, ca.crt).")
    var certsDir: String?

    @Option(help: "Storage of the cosid started by the benchmark: full, normal (SQLite --sync modes) or memory.")
    var storage: String = "memory"
}

/// A cosid child process, or an external server.
final class BenchServer: @unchecked Sendable {
    let port: Int
    let certsDir: String
    let process: Process?

    init(_ options: ServerOptions, extraArguments: [String] = []) throws {
        if let port = options.port {
            self.port = port
            self.certsDir = options.certsDir ?? "Certs"
            self.process = nil
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cosi-bench-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let port = Int.random(in: 20_000...40_000)
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cosid")
        let process = Process()
        process.executableURL = executable
        process.arguments = ["--listen", "127.0.0.1:\(port)", "--certs-dir", dir, "--log-level", "warning"]
            + (options.storage == "memory" ? ["--in-memory"] : ["--data-dir", dir + "/data", "--sync", options.storage]) + extraArguments
        try process.run()
        self.port = port
        self.certsDir = dir
        self.process = process
    }

    func client() -> CosiClientConfiguration {
        var configuration = CosiClientConfiguration.development(directory: certsDir, port: port)
        configuration.defaultTimeout = nil
        return configuration
    }

    /// Waits until the server answers Info.
    func waitReady() async throws {
        for _ in 0..<200 {
            if let client = try? await CosiClient.connect(client()) {
                _ = try await client.info()
                await client.close()
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ValidationError("cosid did not start on port \(port)")
    }

    /// The server's resident memory in KiB (VmRSS), when it is our child.
    func residentKiB() -> Int? {
        guard let pid = process?.processIdentifier, process?.isRunning == true,
              let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "")
        }
        return nil
    }

    func stop() {
        guard let process, process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: certsDir)
    }

    /// Runs `body` on a fresh server with the given storage.
    static func with<R>(_ options: ServerOptions, storage: String? = nil, extraArguments: [String] = [], _ body: (BenchServer) async throws -> R) async throws -> R {
        var options = options
        if let storage { options.storage = storage }
        let bench = try BenchServer(options, extraArguments: extraArguments)
        defer { bench.stop() }
        try await bench.waitReady()
        return try await body(bench)
    }
}

struct Unary: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unary Info calls per second and latency on one connection.")
    @OptionGroup var server: ServerOptions
    @Option(help: "Calls in flight at once on the connection.") var inFlight = 64
    @Option(help: "Seconds to measure (after 1 s of warm-up).") var seconds = 10

    func run() async throws {
        try await BenchServer.with(server) { print(try await Self.measure($0, inFlight: inFlight, seconds: seconds)) }
    }

    static func measure(_ bench: BenchServer, inFlight: Int, seconds: Int) async throws -> String {
        let client = try await CosiClient.connect(bench.client())
        let request = Envelope.InfoRequest().serializedBytes()
        let method = "/cosi.rpc.v1.Server/Info"
        let work: @Sendable (Int, Int) async throws -> Void = { _, _ in
            _ = try await client.connection.unary(method, request: request)
        }
        _ = try await drive(inFlight: inFlight, duration: .seconds(1), work) // warm-up
        let (rate, histogram) = try await drive(inFlight: inFlight, duration: .seconds(seconds), work)
        await client.close()
        return String(
            format: "unary Info, %d in flight: %.0f calls/s, latency p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms (%llu calls)",
            inFlight, rate,
            Double(histogram.valueAtPercentile(50)) / 1000, Double(histogram.valueAtPercentile(99)) / 1000,
            Double(histogram.valueAtPercentile(99.9)) / 1000, histogram.totalCount
        )
    }
}

struct Handshakes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mutual-TLS connections established per second (connect, handshake, SETTINGS, close).")
    @OptionGroup var server: ServerOptions
    @Option(help: "Concurrent connectors.") var concurrency = 4
    @Option(help: "Seconds to measure.") var seconds = 5

    func run() async throws {
        try await BenchServer.with(server) { print(try await Self.measure($0, concurrency: concurrency, seconds: seconds)) }
    }

    static func measure(_ bench: BenchServer, concurrency: Int, seconds: Int) async throws -> String {
        let configuration = bench.client()
        let tls = try TLSContext(role: .client, configuration: configuration.tls)
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + .seconds(seconds)
        let count = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var count = 0
                    while clock.now < end {
                        let connection = try await RPCClientConnection.connect(host: configuration.host, port: configuration.port, tls: tls)
                        await connection.close()
                        count += 1
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = clock.now - start
        let rate = perSecond(count, elapsed)
        return String(format: "handshakes: %.0f mutual-TLS connections/s (%d in %d s, %d concurrent)", rate, count, seconds, concurrency)
    }
}

struct Idle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Server memory per idle connection (needs the server as a child process).")
    @OptionGroup var server: ServerOptions
    @Option(help: "Idle connections to open.") var connections = 1000

    func run() async throws {
        try await BenchServer.with(server) { print(try await Self.measure($0, connections: connections)) }
    }

    static func measure(_ bench: BenchServer, connections count: Int) async throws -> String {
        let configuration = bench.client()
        let tls = try TLSContext(role: .client, configuration: configuration.tls)
        try await Task.sleep(for: .milliseconds(500))
        guard let before = bench.residentKiB() else { return "idle: server memory is only measured when cosi-bench starts cosid itself" }
        var open: [RPCClientConnection] = []
        for _ in 0..<count {
            open.append(try await RPCClientConnection.connect(host: configuration.host, port: configuration.port, tls: tls))
        }
        // Each connection has made one call, as a real client would.
        for connection in open { _ = try await connection.unary("/cosi.rpc.v1.Server/Info", request: ByteBuffer()) }
        try await Task.sleep(for: .seconds(2))
        let after = bench.residentKiB() ?? before
        for connection in open { await connection.close() }
        let perConnection = Double(after - before) * 1024 / Double(count)
        return String(format: "idle connections: %d open, server RSS %d KiB -> %d KiB, %.1f KiB per connection", count, before, after, perConnection / 1024)
    }
}

struct All: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Every measurement, as reported in docs/PERFORMANCE.md.")
    @OptionGroup var server: ServerOptions
    @Option(help: "Seconds per throughput measurement.") var seconds = 10

    func run() async throws {
        let seconds = self.seconds
        try await BenchServer.with(server) { bench in
            print(try await Unary.measure(bench, inFlight: 1, seconds: seconds))
            print(try await Unary.measure(bench, inFlight: 64, seconds: seconds))
            print(try await Handshakes.measure(bench, concurrency: 4, seconds: min(seconds, 5)))
            print(try await Idle.measure(bench, connections: 1000))
        }
    }
}

/// `count` events over `elapsed`, per second.
func perSecond(_ count: Int, _ elapsed: Duration) -> Double {
    Double(count) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}
