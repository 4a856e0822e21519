import ArgumentParser
import CosiClient
import CosiMessages
import Foundation
import Histogram
import NIOConcurrencyHelpers

/// cosid under a steady mixed load for a long while: paced writes and reads, 1,000 watchers of
/// which a tenth are replaced every sample, and connections opened and closed all the time.
/// Every `--sample` seconds it records the server's resident memory, open descriptors, the size
/// of its database files and the p99 of writes and reads in that interval; at the end it fails
/// if any of them grew without bound or if p99 drifted past twice its early value.
struct Soak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A long mixed load on a durable cosid, sampling RSS, descriptors, event-log size and p99 (scripts/soak plots it)."
    )
    @Option(help: "How long, in minutes.") var minutes = 10.0
    @Option(help: "Seconds between samples.") var sample = 10
    @Option(help: "Writes per second (updates of 1,000 resources; each reaches every watcher).") var writeRate = 200
    @Option(help: "Reads (Get) per second.") var readRate = 1_000
    @Option(help: "The server's event retention (--retain-events).") var retainEvents = 20_000
    @Option(help: "Watchers (on 10 connections); a tenth are replaced every sample.") var watchers = 1_000
    @Option(help: "Connections opened and closed per second.") var connectionRate = 20
    @Option(help: "Write the samples here (tab-separated).") var out = "soak.tsv"

    struct Interval {
        var writes = Histogram<UInt64>(highestTrackableValue: 60_000_000)
        var reads = Histogram<UInt64>(highestTrackableValue: 60_000_000)
        var errors = 0
        var events = 0
    }

    func run() async throws {
        // A retention the run goes well past, so that the event log's bound shows.
        try await BenchServer.with(try ServerOptions.parse(["--storage", "full"]), extraArguments: ["--retain-events", "\(retainEvents)"]) { bench in
            try await soak(bench)
        }
    }

    func soak(_ bench: BenchServer) async throws {
        guard let pid = bench.process?.processIdentifier else { throw ValidationError("soak needs the server as a child process") }
        let type = "Soak.bench.dev"
        let interval = NIOLockedValueBox(Interval())
        let clock = ContinuousClock()
        let end = clock.now + .seconds(minutes * 60)
        try await withClients(4 + 10, bench) { clients in
            let writers = Array(clients[0..<2]), readers = Array(clients[2..<4]), watchConnections = Array(clients[4...])
            for index in 0..<1_000 { _ = try await writers[0].create(benchResource(type, "s\(index)"), owner: "") }

            /// Starts `work` `rate` times a second, in ticks of 10 ms, until the end (an open
            /// loop: a slow answer does not slow the load down).
            @Sendable func paced(_ rate: Int, _ work: @escaping @Sendable (Int) async -> Void) async {
                await withDiscardingTaskGroup { group in
                    var tick = 0
                    let start = clock.now
                    while clock.now < end, !Task.isCancelled {
                        let due = rate * (tick + 1) / 100 - rate * tick / 100
                        let base = rate * tick / 100  // how many were started before this tick
                        for offset in 0..<due { group.addTask { await work(base + offset) } }
                        tick += 1
                        try? await Task.sleep(until: start + .milliseconds(10 * tick), clock: clock)
                    }
                }
            }
            @Sendable func timed(_ body: () async throws -> Void) async -> UInt64? {
                let started = clock.now
                do { try await body() } catch {
                    interval.withLockedValue { $0.errors += 1 }
                    return nil
                }
                return microseconds(clock.now - started)
            }
            @Sendable func watch(_ index: Int) -> Task<Void, Never> {
                let client = watchConnections[index % watchConnections.count]
                return Task {
                    do {
                        for try await response in client.watchCall(WatchRequest(namespace: "bench", type: type, options: WatchOptions(aggregated: true))) {
                            let count = response.event.count
                            interval.withLockedValue { $0.events += count }
                        }
                    } catch {}
                }
            }

            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    await paced(writeRate) { n in
                        let client = writers[n % writers.count]
                        let id = "s\(n % 1_000)"
                        if let took = await timed({
                            var resource = try await client.get(namespace: "bench", type: type, id: id)
                            resource.metadata.annotations = ["n": "\(n)"]
                            _ = try await client.update(resource, owner: "")
                        }) { interval.withLockedValue { _ = $0.writes.record(took) } }
                    }
                }
                group.addTask {
                    await paced(readRate) { n in
                        let client = readers[n % readers.count]
                        if let took = await timed({ _ = try await client.get(namespace: "bench", type: type, id: "s\((n * 7) % 1_000)") }) {
                            interval.withLockedValue { _ = $0.reads.record(took) }
                        }
                    }
                }
                group.addTask {
                    await paced(connectionRate) { _ in
                        _ = await timed {
                            let client = try await CosiClient.connect(bench.client())
                            _ = try await client.info()
                            await client.close()
                        }
                    }
                }
                group.addTask {
                    var watches = (0..<watchers).map(watch)
                    var next = watchers
                    let file = FileManager.default
                    _ = file.createFile(atPath: out, contents: Data("seconds\trss_kib\tfds\tdb_kib\twrite_p99_ms\tread_p99_ms\twrites\treads\tevents\terrors\n".utf8))
                    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
                    try handle.seekToEnd()
                    let start = clock.now
                    while clock.now < end {
                        try await Task.sleep(for: .seconds(sample))
                        // Watch churn: a tenth of the watchers go, as many come.
                        for _ in 0..<(watchers / 10) {
                            let index = Int.random(in: 0..<watches.count)
                            watches[index].cancel()
                            watches[index] = watch(next)
                            next += 1
                        }
                        let taken = interval.withLockedValue { current in
                            defer { current = Interval() }
                            return current
                        }
                        let rss = bench.residentKiB() ?? 0
                        let fds = (try? file.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
                        let data = bench.certsDir + "/data"
                        let db = ((try? file.contentsOfDirectory(atPath: data)) ?? []).reduce(0) { total, name in
                            total + (((try? file.attributesOfItem(atPath: data + "/" + name))?[.size] as? Int) ?? 0)
                        } / 1024
                        let elapsed = Double((clock.now - start).components.seconds)
                        let line = String(
                            format: "%.0f\t%d\t%d\t%d\t%.3f\t%.3f\t%d\t%d\t%d\t%d\n", elapsed, rss, fds, db,
                            Double(taken.writes.valueAtPercentile(99)) / 1000, Double(taken.reads.valueAtPercentile(99)) / 1000,
                            Int(taken.writes.totalCount), Int(taken.reads.totalCount), taken.events, taken.errors
                        )
                        handle.write(Data(line.utf8))
                        FileHandle.standardError.write(Data("soak: \(line)".utf8))
                    }
                    try handle.close()
                    for watch in watches { watch.cancel() }
                }
                try await group.waitForAll()
            }
        }
        try verdict()
    }

    /// Reads the samples back and judges them: after a warm-up (the first fifth), nothing may
    /// keep growing (the last third's peak at most 1.5x the middle third's, plus a little slack
    /// for small values) and p99 may not drift past twice its early level.
    func verdict() throws {
        let rows = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").dropFirst().map { $0.split(separator: "\t").map { Double($0) ?? 0 } }
        guard rows.count >= 6 else {
            print("RESULT workload=soak status=short samples=\(rows.count)")
            return
        }
        let warm = Array(rows.dropFirst(rows.count / 5))
        let third = warm.count / 3
        let middle = Array(warm[third..<(2 * third)]), last = Array(warm[(2 * third)...]), early = Array(warm[..<max(1, third)])
        var problems: [String] = []
        for (column, name, slack) in [(1, "RSS (KiB)", 8_192.0), (2, "open descriptors", 8.0), (3, "database size (KiB)", 4_096.0)] {
            let before = middle.map { $0[column] }.max() ?? 0, after = last.map { $0[column] }.max() ?? 0
            if after > before * 1.5 + slack { problems.append("\(name) kept growing: \(Int(before)) -> \(Int(after))") }
        }
        for (column, name) in [(4, "write p99"), (5, "read p99")] {
            let first = early.map { $0[column] }.sorted()[early.count / 2], final = last.map { $0[column] }.sorted()[last.count / 2]
            if final > 2 * max(first, 1.0) { problems.append("\(name) drifted: \(first) ms -> \(final) ms") }
        }
        let errors = rows.reduce(0) { $0 + $1[9] }
        print("RESULT workload=soak status=\(problems.isEmpty ? "ok" : "failed") samples=\(rows.count) rss_kib_max=\(Int(rows.map { $0[1] }.max() ?? 0)) fds_max=\(Int(rows.map { $0[2] }.max() ?? 0)) db_kib_max=\(Int(rows.map { $0[3] }.max() ?? 0)) errors=\(Int(errors))")
        if !problems.isEmpty { throw ValidationError(problems.joined(separator: "; ")) }
    }
}
