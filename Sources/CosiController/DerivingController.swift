import CosiMessages

/// A controller that derives one resource type from another, id for id, following the spec's
/// teardown pattern: it holds a finalizer on each running input; when an input tears down, it
/// tears the derived output down, destroys it once it is destroy-ready, and then removes its
/// finalizer from the input. No output outlives its input.
///
/// The tests' chain (ints -> strings -> sentences), the controller benchmark and
/// `cosi-controller-example` are made of it.
public struct DerivingController: Controller {
    public let name: String
    public let namespace: String
    public let inputType: String
    public let outputType: String
    /// The output's YAML spec for an input's YAML spec.
    public let derive: @Sendable (String) -> String

    public init(name: String, namespace: String = "default", from inputType: String, to outputType: String, derive: @escaping @Sendable (String) -> String) {
        self.name = name
        self.namespace = namespace
        self.inputType = inputType
        self.outputType = outputType
        self.derive = derive
    }

    public var inputs: [ControllerInput] {
        [
            ControllerInput(namespace: namespace, type: inputType, kind: .strong),
            // Wakes us when an output we tore down has lost its last finalizer.
            ControllerInput(namespace: namespace, type: outputType, kind: .destroyReady),
        ]
    }

    public var outputs: [ControllerOutput] { [ControllerOutput(type: outputType)] }

    public func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws {
        for await _ in events {
            try await reconcile(runtime)
        }
    }

    /// Makes the outputs match the inputs. The writes of one reconcile are issued concurrently
    /// (up to `parallelWrites` at once), so a durable runtime commits them in a few groups.
    public func reconcile(_ runtime: any ControllerRuntimeHandle) async throws {
        // Both reads at once: for a remote controller they are two round trips.
        async let listedInputs = runtime.list(namespace: namespace, type: inputType)
        async let listedOutputs = runtime.list(namespace: namespace, type: outputType)
        let inputs = try await listedInputs
        let outputs = Dictionary(uniqueKeysWithValues: try await listedOutputs.map { ($0.metadata.id, $0) })
        var work: [@Sendable () async throws -> Void] = []
        var wanted = Set<String>()
        for input in inputs where input.metadata.phase != "tearingDown" {
            let id = input.metadata.id
            wanted.insert(id)
            let spec = derive(input.spec.yamlSpec)
            let needsFinalizer = !input.metadata.finalizers.contains(name)
            let existing = outputs[id]
            if let existing, existing.metadata.phase == "tearingDown" || (existing.spec.yamlSpec == spec && !needsFinalizer) { continue }
            work.append { [name, namespace, inputType, outputType] in
                if needsFinalizer {
                    do {
                        try await runtime.addFinalizers(namespace: namespace, type: inputType, id: id, [name])
                    } catch let error as ControllerError where error.code == .failedPrecondition || error.code == .notFound {
                        // It started tearing down (or went) meanwhile: the next event handles it.
                        return
                    }
                }
                if var output = existing {
                    guard output.spec.yamlSpec != spec else { return }
                    output.spec.yamlSpec = spec
                    _ = try await runtime.update(output)
                } else {
                    _ = try await runtime.create(Resource(metadata: Metadata(namespace: namespace, type: outputType, id: id), spec: Spec(yamlSpec: spec)))
                }
            }
        }
        // Outputs whose input is tearing down or gone: tear down, destroy when ready, release the input.
        for (id, output) in outputs where !wanted.contains(id) && output.metadata.owner == name {
            work.append { [name, namespace, inputType, outputType] in
                guard try await runtime.teardown(namespace: namespace, type: outputType, id: id) else { return }
                try await runtime.destroy(namespace: namespace, type: outputType, id: id)
                try await runtime.removeFinalizers(namespace: namespace, type: inputType, id: id, [name])
            }
        }
        // Inputs still holding our finalizer whose output is already gone.
        for input in inputs where input.metadata.phase == "tearingDown" && input.metadata.finalizers.contains(name) && outputs[input.metadata.id] == nil {
            work.append { [name, namespace, inputType] in
                try await runtime.removeFinalizers(namespace: namespace, type: inputType, id: input.metadata.id, [name])
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, item) in work.enumerated() {
                if index >= parallelWrites { try await group.next() }
                group.addTask { try await item() }
            }
            try await group.waitForAll()
        }
    }

    /// How many writes one reconcile has in flight at once.
    public var parallelWrites = 64

    /// The chain of the tests: `Ints.test.dev` {value: N} -> `Strings.test.dev` {text: "N"} ->
    /// `Sentences.test.dev` {sentence: "the number is N"}.
    public static func chain(namespace: String = "default") -> (DerivingController, DerivingController) {
        (
            DerivingController(name: "ints-to-strings", namespace: namespace, from: "Ints.test.dev", to: "Strings.test.dev") { spec in
                "text: \"\(value(in: spec))\"\n"
            },
            DerivingController(name: "strings-to-sentences", namespace: namespace, from: "Strings.test.dev", to: "Sentences.test.dev") { spec in
                "sentence: \"the number is \(value(in: spec))\"\n"
            }
        )
    }

    /// The scalar of the first `key: value` line of a YAML spec, unquoted.
    public static func value(in spec: String) -> String {
        guard let line = spec.split(separator: "\n").first, let colon = line.firstIndex(of: ":") else { return "" }
        var value = String(line[line.index(after: colon)...].drop { $0 == " " })
        while value.hasSuffix(" ") { value.removeLast() }
        if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
        return value
    }
}
