import CosiMessages
import CosiRPC
import CosiState
import CosiStateService
import CosiTesting
import Foundation
import Testing

private let canMountTmpfs = geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/bin/mount")

/// The data directory on a file system that fills up (a 2 MiB tmpfs the test mounts): writes fail
/// with a clear error that the service gives as RESOURCE_EXHAUSTED, reads and watches go on,
/// writes succeed again once space is freed, and nothing acknowledged is lost.
@Suite("A full disk", .timeLimit(.minutes(1)), .enabled(if: canMountTmpfs, "needs root, to mount a small tmpfs"))
struct FullDiskTests {
    static func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ConformanceFailure("\(tool) \(arguments) failed") }
    }

    @Test func writesFailClearlyUntilSpaceIsFreedAndNothingAcknowledgedIsLost() async throws {
        let mountPoint = StateBackends.temporaryDirectory()
        try Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint])
        defer {
            try? Self.run("/bin/umount", [mountPoint])
            StateBackends.removeDirectory(mountPoint)
        }
        // Space to give back later.
        let filler = mountPoint + "/filler"
        #expect(FileManager.default.createFile(atPath: filler, contents: Data(repeating: 0, count: 512 << 10)))

        var configuration = StateEngineConfiguration()
        configuration.storageRetryInterval = .seconds(30)
        let clock = ManualClock()
        configuration.clock = { clock.now() }
        let type = "Full.test.dev"
        func resource(_ id: String) -> Resource {
            StateConformance.resource(type, id, yaml: "data: " + String(repeating: "x", count: 1024) + "\n")
        }
        var acknowledged: [String] = []
        do {
            let engine = try StateEngine(storage: SQLiteStorage(directory: mountPoint + "/data"), configuration: configuration)
            defer { engine.shutdown() }
            let watch = try await engine.watch(WatchRequest(namespace: "default", type: type))
            var events = watch.makeAsyncIterator()

            var refusal: StateError?
            for index in 0..<10_000 {
                do {
                    _ = try await engine.create(resource("r\(index)"), owner: "")
                    acknowledged.append("r\(index)")
                } catch {
                    refusal = error as? StateError
                    break
                }
            }
            let error = try #require(refusal, "the disk never filled")
            #expect(error.code == .storageFull)
            #expect(error.message.contains("full"), "\(error.message)")
            #expect(StateService.rpcError(error).code == .resourceExhausted)
            #expect(acknowledged.count > 10, "\(acknowledged.count) writes fit")

            // Reads and watches go on.
            #expect(try engine.get(ResourceAddress(namespace: "default", type: type, id: "r0")).metadata.id == "r0")
            #expect(try engine.list(ResourceKind(namespace: "default", type: type)).count == acknowledged.count)
            let first = try #require(try await events.next())
            #expect(first.first?.resource?.metadata.id == "r0")

            // Space comes back: writes succeed again (after the retry interval).
            try FileManager.default.removeItem(atPath: filler)
            clock.advance(by: .seconds(30))
            _ = try await engine.create(resource("after"), owner: "")
            acknowledged.append("after")
        }
        // Nothing acknowledged was lost.
        let reopened = try SQLiteStorage(directory: mountPoint + "/data")
        let stored = Set(try reopened.load().resources.map(\.metadata.id))
        #expect(Set(acknowledged).isSubset(of: stored), "\(Set(acknowledged).subtracting(stored).count) acknowledged writes lost")
    }

    /// A database on a read-only file system (a read-only bind mount of one the engine wrote):
    /// cosid refuses to start on it with the reason, no crash, and the database is left as it was.
    @Test func aReadOnlyDatabaseIsReportedNotUsed() async throws {
        let mountPoint = StateBackends.temporaryDirectory()
        let readOnly = StateBackends.temporaryDirectory()
        try Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mountPoint])
        defer {
            try? Self.run("/bin/umount", [readOnly])
            try? Self.run("/bin/umount", [mountPoint])
            StateBackends.removeDirectory(readOnly)
            StateBackends.removeDirectory(mountPoint)
        }
        let type = "ReadOnly.test.dev"
        do {
            let engine = try StateEngine(storage: SQLiteStorage(directory: mountPoint + "/data"))
            _ = try await engine.create(StateConformance.resource(type, "kept"), owner: "")
            engine.shutdown()
        }
        try Self.run("/bin/mount", ["--bind", mountPoint, readOnly])
        try Self.run("/bin/mount", ["-o", "remount,bind,ro", readOnly])

        #expect { _ = try StateEngine(storage: SQLiteStorage(directory: readOnly + "/data")) } throws: { error in
            guard let error = error as? StateError else { return false }
            return error.code == .storageFailure && error.message.contains("not writable") && error.message.contains("Read-only file system")
        }
        // Left as it was.
        let stored = try SQLiteStorage(directory: mountPoint + "/data").load().resources
        #expect(stored.contains { $0.metadata.id == "kept" })
    }
}
