import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import Foundation
import Histogram
import NIOConcurrencyHelpers

/// A fleet on one machine: N cosid processes (in-memory state, one port each), then
/// `cosictl --nodes` (all N) and a ``CosiFleet`` merged watch over all N with a writer per node.
struct FleetBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "N cosids on this machine: cosictl --nodes get wall time, a CosiFleet merged watch over all with a writer per node (events/s, delivery latency), client memory per node watched.",
        discussion: """
        Needs cosid and cosictl next to cosi-bench (swift build -c release --product cosid;
        --product cosictl; --product cosi-bench).

        Example:
          .build/release/cosi-bench fleet --nodes 100 --seconds 10 --rate 20
        """
    )

    @Option(help: "cosid processes to start.") var nodes = 100
    @Option(help: "Seconds the writers write while the merged watch follows.") var seconds = 10
    @Option(help: "Writes per second of each node's writer (0: as fast as each can).") var rate = 20
    @Option(help: "Rounds of cosictl get (the median is printed).") var rounds = 5

    func run() async throws {
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cosi-bench-fleet-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var processes: [Process] = []
        defer {
            for process in processes where process.isRunning { process.terminate() }
            for process in processes { process.waitUntilExit() }
            try? FileManager.default.removeItem(atPath: dir)
        }
        let base = Int.random(in: 21_000...30_000)
        let ports = (0..<nodes).map { base + $0 }
        func start(_ port: Int) throws -> Process {
            let process = Process()
            process.executableURL = here.appendingPathComponent("cosid")
            process.arguments = [
                "--listen", "127.0.0.1:\(port)", "--certs-dir", dir + "/Certs", "--in-memory", "--controllers", "none",
                "--root", dir + "/root-\(port)", "--log-level", "error",
            ]
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        // The first creates the development certificates the others then use.
        processes.append(try start(ports[0]))
        let template = CosiClientConfiguration.development(directory: dir + "/Certs", port: ports[0])
        try await waitReady(template)
        for port in ports.dropFirst() { processes.append(try start(port)) }
        for port in ports.dropFirst() {
            var configuration = template
            configuration.port = port
            try await waitReady(configuration)
        }
        let serverKiB = processes.compactMap { residentKiB($0.processIdentifier) }
        print("\(nodes) cosid processes started: RSS \(serverKiB.reduce(0, +) / 1024) MiB in all, \(serverKiB.reduce(0, +) / max(1, serverKiB.count) / 1024) MiB each")

        // 1. cosictl --nodes (all) get: wall time of the whole command.
        let list = ports.map { "127.0.0.1:\($0)" }.joined(separator: ",")
        var walls: [Double] = []
        for _ in 0..<rounds {
            let process = Process()
            process.executableURL = here.appendingPathComponent("cosictl")
            process.arguments = ["get", "ns", "--nodes", list, "--ca", dir + "/Certs/ca.crt", "--cert", dir + "/Certs/admin.crt", "--key", dir + "/Certs/admin.key"]
            process.environment = ["COSICONFIG": dir + "/none.yaml", "HOME": dir]
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            let began = ContinuousClock.now
            try process.run()
            let text = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            walls.append(milliseconds(ContinuousClock.now - began))
            let rows = String(decoding: text, as: UTF8.self).split(separator: "\n").count - 1
            guard process.terminationStatus == 0, rows >= nodes else {
                throw ValidationError("cosictl get --nodes failed (exit \(process.terminationStatus), \(rows) rows)")
            }
        }
        print(String(format: "cosictl --nodes (%d) get ns: median %.0f ms, min %.0f ms, max %.0f ms (%d rounds, whole process: start, %d TLS handshakes, calls, output)",
                     nodes, walls.sorted()[walls.count / 2], walls.min()!, walls.max()!, rounds, nodes))

        // 2. One CosiFleet merged watch over every node; memory per node watched.
        let fleetNodes = ports.map { CosiNode(host: "127.0.0.1", port: $0) }
        var configuration = template
        configuration.defaultTimeout = nil
        let fleet = CosiFleet(nodes: fleetNodes, configuration: configuration)
        // Warm the client side (event loops, TLS library) on one connection before measuring.
        let warm = try await CosiClient.connect(configuration)
        _ = try await warm.info()
        await warm.close()
        try await Task.sleep(for: .milliseconds(200))
        let before = residentKiB(getpid()) ?? 0
        // The connections alone (one Info per node), then the watches on them.
        let answers = await fleet.fanOut { _, client in try await client.info().version }
        guard answers.allSatisfy({ $0.value != nil }) else { throw ValidationError("not every node answered Info") }
        try await Task.sleep(for: .milliseconds(500))
        let connected = residentKiB(getpid()) ?? 0
        var request = WatchRequest(namespace: "default", type: "Ticks.bench.dev", apiVersion: 1)
        request.options = WatchOptions()
        let watch = fleet.watch(request)
        let received = NIOLockedValueBox(Histogram<UInt64>(highestTrackableValue: 60_000_000))
        let counted = ManagedAtomicCounter()
        let epoch = ContinuousClock.now
        let reader = Task {
            for try await tagged in watch {
                guard let resource = tagged.event.resource, let stamp = UInt64(resource.metadata.labels["t"] ?? "") else { continue }
                let now = UInt64(max(0, microseconds(ContinuousClock.now - epoch)))
                received.withLockedValue { _ = $0.record(now > stamp ? now - stamp : 0) }
                counted.add()
            }
        }
        let connectedBy = ContinuousClock.now + .seconds(60)
        while watch.states.contains(where: { if case .connected = $0.state { false } else { true } }) {
            guard ContinuousClock.now < connectedBy else { throw ValidationError("not every node's watch connected within 60 s") }
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Task.sleep(for: .milliseconds(500))
        let after = residentKiB(getpid()) ?? 0
        print(String(format: "CosiFleet over %d nodes: client RSS %d KiB before, %d KiB connected (%.1f KiB per connection), %d KiB with every node watched: %.1f KiB per node watched (connection, TLS, watch), of which the watch %.1f KiB",
                     nodes, before, connected, Double(connected - before) / Double(nodes), after, Double(after - before) / Double(nodes), Double(after - connected) / Double(nodes)))

        // 3. A writer per node (its own connection), at `rate` writes/s each.
        let shared = configuration
        let writers = try await withThrowingTaskGroup(of: CosiClient.self) { group in
            for port in ports {
                group.addTask {
                    var own = shared
                    own.port = port
                    return try await CosiClient.connect(own)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let deadline = ContinuousClock.now + .seconds(seconds)
        let writes = ManagedAtomicCounter()
        let startCount = counted.value
        let began = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, client) in writers.enumerated() {
                group.addTask {
                    // Spread over the period, so the writers do not all write at the same instant.
                    var next = ContinuousClock.now + (rate > 0 ? .microseconds(1_000_000 / rate * index / writers.count) : .zero)
                    if rate > 0 { try await Task.sleep(until: next) }
                    var version = 0
                    while ContinuousClock.now < deadline {
                        let stamp = UInt64(max(0, microseconds(ContinuousClock.now - epoch)))
                        var resource = Resource(metadata: Metadata(namespace: "default", type: "Ticks.bench.dev", id: "w\(index)"), spec: Spec(yamlSpec: "n: \(version)\n"))
                        resource.metadata.labels["t"] = String(stamp)
                        if version == 0 {
                            _ = try await client.create(resource)
                        } else {
                            resource.metadata.version = String(version)
                            _ = try await client.update(resource)
                        }
                        version += 1
                        writes.add()
                        if rate > 0 {
                            next += .microseconds(1_000_000 / rate)
                            if next > ContinuousClock.now { try await Task.sleep(until: next) }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let written = writes.value
        let drainBy = ContinuousClock.now + .seconds(30)
        while counted.value - startCount < written, ContinuousClock.now < drainBy { try await Task.sleep(for: .milliseconds(20)) }
        let elapsed = ContinuousClock.now - began
        let delivered = counted.value - startCount
        let histogram = received.withLockedValue { $0 }
        print(String(format: "merged watch, %d writers (%@): %d written, %d delivered in %.1f s: %.0f events/s; delivery p50 %.2f ms, p99 %.2f ms, max %.2f ms",
                     nodes, rate > 0 ? "\(rate)/s each" : "as fast as each can", written, delivered, milliseconds(elapsed) / 1000,
                     Double(delivered) / (milliseconds(elapsed) / 1000), Double(histogram.valueAtPercentile(50)) / 1000,
                     Double(histogram.valueAtPercentile(99)) / 1000, Double(histogram.max) / 1000))
        if delivered != written { print("LOST: \(written - delivered) events were not delivered") }
        let states = watch.states.filter { if case .connected = $0.state { false } else { true } }
        if !states.isEmpty { print("nodes not connected at the end: \(states.map { "\($0.node) \($0.state)" }.joined(separator: ", "))") }
        reader.cancel()
        _ = await reader.result
        for client in writers { await client.close() }
        await fleet.close()
    }

    private func waitReady(_ configuration: CosiClientConfiguration) async throws {
        for _ in 0..<400 {
            if let client = try? await CosiClient.connect(configuration) {
                _ = try await client.info()
                await client.close()
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ValidationError("cosid did not start on port \(configuration.port)")
    }

    private func residentKiB(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "")
        }
        return nil
    }

    private func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    private func microseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
    }
}

/// A counter shared by tasks.
final class ManagedAtomicCounter: Sendable {
    private let box = NIOLockedValueBox(0)
    func add() { box.withLockedValue { $0 += 1 } }
    var value: Int { box.withLockedValue { $0 } }
}
