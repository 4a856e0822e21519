import ArgumentParser
import CosiClient
import CosiMessages
import CosiState
import Foundation
import NIOConcurrencyHelpers

/// SIGKILL at random moments under mixed load, over and over, on one data directory; after every
/// kill, cosid restarts on it and the run checks that nothing acknowledged was lost, that the
/// revisions have no gap, and that a watcher resuming from its last bookmark misses nothing and
/// sees nothing twice.
struct CrashLoop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-loop",
        abstract: "Kill cosid (SIGKILL) at random moments under mixed load and check, after each restart, every acknowledged write, gap-free revisions and resumed watchers."
    )
    @Option(help: "Kills.") var iterations = 50
    @Option(help: "Concurrent writers (creates and updates).") var writers = 8
    @Option(help: "The longest a run goes before its kill, in milliseconds (each is random, from a fifth of it).") var maxRunMs = 1_500
    @Option(help: "Keep the data directory here (default: a temporary one, removed on success).") var dataDir: String?

    func run() async throws {
        let base = dataDir ?? FileManager.default.temporaryDirectory.appendingPathComponent("cosi-crash-loop-\(getpid())").path
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let type = "Crash.bench.dev"
        // What the client was told, across every run: id -> highest acknowledged version.
        var acknowledged: [String: Int] = [:]
        // The watcher's view: the last revision it received (its bookmark), across every run.
        var watched: UInt64 = 0
        var bookmark: [UInt8]?
        var totalAcked = 0, totalEvents = 0
        for iteration in 1...iterations {
            let server = try Daemon(dataDir: base + "/data", certs: base + "/certs")
            defer { server.kill() }
            let port = try await server.waitForPort()
            let configuration = CosiClientConfiguration.development(directory: base + "/certs", port: port)

            // 1. Check the state the last kill left.
            try await withCosiClient(configuration) { client in
                let stored = try await client.list(namespace: "default", type: type)
                let versions = Dictionary(stored.map { ($0.metadata.id, Int($0.metadata.version) ?? 0) }, uniquingKeysWith: max)
                for (id, version) in acknowledged where (versions[id] ?? -1) < version {
                    throw ValidationError("iteration \(iteration): \(id) was acknowledged at version \(version) but the store has \(versions[id].map(String.init) ?? "nothing")")
                }
            }

            // 2. Load it: writers create and update, a watcher resumes from its bookmark and
            //    checks every revision follows the last, a reader lists; then SIGKILL.
            let acked = NIOLockedValueBox([String: Int]())
            let operations = NIOLockedValueBox(0)
            let seen = NIOLockedValueBox((last: watched, bookmark: bookmark, events: 0, problem: String?.none))
            let runFor = Int.random(in: max(1, maxRunMs / 5)...max(1, maxRunMs))
            await withTaskGroup(of: Void.self) { group in
                for writer in 0..<writers {
                    group.addTask {
                        guard let client = try? await CosiClient.connect(configuration) else { return }
                        var mine: [Resource] = []
                        var step = 0
                        while true {
                            step += 1
                            do {
                                if step % 3 == 0, let index = mine.indices.randomElement() {
                                    var resource = mine[index]
                                    resource.metadata.annotations = ["step": "\(step)"]
                                    let stored = try await client.update(resource, owner: "")
                                    mine[index] = stored
                                    acked.withLockedValue { $0[stored.metadata.id] = Int(stored.metadata.version) ?? 0 }
                                    operations.withLockedValue { $0 += 1 }
                                } else {
                                    let id = "i\(iteration)-w\(writer)-\(step)"
                                    let stored = try await client.create(Resource(metadata: Metadata(namespace: "default", type: type, id: id), spec: Spec(yamlSpec: "n: \(step)\n")), owner: "")
                                    mine.append(stored)
                                    acked.withLockedValue { $0[id] = Int(stored.metadata.version) ?? 0 }
                                    operations.withLockedValue { $0 += 1 }
                                }
                            } catch {
                                return // killed
                            }
                        }
                    }
                }
                group.addTask {
                    guard let client = try? await CosiClient.connect(configuration) else { return }
                    let start = seen.withLockedValue { $0.bookmark }
                    let options = start.map { WatchOptions(startFromBookmark: $0) } ?? WatchOptions(tailEvents: 0)
                    do {
                        for try await response in client.watchCall(WatchRequest(namespace: "default", type: type, options: options, apiVersion: 1)) {
                            for event in response.event {
                                guard let mark = event.bookmark, let revision = Bookmark.decode(mark) else { continue }
                                seen.withLockedValue { state in
                                    if state.last != 0, revision != state.last + 1, state.problem == nil {
                                        state.problem = revision <= state.last
                                            ? "revision \(revision) delivered again (or out of order) after \(state.last)"
                                            : "revisions \(state.last + 1)...\(revision - 1) never delivered"
                                    }
                                    state.last = revision
                                    state.bookmark = mark
                                    state.events += 1
                                }
                            }
                        }
                    } catch {}
                }
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(runFor))
                    server.kill()
                }
            }
            let run = seen.withLockedValue { $0 }
            if let problem = run.problem { throw ValidationError("iteration \(iteration): the watcher: \(problem)") }
            watched = run.last
            bookmark = run.bookmark
            let ackedNow = acked.withLockedValue { $0 }
            acknowledged.merge(ackedNow, uniquingKeysWith: max)
            let acknowledgedNow = operations.withLockedValue { $0 }
            totalAcked += acknowledgedNow
            totalEvents += run.events
            FileHandle.standardError.write(Data("crash-loop: \(iteration)/\(iterations): killed after \(runFor) ms, \(acknowledgedNow) writes acknowledged, watcher at revision \(run.last)\n".utf8))
        }
        // A last restart: the state the last kill left, and every revision once more from the start.
        let server = try Daemon(dataDir: base + "/data", certs: base + "/certs")
        defer { server.kill() }
        let port = try await server.waitForPort()
        try await withCosiClient(.development(directory: base + "/certs", port: port)) { client in
            let stored = try await client.list(namespace: "default", type: type)
            let versions = Dictionary(stored.map { ($0.metadata.id, Int($0.metadata.version) ?? 0) }, uniquingKeysWith: max)
            let lost = acknowledged.filter { (versions[$0.key] ?? -1) < $0.value }
            guard lost.isEmpty else { throw ValidationError("after the last kill: \(lost.count) acknowledged writes lost, e.g. \(lost.first!)") }
        }
        print("RESULT workload=crash-loop status=ok iterations=\(iterations) writes_acknowledged=\(totalAcked) resources=\(acknowledged.count) events_watched=\(totalEvents) lost=0 revision_gaps=0 duplicates=0")
        if dataDir == nil { try? FileManager.default.removeItem(atPath: base) }
    }

    /// A cosid process on the data directory, killed with SIGKILL.
    final class Daemon: @unchecked Sendable {
        let process = Process()
        let port = Int.random(in: 20_000...40_000)
        let certs: String

        init(dataDir: String, certs: String) throws {
            self.certs = certs
            process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cosid")
            process.arguments = ["--listen", "127.0.0.1:\(port)", "--certs-dir", certs, "--data-dir", dataDir, "--sync", "full", "--controllers", "none", "--log-level", "warning"]
            try process.run()
        }

        func waitForPort() async throws -> Int {
            for _ in 0..<400 {
                if let client = try? await CosiClient.connect(.development(directory: certs, port: port)) {
                    await client.close()
                    return port
                }
                try await Task.sleep(for: .milliseconds(25))
            }
            throw ValidationError("cosid did not start on port \(port)")
        }

        func kill() {
            guard process.isRunning else { return }
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
