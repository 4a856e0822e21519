import CosiController
import CosiControllerRuntime
import CosiMessages
import CosiState
import CosiTesting
import NIOConcurrencyHelpers
import Testing

/// A controller that does nothing but wait for events (for registration and access checks).
struct IdleController: Controller {
    var name: String
    var inputs: [ControllerInput] = []
    var outputs: [ControllerOutput] = []
    func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws {
        for await _ in events {}
    }
}

/// Runs `runtime` while `body` runs, then stops it and waits for it.
func withRunning<R>(_ runtime: ControllerRuntime, _ body: () async throws -> R) async throws -> R {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await runtime.run() }
        let result = try await body()
        group.cancelAll()
        try await group.waitForAll()
        return result
    }
}

func fastRestarts() -> ControllerRuntimeConfiguration {
    var configuration = ControllerRuntimeConfiguration()
    configuration.backoffInitial = .milliseconds(20)
    configuration.backoffJitter = 0
    return configuration
}

func int(_ id: String, _ value: Int) -> Resource {
    Resource(metadata: Metadata(namespace: "default", type: "Ints.test.dev", id: id), spec: Spec(yamlSpec: "value: \(value)\n"))
}

@Suite("Controller registration")
struct RegistrationTests {
    let engine: StateEngine
    init() throws { engine = try StateEngine(storage: MemoryStorage()) }

    func register(_ runtime: ControllerRuntime, _ name: String, inputs: [ControllerInput] = [], outputs: [ControllerOutput]) -> ControllerError.Code? {
        do {
            try runtime.register(IdleController(name: name, inputs: inputs, outputs: outputs))
            return nil
        } catch {
            return error.code
        }
    }

    @Test func everyConflictIsRefusedAndLeavesNothingBehind() {
        defer { engine.shutdown() }
        let runtime = ControllerRuntime(engine: engine, logger: quietLogger("test"))
        #expect(register(runtime, "a", outputs: [ControllerOutput(type: "X.test.dev"), ControllerOutput(type: "Y.test.dev", kind: .shared)]) == nil)
        // Conflicts with what is registered: FAILED_PRECONDITION.
        #expect(register(runtime, "a", outputs: []) == .failedPrecondition, "a duplicate name")
        #expect(register(runtime, "b", outputs: [ControllerOutput(type: "X.test.dev")]) == .failedPrecondition, "an exclusive output held exclusively")
        #expect(register(runtime, "b", outputs: [ControllerOutput(type: "X.test.dev", kind: .shared)]) == .failedPrecondition, "a shared output held exclusively")
        #expect(register(runtime, "b", outputs: [ControllerOutput(type: "Y.test.dev")]) == .failedPrecondition, "an exclusive output on a shared type")
        #expect(register(runtime, "b", outputs: [ControllerOutput(type: "Z.test.dev"), ControllerOutput(type: "Z.test.dev")]) == .failedPrecondition, "the same exclusive output twice (held by itself)")
        // Inconsistent in itself: INVALID_ARGUMENT.
        #expect(register(runtime, "b", outputs: [ControllerOutput(type: "Z.test.dev", kind: .shared), ControllerOutput(type: "Z.test.dev", kind: .shared)]) == .invalidArgument)
        #expect(register(runtime, "b", outputs: [ControllerOutput(type: "Z.test.dev"), ControllerOutput(type: "Z.test.dev", kind: .shared)]) == .invalidArgument)
        let twice = [ControllerInput(namespace: "n", type: "I.test.dev", kind: .weak), ControllerInput(namespace: "n", type: "I.test.dev", kind: .strong)]
        #expect(register(runtime, "b", inputs: twice, outputs: []) == .invalidArgument, "two inputs with the same (namespace, type, id)")
        #expect(register(runtime, "", outputs: []) == .invalidArgument)
        // None of the failed registrations left anything: "b" may now take Z exclusively and share Y.
        #expect(runtime.controllers.map(\.name) == ["a"])
        #expect(register(runtime, "b", inputs: [twice[0], ControllerInput(namespace: "n", type: "I.test.dev", id: "one")], outputs: [ControllerOutput(type: "Z.test.dev"), ControllerOutput(type: "Y.test.dev", kind: .shared)]) == nil)
        // Unregistering frees the outputs.
        runtime.unregister("a")
        #expect(register(runtime, "c", outputs: [ControllerOutput(type: "X.test.dev")]) == nil)
    }

    @Test func theGraphListsOutputsThenInputs() {
        defer { engine.shutdown() }
        let runtime = ControllerRuntime(engine: engine, logger: quietLogger("test"))
        let (first, second) = DerivingController.chain()
        try? runtime.register(first)
        try? runtime.register(second)
        let edges = runtime.edges
        #expect(edges.prefix(2).map(\.kind) == [.outputExclusive, .outputExclusive])
        #expect(edges.contains(DependencyEdge(controller: "strings-to-sentences", namespace: "default", type: "Strings.test.dev", id: nil, kind: .inputStrong)))
        #expect(edges.contains(DependencyEdge(controller: "ints-to-strings", namespace: "default", type: "Strings.test.dev", id: nil, kind: .inputDestroyReady)))
    }
}

@Suite("What a controller may do", .timeLimit(.minutes(1)))
struct AccessTests {
    @Test func everythingUndeclaredIsPermissionDenied() async throws {
        let engine = try StateEngine(storage: MemoryStorage())
        defer { engine.shutdown() }
        _ = try await engine.create(int("a", 1), owner: "")
        _ = try await engine.create(int("b", 2), owner: "")
        _ = try await engine.create(Resource(metadata: Metadata(namespace: "default", type: "Strings.test.dev", id: "theirs")), owner: "someone-else")
        _ = try await engine.create(Resource(metadata: Metadata(namespace: "default", type: "Weak.test.dev", id: "w")), owner: "")
        let runtime = ControllerRuntime(engine: engine, logger: quietLogger("test"))
        _ = try runtime.registerRemote(name: "c", inputs: [
            ControllerInput(namespace: "default", type: "Ints.test.dev", id: "a", kind: .strong),
            ControllerInput(namespace: "default", type: "Weak.test.dev", kind: .weak),
        ], outputs: [ControllerOutput(type: "Strings.test.dev")], identity: "test")
        let handle = runtime.handle(for: "c")

        func code(_ call: () async throws -> Void) async -> ControllerError.Code? {
            do { try await call(); return nil } catch { return (error as? ControllerError)?.code ?? .internal }
        }
        // Reads: the pinned input, not the other id (even if it does not exist); List shows only it.
        #expect(await code { _ = try await handle.get(namespace: "default", type: "Ints.test.dev", id: "a") } == nil)
        #expect(await code { _ = try await handle.get(namespace: "default", type: "Ints.test.dev", id: "b") } == .permissionDenied)
        #expect(await code { _ = try await handle.get(namespace: "default", type: "Ints.test.dev", id: "nope") } == .permissionDenied)
        #expect(try await handle.list(namespace: "default", type: "Ints.test.dev").map(\.metadata.id) == ["a"])
        #expect(await code { _ = try await handle.list(namespace: "default", type: "Other.test.dev") } == .permissionDenied)
        // Outputs are readable in any namespace.
        #expect(await code { _ = try await handle.list(namespace: "elsewhere", type: "Strings.test.dev") } == nil)
        // Writes: only outputs, only its own.
        #expect(await code { _ = try await handle.create(int("c", 3)) } == .permissionDenied, "create of a non-output")
        var theirs = try engine.get(ResourceAddress(namespace: "default", type: "Strings.test.dev", id: "theirs"))
        theirs.spec.yamlSpec = "mine: true\n"
        #expect(await code { _ = try await handle.update(theirs) } == .permissionDenied, "update of someone else's resource")
        #expect(await code { _ = try await handle.teardown(namespace: "default", type: "Strings.test.dev", id: "theirs") } == .permissionDenied)
        #expect(await code { try await handle.destroy(namespace: "default", type: "Strings.test.dev", id: "theirs") } == .permissionDenied)
        // An owner given in the resource is ignored: the controller is the owner.
        var claimed = Resource(metadata: Metadata(namespace: "default", type: "Strings.test.dev", id: "mine", owner: "someone-else"))
        claimed = try await handle.create(claimed)
        #expect(claimed.metadata.owner == "c")
        // Finalizers: strong inputs only.
        #expect(await code { try await handle.addFinalizers(namespace: "default", type: "Weak.test.dev", id: "w", ["c"]) } == .permissionDenied, "a weak input")
        #expect(await code { try await handle.addFinalizers(namespace: "default", type: "Ints.test.dev", id: "b", ["c"]) } == .permissionDenied, "outside the pinned id")
        #expect(await code { try await handle.addFinalizers(namespace: "default", type: "Ints.test.dev", id: "a", ["c"]) } == nil)
        #expect(try engine.get(ResourceAddress(namespace: "default", type: "Ints.test.dev", id: "a")).metadata.finalizers == ["c"])
        #expect(await code { try await handle.removeFinalizers(namespace: "default", type: "Ints.test.dev", id: "a", ["c"]) } == nil)
        // Nothing was changed by the refused calls.
        #expect(try engine.get(ResourceAddress(namespace: "default", type: "Strings.test.dev", id: "theirs")).metadata.version == "1")
        #expect(try engine.get(ResourceAddress(namespace: "default", type: "Weak.test.dev", id: "w")).metadata.finalizers.isEmpty)
    }
}

@Suite("Reconcile events and restarts", .timeLimit(.minutes(1)))
struct ReconcileTests {
    /// Counts its wake-ups, takes 50 ms per reconcile, and copies the input into its output.
    struct SlowCopier: Controller {
        let name = "slow-copier"
        let inputs = [ControllerInput(namespace: "default", type: "Ints.test.dev", id: "x", kind: .weak)]
        let outputs = [ControllerOutput(type: "Copies.test.dev")]
        let wakeUps = NIOLockedValueBox(0)
        /// Its first reconcile waits here (a reconcile that lasts as long as the test wants).
        let gate = Latch()

        func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws {
            for await _ in events {
                wakeUps.withLockedValue { $0 += 1 }
                await gate.wait()
                guard let input = try await runtime.getIfExists(namespace: "default", type: "Ints.test.dev", id: "x") else { continue }
                if var copy = try await runtime.getIfExists(namespace: "default", type: "Copies.test.dev", id: "x") {
                    copy.spec = input.spec
                    _ = try await runtime.update(copy)
                } else {
                    _ = try await runtime.create(Resource(metadata: Metadata(namespace: "default", type: "Copies.test.dev", id: "x"), spec: input.spec))
                }
            }
        }
    }

    @Test func aBurstOfChangesCoalescesIntoAFewWakeUps() async throws {
        let engine = try StateEngine(storage: MemoryStorage())
        defer { engine.shutdown() }
        let runtime = ControllerRuntime(engine: engine, logger: quietLogger("test"))
        let copier = SlowCopier()
        try runtime.register(copier)
        try await withRunning(runtime) {
            // The start event's reconcile is running (held at the gate) while 1,001 changes come.
            try await eventually("the first reconcile runs") { copier.wakeUps.withLockedValue { $0 } == 1 }
            var x = try await engine.create(int("x", 0), owner: "")
            for value in 1...1000 {
                x.spec.yamlSpec = "value: \(value)\n"
                x = try await engine.update(x, owner: "")
            }
            copier.gate.open()
            try await eventually("the copy reflects the last input") {
                (try? engine.get(ResourceAddress(namespace: "default", type: "Copies.test.dev", id: "x")))?.spec.yamlSpec == "value: 1000\n"
            }
        }
        // The burst coalesced into the one pending event: exactly one more wake-up.
        let wakeUps = copier.wakeUps.withLockedValue { $0 }
        #expect(wakeUps == 2, "1,001 changes during one reconcile woke the controller \(wakeUps) times")
    }

    /// Fails its first three runs, then works.
    struct Flaky: Controller {
        let name = "flaky"
        let inputs: [ControllerInput] = []
        let outputs: [ControllerOutput] = []
        let starts = NIOLockedValueBox([ContinuousClock.Instant]())

        struct Failure: Error {}

        func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws {
            for await _ in events {
                let count = starts.withLockedValue { $0.append(.now); return $0.count }
                if count <= 3 { throw Failure() }
            }
        }
    }

    @Test func aFailingControllerRestartsWithGrowingDelaysAndRecovers() async throws {
        let engine = try StateEngine(storage: MemoryStorage())
        defer { engine.shutdown() }
        var configuration = fastRestarts()
        configuration.backoffInitial = .milliseconds(40)
        configuration.backoffMultiplier = 2
        // The backoff's delays, recorded instead of waited out.
        let delays = NIOLockedValueBox<[Duration]>([])
        configuration.sleep = { delay in delays.withLockedValue { $0.append(delay) } }
        let runtime = ControllerRuntime(engine: engine, configuration: configuration, logger: quietLogger("test"))
        let flaky = Flaky()
        try runtime.register(flaky)
        try await withRunning(runtime) {
            try await eventually("four runs") { flaky.starts.withLockedValue { $0.count } >= 4 }
            try await eventually("running again") { runtime.controllers.first?.running == true }
            let status = try #require(runtime.controllers.first)
            #expect(status.restarts == 3)
            #expect(status.lastError?.contains("Failure") == true)
            // The published status says the same.
            try await eventually("the status resource") {
                (try? engine.get(ResourceAddress(namespace: "meta", type: ControllerRuntime.statusType, id: "flaky")))?.spec.yamlSpec.contains("restarts: 3") == true
            }
        }
        // 40 ms, 80 ms, 160 ms (no jitter): a delay that grows by the multiplier.
        #expect(delays.withLockedValue { $0 } == [.milliseconds(40), .milliseconds(80), .milliseconds(160)])
    }

    @Test func anInputWatchThatFailsStopsTheRuntimeLoudly() async throws {
        var engineConfiguration = StateEngineConfiguration()
        engineConfiguration.retention = RetentionPolicy(minimumEvents: 5)
        engineConfiguration.compactionInterval = 1
        let engine = try StateEngine(storage: MemoryStorage(), configuration: engineConfiguration)
        defer { engine.shutdown() }
        let runtime = ControllerRuntime(engine: engine, logger: quietLogger("test"))
        // The input's watch starts from now; before the runtime runs, the history it needs is
        // compacted away.
        try runtime.register(IdleController(name: "deaf", inputs: [ControllerInput(namespace: "default", type: "Ints.test.dev")]))
        for index in 0..<50 { _ = try await engine.create(int("i\(index)", index), owner: "") }
        await #expect {
            try await runtime.run()
        } throws: { error in
            (error as? ControllerError)?.code == .unavailable && "\(error)".contains("input watch")
        }
        // And it refuses further registrations.
        #expect(throws: ControllerError.self) { try runtime.register(IdleController(name: "late")) }
    }
}

@Suite("A chain of controllers", .timeLimit(.minutes(1)))
struct ChainTests {
    func ids(_ engine: StateEngine, _ type: String) throws -> [String] {
        try engine.list(ResourceKind(namespace: "default", type: type)).map(\.metadata.id)
    }

    @Test func intsBecomeStringsBecomeSentencesAndTeardownLeavesNoOrphans() async throws {
        let engine = try StateEngine(storage: MemoryStorage())
        defer { engine.shutdown() }
        let runtime = ControllerRuntime(engine: engine, configuration: fastRestarts(), logger: quietLogger("test"))
        let (first, second) = DerivingController.chain()
        try runtime.register(first)
        try runtime.register(second)
        try await withRunning(runtime) {
            for value in 1...3 { _ = try await engine.create(int("n\(value)", value), owner: "") }
            try await eventually("three sentences") {
                try ids(engine, "Sentences.test.dev") == ["n1", "n2", "n3"]
            }
            let sentence = try engine.get(ResourceAddress(namespace: "default", type: "Sentences.test.dev", id: "n2"))
            #expect(sentence.spec.yamlSpec == "sentence: \"the number is 2\"\n")
            #expect(sentence.metadata.owner == "strings-to-sentences")
            // Every input carries its consumer's finalizer.
            #expect(try engine.get(ResourceAddress(namespace: "default", type: "Ints.test.dev", id: "n2")).metadata.finalizers == ["ints-to-strings"])
            #expect(try engine.get(ResourceAddress(namespace: "default", type: "Strings.test.dev", id: "n2")).metadata.finalizers == ["strings-to-sentences"])

            // A change flows down the chain.
            var n1 = try engine.get(ResourceAddress(namespace: "default", type: "Ints.test.dev", id: "n1"))
            n1.spec.yamlSpec = "value: 10\n"
            _ = try await engine.update(n1, owner: "")
            try await eventually("the change reaches the sentence") {
                (try? engine.get(ResourceAddress(namespace: "default", type: "Sentences.test.dev", id: "n1")))?.spec.yamlSpec == "sentence: \"the number is 10\"\n"
            }

            // Tearing an input down waits for the chain to clean up, then destroys it.
            try await engine.teardownAndDestroy(ResourceAddress(namespace: "default", type: "Ints.test.dev", id: "n2"), owner: "")
            #expect(try ids(engine, "Ints.test.dev") == ["n1", "n3"])
            try await eventually("no orphans") {
                try ids(engine, "Strings.test.dev") == ["n1", "n3"] && ids(engine, "Sentences.test.dev") == ["n1", "n3"]
            }
        }
        #expect(runtime.controllers.allSatisfy { $0.restarts == 0 }, "\(runtime.controllers)")
    }
}
