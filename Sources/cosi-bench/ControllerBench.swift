import ArgumentParser
import CosiClient
import CosiController
import CosiMessages
import CosiRPC
import CosiServer
import CosiState
import CosiTLS
import Foundation
import Histogram
import Logging
import NIOConcurrencyHelpers
import NIOPosix

/// `cosi-bench controllers`: how fast input changes become outputs through the ints -> strings
/// controller, with the controller in-process (registered in cosid's runtime) and remote (hosted by
/// `RemoteControllerHost` over mutual TLS). Everything else is the same in both: a cosid server in
/// this process (SQLite, `--sync full`), inputs written and outputs watched through clients over
/// mutual TLS on 127.0.0.1.
struct ControllersBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controllers",
        abstract: "Reconcile throughput and input-to-output latency of the ints -> strings controller, in-process and remote."
    )

    enum Placement: String, ExpressibleByArgument, CaseIterable { case inProcess = "in-process", remote, both }

    @Option(help: "Where the controller runs.") var placement: Placement = .both
    @Option(help: "Input resources the writers cycle through.") var resources = 256
    @Option(help: "Seconds of writing at full speed (throughput), and of paced writing (latency).") var seconds = 5
    @Option(help: "Paced input changes per second for the latency measurement.") var rate = 200
    @Option(help: "SQLite sync mode of the server's storage: full or normal.") var sync: String = "full"

    func run() async throws {
        let placements: [Placement] = placement == .both ? [.inProcess, .remote] : [placement]
        for placement in placements {
            print(try await Self.measure(remote: placement == .remote, resources: resources, seconds: seconds, rate: rate, sync: sync == "normal" ? .normal : .full))
        }
    }

    static let inputType = "Ints.bench.dev"
    static let outputType = "Strings.bench.dev"

    static func controller() -> DerivingController {
        DerivingController(name: "ints-to-strings", namespace: "bench", from: inputType, to: outputType) { spec in
            "text: \"\(DerivingController.value(in: spec))\"\n"
        }
    }

    static func measure(remote: Bool, resources: Int, seconds: Int, rate: Int, sync: SyncMode) async throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cosi-bench-controllers-\(getpid())-\(remote)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificates = DevelopmentCertificates(directory: dir + "/Certs")
        try FileManager.default.createDirectory(atPath: certificates.directory, withIntermediateDirectories: true)
        try certificates.ensure()
        let tls = try TLSContext(role: .server, configuration: TLSConfiguration(
            certificateChain: .file(certificates.serverCertificate), privateKey: .file(certificates.serverKey), trustRoots: .file(certificates.caCertificate)
        ))
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let engine = try StateEngine(storage: SQLiteStorage(directory: dir + "/data", sync: sync), logger: logger)
        let server = CosiServer(configuration: RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: tls), engine: engine, logger: logger, audit: logger)
        if !remote { try server.controllers.register(controller()) }

        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let port = try await server.rpc.listeningAddress.port!
            var configuration = CosiClientConfiguration.development(directory: certificates.directory, port: port)
            configuration.defaultTimeout = nil
            if remote {
                group.addTask {
                    try await withCosiClient(configuration) { client in
                        try await RemoteControllerHost(client: client, controller: controller()).run()
                    }
                }
            }
            let result = try await withCosiClient(configuration) { client in
                try await measure(client: client, engine: engine, resources: resources, seconds: seconds, rate: rate)
            }
            group.cancelAll()
            server.rpc.beginGracefulShutdown()
            try? await group.waitForAll()
            let placement = remote ? "remote" : "in-process"
            return "controllers (\(placement), \(resources) inputs, --sync \(sync.rawValue)): " + result
        }
    }

    static func input(_ index: Int, _ value: UInt64) -> Resource {
        Resource(metadata: Metadata(namespace: "bench", type: inputType, id: String(format: "i%05d", index)), spec: Spec(yamlSpec: "value: \(value)\n"))
    }

    /// Whether every output carries its input's value.
    static func converged(_ engine: StateEngine) throws -> Bool {
        let inputs = try engine.list(ResourceKind(namespace: "bench", type: inputType))
        let outputs = Dictionary(uniqueKeysWithValues: try engine.list(ResourceKind(namespace: "bench", type: outputType)).map { ($0.metadata.id, $0.spec.yamlSpec) })
        return inputs.allSatisfy { outputs[$0.metadata.id] == "text: \"\(DerivingController.value(in: $0.spec.yamlSpec))\"\n" }
    }

    static func waitConverged(_ engine: StateEngine, timeout: Duration = .seconds(120)) async throws {
        let end = ContinuousClock.now + timeout
        while try !converged(engine) {
            guard ContinuousClock.now < end else { throw ValidationError("the outputs did not converge within \(timeout)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    static func measure(client: CosiClient, engine: StateEngine, resources: Int, seconds: Int, rate: Int) async throws -> String {
        // Inputs, and their first outputs.
        var latest: [Resource] = []
        for index in 0..<resources { latest.append(try await client.create(input(index, 0))) }
        try await waitConverged(engine)

        // Throughput: 64 writers change inputs as fast as they can; the clock stops when every
        // output carries its input's last value.
        let versions = NIOLockedValueBox(latest)
        let counter = NIOLockedValueBox(UInt64(0))
        let clock = ContinuousClock()
        let start = clock.now
        let (writeRate, _) = try await drive(inFlight: 64, duration: .seconds(seconds)) { worker, iteration in
            let index = (iteration * 64 + worker) % resources
            let value = counter.withLockedValue { $0 += 1; return $0 }
            var resource = versions.withLockedValue { $0[index] }
            resource.spec.yamlSpec = "value: \(value)\n"
            do {
                let stored = try await client.update(resource)
                versions.withLockedValue { $0[index] = stored }
            } catch let error as RPCError where error.code == .failedPrecondition {
                // Two writers on one input: the other one's version won; take it next time.
                let current = try await client.get(namespace: "bench", type: inputType, id: resource.metadata.id)
                versions.withLockedValue { $0[index] = current }
            }
        }
        let written = counter.withLockedValue { $0 }
        try await waitConverged(engine)
        let elapsed = clock.now - start
        let throughput = perSecond(Int(written), elapsed)

        // Latency at a steady rate: the time from an input write to its output's change being seen
        // by a watcher (the input's value is the write's wall-clock time in microseconds).
        let latency = NIOLockedValueBox(Histogram<UInt64>(highestTrackableValue: 60_000_000))
        let watching: @Sendable () async throws -> Void = {
            let request = WatchRequest(namespace: "bench", type: outputType, apiVersion: 1)
            for try await event in client.watch(request) where event.type == .updated {
                guard let text = event.resource?.spec.yamlSpec, let sent = UInt64(DerivingController.value(in: text)), sent > 1_000_000_000 else { continue }
                let now = wallMicroseconds()
                latency.withLockedValue { _ = $0.record(now > sent ? now - sent : 0) }
            }
        }
        let samples = try await whileRunning(watching) {
            try await Task.sleep(for: .milliseconds(200))
            let interval = Duration.seconds(1) / rate
            var next = clock.now
            for step in 0..<(rate * seconds) {
                next += interval
                try await Task.sleep(until: next, clock: clock)
                let index = step % resources
                var resource = versions.withLockedValue { $0[index] }
                resource.spec.yamlSpec = "value: \(wallMicroseconds())\n"
                let stored = try await client.update(resource)
                versions.withLockedValue { $0[index] = stored }
            }
            try await waitConverged(engine)
            try await Task.sleep(for: .milliseconds(200))
            return latency.withLockedValue { $0.totalCount }
        }
        let histogram = latency.withLockedValue { $0 }
        return String(
            format: "%.0f input changes/s turned into outputs (%llu writes at %.0f/s, converged in %.2f s); at %d changes/s: input-to-output p50 %.2f ms, p99 %.2f ms (%llu samples)",
            throughput, written, writeRate, Double(microseconds(elapsed)) / 1e6, rate,
            Double(histogram.valueAtPercentile(50)) / 1000, Double(histogram.valueAtPercentile(99)) / 1000, samples
        )
    }
}
