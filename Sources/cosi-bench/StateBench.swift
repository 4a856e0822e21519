import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore

/// A resource with a 256-byte spec, as the issue's benchmark asks.
func benchResource(_ type: String, _ id: String) -> Resource {
    Resource(
        metadata: Metadata(namespace: "bench", type: type, id: id, labels: ["app": "bench"]),
        spec: Spec(protoSpec: Array(repeating: 0x61, count: 256))
    )
}

/// Runs `inFlight` workers until `duration` passes; each calls `work(worker, iteration)`.
/// Returns the number of calls per second and a latency histogram (microseconds).
func drive(inFlight: Int, duration: Duration, _ work: @escaping @Sendable (Int, Int) async throws -> Void) async throws -> (Double, Histogram<UInt64>) {
    let clock = ContinuousClock()
    let start = clock.now
    let end = start + duration
    let total = try await withThrowingTaskGroup(of: Histogram<UInt64>.self) { group in
        for worker in 0..<inFlight {
            group.addTask {
                var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000)
                var iteration = 0
                while clock.now < end {
                    let began = clock.now
                    try await work(worker, iteration)
                    iteration += 1
                    histogram.record(microseconds(clock.now - began))
                }
                return histogram
            }
        }
        var total = Histogram<UInt64>(highestTrackableValue: 60_000_000)
        for try await histogram in group { total.add(histogram) }
        return total
    }
    return (perSecond(Int(total.totalCount), clock.now - start), total)
}

/// Connects `count` clients, runs `body` with them, and closes them all before returning.
func withClients<R>(_ count: Int, _ bench: BenchServer, _ body: ([CosiClient]) async throws -> R) async throws -> R {
    var clients: [CosiClient] = []
    do {
        for _ in 0..<count { clients.append(try await CosiClient.connect(bench.client())) }
        let result = try await body(clients)
        for client in clients { await client.close() }
        return result
    } catch {
        for client in clients { await client.close() }
        throw error
    }
}

/// Runs `background` in a child task while `body` runs; then cancels it and waits for it.
func whileRunning<R: Sendable>(_ background: @escaping @Sendable () async throws -> Void, _ body: () async throws -> R) async throws -> R {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try? await background() }
        let result = try await body()
        group.cancelAll()
        return result
    }
}

func microseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    return UInt64(max(0, seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
}

func describe(_ name: String, _ rate: Double, _ histogram: Histogram<UInt64>) -> String {
    String(format: "%@: %.0f/s, p50 %.2f ms, p99 %.2f ms", name, rate, Double(histogram.valueAtPercentile(50)) / 1000, Double(histogram.valueAtPercentile(99)) / 1000)
}

struct StateWrites: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create and Update per second (64 in flight, 256-byte spec).")
    @OptionGroup var server: ServerOptions
    @Option var inFlight = 64
    @Option var seconds = 5

    func run() async throws {
        try await BenchServer.with(server) { print(try await Self.measure($0, storage: server.storage, inFlight: inFlight, seconds: seconds)) }
    }

    static func measure(_ bench: BenchServer, storage: String, inFlight: Int, seconds: Int) async throws -> String {
        try await withCosiClient(bench.client()) { client in try await measure(client, storage: storage, inFlight: inFlight, seconds: seconds) }
    }

    static func measure(_ client: CosiClient, storage: String, inFlight: Int, seconds: Int) async throws -> String {
        let type = "Writes.bench.dev"
        let created = NIOLockedValueBox([Int: Resource]())
        let (createRate, createHistogram) = try await drive(inFlight: inFlight, duration: .seconds(seconds)) { worker, iteration in
            let id = "w\(worker)-\(iteration)"
            let stored = try await client.create(benchResource(type, id), owner: "")
            if iteration == 0 { created.withLockedValue { $0[worker] = stored } }
        }
        let latest = NIOLockedValueBox(created.withLockedValue { $0 })
        let (updateRate, updateHistogram) = try await drive(inFlight: inFlight, duration: .seconds(seconds)) { worker, _ in
            var resource = latest.withLockedValue { $0[worker]! }
            resource.metadata.annotations = ["n": "\(resource.metadata.version)"]
            let stored = try await client.update(resource, owner: "")
            latest.withLockedValue { $0[worker] = stored }
        }
        return describe("create (\(storage))", createRate, createHistogram) + "\n" + describe("update (\(storage))", updateRate, updateHistogram)
    }
}

struct StateReads: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Get per second (64 in flight) and List of 10,000 resources.")
    @OptionGroup var server: ServerOptions
    @Option var seconds = 5
    @Option(help: "Client connections the 64 Gets in flight are spread over.") var connections = 1

    func run() async throws {
        try await BenchServer.with(server) { print(try await Self.measure($0, seconds: seconds, connections: connections)) }
    }

    static func measure(_ bench: BenchServer, seconds: Int, connections: Int = 1) async throws -> String {
        try await withClients(max(connections, 1), bench) { getters in try await measure(getters, seconds: seconds) }
    }

    static func measure(_ getters: [CosiClient], seconds: Int) async throws -> String {
        let client = getters[0]
        let type = "Reads.bench.dev"
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<64 {
                group.addTask {
                    for index in stride(from: worker, to: 10_000, by: 64) {
                        _ = try await client.create(benchResource(type, String(format: "r%05d", index)), owner: "")
                    }
                }
            }
            try await group.waitForAll()
        }
        let (getRate, getHistogram) = try await drive(inFlight: 64, duration: .seconds(seconds)) { worker, iteration in
            _ = try await getters[worker % getters.count].get(namespace: "bench", type: type, id: String(format: "r%05d", (iteration * 64 + worker) % 10_000))
        }
        let clock = ContinuousClock()
        var listTimes: [Duration] = []
        for _ in 0..<5 {
            let start = clock.now
            let listed = try await client.list(namespace: "bench", type: type)
            listTimes.append(clock.now - start)
            guard listed.count == 10_000 else { throw ValidationError("List returned \(listed.count)") }
        }
        let best = listTimes.min()!
        return describe("get (\(getters.count) connection\(getters.count == 1 ? "" : "s"))", getRate, getHistogram) + "\n" + String(format: "list of 10,000 resources: %.1f ms (best of 5; %.0f resources/s)", Double(microseconds(best)) / 1000, perSecond(10_000, best))
    }
}

struct WatchDelivery: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Events delivered per second to N watchers of one kind while a writer updates at full speed.")
    @OptionGroup var server: ServerOptions
    @Option var watchers = 1
    @Option var seconds = 5
    @Flag(help: "Decode every watch response whole with the client library, instead of scanning the fields the benchmark reads.") var decode = false

    func run() async throws {
        try await BenchServer.with(server) { print(try await Self.measure($0, watchers: watchers, seconds: seconds, decode: decode)) }
    }

    static func measure(_ bench: BenchServer, watchers: Int, seconds: Int, decode: Bool = false) async throws -> String {
        // The writer and the watchers' connections (at most 100 streams each).
        try await withClients(1 + max(1, (watchers + 99) / 100), bench) { clients in
            try await measure(writer: clients[0], watchers: watchers, clients: Array(clients.dropFirst()), seconds: seconds, decode: decode)
        }
    }

    static func measure(writer: CosiClient, watchers: Int, clients: [CosiClient], seconds: Int, decode: Bool) async throws -> String {
        let type = "Watch.bench.dev"
        var resources: [Resource] = []
        for index in 0..<16 { resources.append(try await writer.create(benchResource(type, "w\(index)"), owner: "")) }

        let connections = clients.count
        let delivered = NIOLockedValueBox(0)
        let latency = NIOLockedValueBox(Histogram<UInt64>(highestTrackableValue: 60_000_000))
        let measuring = NIOLockedValueBox(false)
        let ready = NIOLockedValueBox(0)
        let watching: @Sendable () async throws -> Void = {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<watchers {
                    let client = clients[index % connections]
                    group.addTask {
                        var count = 0
                        var local = Histogram<UInt64>(highestTrackableValue: 60_000_000)
                        var started = false
                        for try await events in ScannedWatch(client, WatchRequest(namespace: "bench", type: type, options: WatchOptions(aggregated: true)), decode: decode) {
                            if !started { started = true; ready.withLockedValue { $0 += 1 }; continue }
                            guard measuring.withLockedValue({ $0 }) else {
                                if count > 0 {
                                    delivered.withLockedValue { $0 += count }
                                    let snapshot = local
                                    latency.withLockedValue { $0.add(snapshot) }
                                    local.reset()
                                    count = 0
                                }
                                continue
                            }
                            let now = wallMicroseconds()
                            for event in events {
                                count += 1
                                if let sent = event.updatedMicroseconds {
                                    local.record(now > sent ? now - sent : 0)
                                }
                            }
                            if count >= 1000 {
                                delivered.withLockedValue { $0 += count }
                                let snapshot = local
                                latency.withLockedValue { $0.add(snapshot) }
                                local.reset()
                                count = 0
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        let (writeRate, total) = try await whileRunning(watching) {
            while ready.withLockedValue({ $0 }) < watchers { try await Task.sleep(for: .milliseconds(20)) }
            measuring.withLockedValue { $0 = true }
            let latest = NIOLockedValueBox(resources)
            let (writeRate, _) = try await drive(inFlight: 16, duration: .seconds(seconds)) { worker, _ in
                var resource = latest.withLockedValue { $0[worker] }
                resource.metadata.annotations = ["v": resource.metadata.version]
                let stored = try await writer.update(resource, owner: "")
                latest.withLockedValue { $0[worker] = stored }
            }
            measuring.withLockedValue { $0 = false }
            // Let watchers drain what was written during the measurement and report their counts.
            _ = try await writer.create(benchResource(type, "end"), owner: "")
            try await Task.sleep(for: .seconds(1))
            return (writeRate, delivered.withLockedValue { $0 })
        }
        let histogram = latency.withLockedValue { $0 }
        return String(
            format: "watch delivery, %d watcher(s): writer %.0f updates/s, %.0f events delivered/s, write-to-watcher p50 %.2f ms, p99 %.2f ms",
            watchers, writeRate, Double(total) / Double(seconds),
            Double(histogram.valueAtPercentile(50)) / 1000, Double(histogram.valueAtPercentile(99)) / 1000
        )
    }
}

/// Microseconds since the Unix epoch (the server stamps `updated` with the same clock).
func wallMicroseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return UInt64(spec.tv_sec) * 1_000_000 + UInt64(spec.tv_nsec / 1000)
}

struct IdleWatches: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Server memory per idle watch (1,000 watches on one connection).")
    @OptionGroup var server: ServerOptions
    @Option var watches = 1000

    func run() async throws {
        try await BenchServer.with(server) { print(try await Self.measure($0, watches: watches)) }
    }

    static func measure(_ bench: BenchServer, watches: Int) async throws -> String {
        try await withCosiClient(bench.client()) { client in try await measure(bench, client, watches: watches) }
    }

    static func measure(_ bench: BenchServer, _ client: CosiClient, watches: Int) async throws -> String {
        _ = try await client.info()
        try await Task.sleep(for: .milliseconds(500))
        // A server that is not a child (--port) cannot be measured here, but the watches are
        // still opened and held (for a profiler attached to that server).
        let before = bench.residentKiB()
        let ready = NIOLockedValueBox(0)
        let watching: @Sendable () async throws -> Void = {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<watches {
                    group.addTask {
                        for try await _ in client.watchCall(WatchRequest(namespace: "bench", type: "Idle\(index % 10).bench.dev")) {
                            ready.withLockedValue { $0 += 1 }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        let after = try await whileRunning(watching) {
            while ready.withLockedValue({ $0 }) < watches { try await Task.sleep(for: .milliseconds(20)) }
            try await Task.sleep(for: .seconds(1))
            return bench.residentKiB()
        }
        guard let before, let after else { return "idle watches: \(watches) open (server RSS not measured: it is not a child process)" }
        return String(format: "idle watches: %d open, server RSS %d KiB -> %d KiB, %.2f KiB per watch", watches, before, after, Double(after - before) / Double(watches))
    }
}

struct StateAll: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "state-all", abstract: "Every State measurement, as reported in docs/PERFORMANCE.md.")
    @OptionGroup var server: ServerOptions
    @Option var seconds = 5

    func run() async throws {
        for storage in ["full", "normal", "memory"] {
            print(try await BenchServer.with(server, storage: storage) { try await StateWrites.measure($0, storage: storage, inFlight: 64, seconds: seconds) })
        }
        print(try await BenchServer.with(server, storage: "memory") { try await StateReads.measure($0, seconds: seconds) })
        for watchers in [1, 1000] {
            print(try await BenchServer.with(server, storage: "memory") { try await WatchDelivery.measure($0, watchers: watchers, seconds: seconds) })
        }
        print(try await BenchServer.with(server, storage: "memory") { try await IdleWatches.measure($0, watches: 1000) })
    }
}
