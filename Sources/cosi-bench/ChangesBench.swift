import ArgumentParser
import CosiMessages
import CosiState
import Foundation
import Logging

/// changes.md's costs, on the state engine in this process with durable SQLite (no network).
struct ChangesBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "changes",
        abstract: "Changes on the state engine (durable SQLite): one change of N resources against N single writes, what pending tries cost other writes, recovery of pending tries after a restart."
    )

    @Option(help: "Resources per change, and pending tries.") var count = 1_000
    @Option(help: "Rounds of each measurement (medians are printed).") var rounds = 5
    @Option(help: "SQLite sync mode: full or normal.") var sync = "full"

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cosi-bench-changes-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let mode: SyncMode = sync == "normal" ? .normal : .full
        var engine = try StateEngine(storage: SQLiteStorage(directory: directory, sync: mode), logger: logger)
        let clock = ContinuousClock()
        func thing(_ id: String, _ value: Int = 1) -> Resource {
            Resource(metadata: Metadata(namespace: "bench", type: "Changes.bench.dev", id: id), spec: Spec(yamlSpec: "value: \(value)\n"))
        }
        func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        func percentile(_ values: [Double], _ p: Double) -> Double { let s = values.sorted(); return s[min(s.count - 1, Int(Double(s.count) * p))] }

        // 1. One change of N resources against N single writes, one after the other.
        var changeTimes: [Double] = [], singleTimes: [Double] = []
        for round in 0..<rounds {
            let resources = (0..<count).map { thing("c\(round)-\($0)") }
            let t0 = clock.now
            _ = try await engine.applyChange(ChangeRequest(resources: resources, author: "bench"))
            changeTimes.append(ms(clock.now - t0))
            let t1 = clock.now
            for index in 0..<count { _ = try await engine.create(thing("s\(round)-\(index)"), owner: "") }
            singleTimes.append(ms(clock.now - t1))
        }
        print("change of \(count) resources: median \(String(format: "%.1f", median(changeTimes))) ms; \(count) single writes: median \(String(format: "%.1f", median(singleTimes))) ms (sync \(sync), \(rounds) rounds)")

        // 2. Single writes with no try pending, then with N tries pending (each on its own resource).
        func writeLatencies(_ label: String) async throws -> [Double] {
            var latencies: [Double] = []
            for index in 0..<2_000 {
                let t0 = clock.now
                _ = try await engine.create(thing("\(label)-\(index)"), owner: "")
                latencies.append(ms(clock.now - t0))
            }
            return latencies
        }
        // As many changes as the tries below, applied (no try), so both runs see the same state size.
        for index in 0..<count {
            _ = try await engine.applyChange(ChangeRequest(resources: [thing("applied-\(index)")], author: "bench"))
        }
        let idle = try await writeLatencies("idle")
        for index in 0..<count {
            _ = try await engine.applyChange(ChangeRequest(resources: [thing("tried-\(index)")], author: "bench", tryMilliseconds: 3_600_000))
        }
        let pending = try await writeLatencies("pending")
        print(String(format: "single writes, no try pending: p50 %.3f ms p99 %.3f ms; with %d tries pending: p50 %.3f ms p99 %.3f ms",
                     percentile(idle, 0.5), percentile(idle, 0.99), count, percentile(pending, 0.5), percentile(pending, 0.99)))

        // 3. Recovery: N pending tries whose deadlines pass while cosid is down.
        for index in 0..<count {
            _ = try await engine.applyChange(ChangeRequest(resources: [thing("expiring-\(index)")], author: "bench", tryMilliseconds: 1_000))
        }
        engine.shutdown()
        try await Task.sleep(for: .seconds(2))
        let t0 = clock.now
        engine = try StateEngine(storage: SQLiteStorage(directory: directory, sync: mode), logger: logger)
        let opened = clock.now - t0
        let keeper = ChangeKeeper(engine: engine, logger: logger)
        let task = Task { await keeper.run() }
        let changes = ResourceKind(namespace: MetaNamespace.namespace, type: MetaNamespace.changesType)
        while try engine.list(changes).contains(where: { (try? ChangeRecord($0))?.phase == .trying && (try? ChangeRecord($0))?.deadlineMillis ?? .max < Int64(Date().timeIntervalSince1970 * 1000) }) {
            try await Task.sleep(for: .milliseconds(5))
        }
        let reverted = clock.now - t0
        task.cancel()
        await task.value
        print(String(format: "restart with %d + %d tries pending (%d past their deadline): engine open (locks restored) %.0f ms; all %d past the deadline reverted %.0f ms after the open began",
                     count, count, count, ms(opened), count, ms(reverted)))
        engine.shutdown()
    }
}
