import ArgumentParser
import CosiMessages
import CosiState
import Foundation
import Logging

/// `cosi-bench log-retention`: the event log's size under writes at full speed for a long time
/// (the state engine in this process on SQLite: writers as fast as group commit takes them).
/// Compaction must keep the log within its retention, whatever the write rate.
struct LogRetention: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log-retention",
        abstract: "Event log size under full-speed writes: sampled every 10 s, against the retention."
    )

    @Option(help: "Seconds of writing.") var seconds = 600
    @Option(help: "Writers at once (each updates its own resource in a loop).") var writers = 256
    @Option(help: "Events the retention policy keeps.") var retain = 100_000
    @Option(help: "SQLite sync mode: full or normal.") var sync = "full"

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cosi-bench-log-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = StateEngineConfiguration()
        configuration.retention = RetentionPolicy(minimumEvents: retain)
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let storage = try SQLiteStorage(directory: directory, sync: sync == "normal" ? .normal : .full)
        let engine = try StateEngine(storage: storage, configuration: configuration, logger: logger)
        defer { engine.shutdown() }
        let clock = ContinuousClock()
        let end = clock.now + .seconds(seconds)
        var largest: UInt64 = 0
        var samples: [String] = []
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    var resource = try await engine.create(Resource(
                        metadata: Metadata(namespace: "bench", type: "Log.bench.dev", id: "w\(writer)"),
                        spec: Spec(yamlSpec: String(repeating: "x", count: 200))
                    ), owner: "")
                    var value = 0
                    while clock.now < end {
                        value += 1
                        resource.metadata.annotations = ["n": "\(value)"]
                        resource = try await engine.update(resource, owner: "")
                    }
                }
            }
            var elapsed = 0
            var last = engine.revision
            while clock.now < end {
                try await Task.sleep(for: .seconds(10))
                elapsed += 10
                let revision = engine.revision
                let size = revision - storage.oldestRetainedRevision + 1
                largest = max(largest, size)
                samples.append("\(elapsed) s: \(size) events in the log, \((revision - last) / 10) writes/s")
                last = revision
            }
            try await group.waitForAll()
        }
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: directory + "/state.db")[.size] as? Int) ?? 0
        for sample in samples { print(sample) }
        print("log-retention (--sync \(sync), \(writers) writers, \(seconds) s, retention \(retain)): \(engine.revision) events written, the log held at most \(largest) events (retention + \(largest > UInt64(retain) ? largest - UInt64(retain) : 0)); state.db \(fileBytes / 1_048_576) MiB at the end")
    }
}

/// `cosi-bench engine-writes`: the state engine alone (in this process, SQLite), writers creating
/// resources in a closed loop: what a durable write costs without the network, for comparing
/// with `put` (which adds the RPC round trip).
struct EngineWrites: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine-writes",
        abstract: "Durable Creates on the state engine in this process (no network): rate and latency."
    )

    @Option(help: "Writers at once.") var clients = 1
    @Option(help: "Creates in all.") var total = 10_000
    @Option(help: "SQLite sync mode: full or normal.") var sync = "full"
    @Option(help: "Spec size in bytes.") var valSize = 256

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cosi-bench-engine-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let engine = try StateEngine(storage: SQLiteStorage(directory: directory, sync: sync == "normal" ? .normal : .full), logger: logger)
        defer { engine.shutdown() }
        let value = String(repeating: "v", count: valSize)
        let clock = ContinuousClock()
        let t0 = clock.now
        let stats = await runLoad(clients: [], workers: clients, total: total, rate: 0, t0: t0, deadline: t0 + .seconds(300), progress: "engine-writes") { _, _, index, _ in
            _ = try await engine.create(Resource(metadata: Metadata(namespace: "bench", type: "Engine.bench.dev", id: "e\(index)"), spec: Spec(yamlSpec: value)), owner: "")
        }
        var result = LoadResult("engine-writes", timedOut: stats.timedOut, complete: stats.ok == total)
        result.add("clients", clients)
        result.add("sync", sync)
        result.addLoad(stats, total: total, cpu: 0)
        result.print(json: false)
    }
}
