import CosiMessages
import CosiState
import CosiTesting
import Foundation
import Logging
import Testing

/// Changes (changes.md): all or nothing, dry runs, tries kept by the keeper, locks, history.
@Suite("Changes")
struct ChangeTests {
    static let type = "Things.test.dev"

    func thing(_ id: String, _ value: String, labels: [String: String] = [:]) -> Resource {
        Resource(metadata: Metadata(namespace: "default", type: Self.type, id: id, labels: labels), spec: Spec(yamlSpec: "value: \(value)\n"))
    }

    func address(_ id: String) -> ResourceAddress { ResourceAddress(namespace: "default", type: Self.type, id: id) }

    func stateError(_ body: () async throws -> Void) async -> StateError? {
        do {
            try await body()
            return nil
        } catch let error as StateError {
            return error
        } catch {
            Issue.record("not a StateError: \(error)")
            return nil
        }
    }

    func record(_ engine: StateEngine, _ id: String) throws -> ChangeRecord {
        try ChangeRecord(try engine.get(ChangeRecord.address(id)))
    }

    /// Runs a keeper over `engine` for the duration of `body`.
    func keeping(_ engine: StateEngine, _ configuration: ChangeKeeperConfiguration = .init(), _ body: (ChangeKeeper) async throws -> Void) async throws {
        let keeper = ChangeKeeper(engine: engine, configuration: configuration, logger: Logger(label: "test"))
        let task = Task { await keeper.run() }
        defer { task.cancel() }
        try await body(keeper)
        task.cancel()
        await task.value
    }

    @Test(arguments: ["owned by a controller", "tearing down", "over a limit"])
    func aChangeIsAllOrNothing(_ refusal: String) async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        _ = try await engine.create(thing("a", "1"), owner: "")
        var third = thing("c", "3")
        switch refusal {
        case "owned by a controller":
            _ = try await engine.create(thing("c", "0"), owner: "some-controller")
        case "tearing down":
            var held = thing("c", "0")
            held.metadata.finalizers = ["holder"]
            _ = try await engine.create(held, owner: "")
            _ = try await engine.teardown(address("c"), owner: "")
        default:
            third.metadata.labels = Dictionary(uniqueKeysWithValues: (0...ResourceLimits.labels).map { ("k\($0)", "v") })
        }
        let revision = engine.revision
        let error = await stateError {
            _ = try await engine.applyChange(ChangeRequest(resources: [thing("a", "2"), thing("b", "2"), third], author: "op"))
        }
        #expect(error?.message.contains("resource 3 of 3 (default/Things.test.dev/c)") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("nothing of the change was written") == true)
        #expect(engine.revision == revision)
        #expect(try engine.get(address("a")).spec.yamlSpec == "value: 1\n")
        #expect(throws: StateError.self) { try engine.get(address("b")) }
        #expect(try engine.list(ResourceKind(namespace: "meta", type: MetaNamespace.changesType)).isEmpty)
    }

    @Test func aChangeIsOneCommitRecordedAsAChange() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        _ = try await engine.create(thing("a", "1"), owner: "")
        _ = try await engine.create(thing("u", "1"), owner: "")
        let before = engine.revision
        let outcome = try await engine.applyChange(ChangeRequest(resources: [thing("a", "2"), thing("b", "1"), thing("u", "1")], author: "operator-1"))
        #expect(outcome.resources.map(\.action) == [.update, .create, .unchanged])
        // Two resources written and the Change: three events, one revision each, nothing for "u".
        #expect(engine.revision == before + 3)
        #expect(try engine.get(address("u")).metadata.version == "1")
        let written = try record(engine, outcome.id)
        #expect(outcome.id == "c\(before + 1)")
        #expect(written.phase == .applied && written.identity == "operator-1" && written.revision == before + 1)
        #expect(written.resources.map { "\($0.id) \($0.action) \($0.versionBefore)->\($0.versionAfter)" } == ["a update 1->2", "b create ->1", "u unchanged 1->1"])
        // Formatting of the YAML is not a change.
        let same = try await engine.applyChange(ChangeRequest(resources: [Resource(metadata: thing("a", "").metadata, spec: Spec(yamlSpec: "value:   2"))], author: "x"))
        #expect(same.id.isEmpty && same.resources.map(\.action) == [.unchanged])
        // Owner, phase and finalizers are never taken from the request.
        var sneaky = thing("a", "3")
        sneaky.metadata.owner = "someone"
        sneaky.metadata.finalizers = []
        _ = try await engine.addFinalizers(address("a"), ["keep"])
        _ = try await engine.applyChange(ChangeRequest(resources: [sneaky], author: "x"))
        let stored = try engine.get(address("a"))
        #expect(stored.metadata.owner == "" && stored.metadata.finalizers == ["keep"] && stored.spec.yamlSpec == "value: 3\n")
    }

    @Test func aDryRunWritesNothing() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        _ = try await engine.create(thing("a", "1"), owner: "")
        _ = try await engine.create(thing("u", "1"), owner: "")
        let revision = engine.revision
        let outcome = try engine.dryRunChange(ChangeRequest(resources: [thing("a", "2"), thing("b", "1"), thing("u", "1")], author: "x"))
        #expect(outcome.id.isEmpty && outcome.change == nil)
        #expect(outcome.resources.map(\.action) == [.update, .create, .unchanged])
        #expect(outcome.resources[0].before?.spec.yamlSpec == "value: 1\n" && outcome.resources[0].after.spec.yamlSpec == "value: 2\n")
        #expect(outcome.resources[0].after.metadata.version == "2")
        #expect(engine.revision == revision)
        // A refusal is the same as the change's.
        _ = try await engine.create(thing("o", "1"), owner: "ctl")
        let error = await stateError { _ = try engine.dryRunChange(ChangeRequest(resources: [thing("o", "2")], author: "x")) }
        #expect(error?.code == .ownerMismatch)
    }

    @Test func aTryLocksItsResourcesUntilConfirmed() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        _ = try await engine.create(thing("a", "1"), owner: "")
        let outcome = try await engine.applyChange(ChangeRequest(resources: [thing("a", "2")], author: "op", tryMilliseconds: 60_000))
        #expect(try record(engine, outcome.id).phase == .trying)
        let refused = await stateError { _ = try await engine.update(try engine.get(address("a")), owner: "") }
        #expect(refused?.code == .changePending)
        #expect(refused?.code.status == .failedPrecondition)
        #expect(refused?.message.contains("part of change \(outcome.id), being tried until") == true, "\(refused?.message ?? "")")
        let change = await stateError { _ = try await engine.applyChange(ChangeRequest(resources: [thing("a", "3")], author: "op")) }
        #expect(change?.code == .changePending)
        // Controllers still put finalizers on it.
        _ = try await engine.addFinalizers(address("a"), ["ctl"])
        _ = try await engine.confirmChange(outcome.id, author: "op2")
        let confirmed = try record(engine, outcome.id)
        #expect(confirmed.phase == .confirmed && confirmed.endedBy == "op2")
        _ = try await engine.update(try engine.get(address("a")), owner: "")
        let again = await stateError { _ = try await engine.confirmChange(outcome.id, author: "op") }
        #expect(again?.code == .changeEnded)
        let unknown = await stateError { _ = try await engine.confirmChange("c999999", author: "op") }
        #expect(unknown?.code == .notFound)
        // Nobody writes Changes but cosid.
        let forged = await stateError { _ = try await engine.update(try engine.get(ChangeRecord.address(outcome.id)), owner: MetaNamespace.changesOwner) }
        #expect(forged?.code == .ownerMismatch)
    }

    @Test func anUnconfirmedTryIsRevertedAtItsDeadline() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        var labelled = thing("a", "1", labels: ["tier": "one"])
        labelled.metadata.annotations = ["note": "before"]
        _ = try await engine.create(labelled, owner: "")
        var updated = thing("a", "2", labels: ["tier": "two"])
        updated.metadata.annotations = ["note": "after"]
        try await keeping(engine) { keeper in
            let outcome = try await keeper.apply(ChangeRequest(resources: [updated, thing("new", "1")], author: "op", tryMilliseconds: 300))
            try await eventually("the change is reverted") { try record(engine, outcome.id).phase == .reverted }
            let reverted = try record(engine, outcome.id)
            #expect(reverted.reason?.contains("not confirmed by its deadline") == true)
            let a = try engine.get(address("a"))
            #expect(a.spec.yamlSpec == "value: 1\n" && a.metadata.labels == ["tier": "one"] && a.metadata.annotations == ["note": "before"])
            #expect(a.metadata.version == "3", "the revert is a new version")
            #expect(throws: StateError.self) { try engine.get(address("new")) }
            // Unlocked again.
            _ = try await engine.update(a, owner: "")
        }
    }

    @Test func aRevertTearsDownWhatTheChangeCreatedAndDestroysItOnceReleased() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        try await keeping(engine) { keeper in
            let outcome = try await keeper.apply(ChangeRequest(resources: [thing("held", "1")], author: "op", tryMilliseconds: 60_000))
            _ = try await engine.addFinalizers(address("held"), ["ctl"])
            _ = try await keeper.revert(outcome.id, author: "op")
            #expect(try record(engine, outcome.id).reason == "reverted by op")
            #expect(try engine.get(address("held")).metadata.phase == Phase.tearingDown)
            _ = try await engine.removeFinalizers(address("held"), ["ctl"])
            try await eventually("the keeper destroys it") { (try? engine.get(address("held"))) == nil }
        }
    }

    @Test func aDeadlineRevertDestroysWhatItCreatedOnceReleased() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        try await keeping(engine) { keeper in
            // The finalizer comes with the change, so the deadline cannot pass before it is there.
            var held = thing("held", "1")
            held.metadata.finalizers = ["ctl"]
            let outcome = try await keeper.apply(ChangeRequest(resources: [held], author: "op", tryMilliseconds: 200))
            try await eventually("reverted at the deadline") { try record(engine, outcome.id).phase == .reverted }
            try await eventually("torn down") { try engine.get(address("held")).metadata.phase == Phase.tearingDown }
            _ = try await engine.removeFinalizers(address("held"), ["ctl"])
            try await eventually("the keeper destroys it") { (try? engine.get(address("held"))) == nil }
        }
    }

    @Test func revertOnErrorRevertsWhenAStatusReportsAnError() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        let statusKind = ResourceKind(namespace: "default", type: "ThingStatuses.test.dev")
        let configuration = ChangeKeeperConfiguration(
            statusError: { spec, get in
                guard let status = get(ResourceAddress(namespace: "default", type: statusKind.type, id: spec.metadata.id)),
                      status.spec.yamlSpec.hasPrefix("error: ") else { return nil }
                return String(status.spec.yamlSpec.dropFirst(7))
            },
            statusKind: { _ in statusKind }
        )
        _ = try await engine.create(thing("a", "1"), owner: "")
        try await keeping(engine, configuration) { keeper in
            let outcome = try await keeper.apply(ChangeRequest(resources: [thing("a", "2")], author: "op", tryMilliseconds: 600_000, revertOnError: true))
            _ = try await engine.create(Resource(metadata: Metadata(namespace: "default", type: statusKind.type, id: "a"), spec: Spec(yamlSpec: "error: no such parameter")), owner: "ctl")
            // (How soon is ChangeCommandTests' to check, in a cosid of its own: this suite's
            // tasks share two cores with every other test.)
            try await eventually("reverted on the error") { try record(engine, outcome.id).phase == .reverted }
            #expect(try record(engine, outcome.id).reason == "the status of default/Things.test.dev/a reports an error: no such parameter")
            #expect(try engine.get(address("a")).spec.yamlSpec == "value: 1\n")
        }
    }

    @Test func aPendingTrySurvivesARestart() async throws {
        let directory = NSTemporaryDirectory() + "cosi-changes-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var engine = try StateEngine(storage: try SQLiteStorage(directory: directory))
        _ = try await engine.create(thing("a", "1"), owner: "")
        let outcome = try await engine.applyChange(ChangeRequest(resources: [thing("a", "2"), thing("b", "1")], author: "op", tryMilliseconds: 1_500))
        let deadline = try record(engine, outcome.id).deadlineMillis!
        engine.shutdown()
        engine = try StateEngine(storage: try SQLiteStorage(directory: directory))
        defer { engine.shutdown() }
        // Still locked after the restart, and reverted at the original deadline.
        let refused = await stateError { _ = try await engine.update(try engine.get(address("a")), owner: "") }
        #expect(refused?.code == .changePending)
        try await keeping(engine) { _ in
            try await eventually("reverted after the restart") { try record(engine, outcome.id).phase == .reverted }
        }
        let reverted = try record(engine, outcome.id)
        #expect(try engine.get(address("a")).spec.yamlSpec == "value: 1\n")
        #expect((try? engine.get(address("b"))) == nil)
        let ended = try #require(ISO8601DateFormatter.withFractions.date(from: reverted.ended ?? ""))
        #expect(Int64(ended.timeIntervalSince1970 * 1000) >= deadline, "at the original deadline, not before (how soon after: ChangeCommandTests)")
    }

    @Test(arguments: ["memory", "sqlite"])
    func historyListsVersionsWithIdentityAndChange(_ backend: String) async throws {
        let directory = NSTemporaryDirectory() + "cosi-history-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = StateEngineConfiguration()
        configuration.retention = RetentionPolicy(minimumEvents: 5)
        configuration.compactionInterval = 1
        let storage: any StateStorage = backend == "memory" ? MemoryStorage() : try SQLiteStorage(directory: directory)
        let engine = try StateEngine(storage: storage, configuration: configuration)
        defer { engine.shutdown() }
        _ = try await engine.create(thing("a", "1"), owner: "", author: "alice")
        let change = try await engine.applyChange(ChangeRequest(resources: [thing("a", "2")], author: "bob"))
        _ = try await engine.teardown(address("a"), owner: "", author: "carol")
        let (entries, _) = try await engine.history(address("a"))
        #expect(entries.map { "\($0.event.resource.metadata.version) \($0.event.author) \($0.event.changeID)" } == ["1 alice ", "2 bob \(change.id)", "3 carol "])
        #expect(entries.allSatisfy { $0.time != nil })
        // Past the retention: the first versions go, the oldest revision held says from where.
        for index in 0..<10 { _ = try await engine.create(thing("x\(index)", "1"), owner: "") }
        let (after, oldest) = try await engine.history(address("a"))
        #expect(after.count < 3)
        #expect(oldest > entries[0].event.revision)
    }

    @Test func aPendingTryPinsTheLogAgainstCompaction() async throws {
        var configuration = StateEngineConfiguration()
        configuration.retention = RetentionPolicy(minimumEvents: 2)
        configuration.compactionInterval = 1
        let engine = try StateEngine(storage: MemoryStorage(), configuration: configuration)
        defer { engine.shutdown() }
        _ = try await engine.create(thing("a", "1"), owner: "")
        try await keeping(engine) { keeper in
            let outcome = try await keeper.apply(ChangeRequest(resources: [thing("a", "2")], author: "op", tryMilliseconds: 60_000))
            for index in 0..<20 { _ = try await engine.create(thing("x\(index)", "1"), owner: "") }
            _ = try await keeper.revert(outcome.id, author: "op")
            #expect(try engine.get(address("a")).spec.yamlSpec == "value: 1\n")
        }
    }
}

extension ISO8601DateFormatter {
    static var withFractions: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}
