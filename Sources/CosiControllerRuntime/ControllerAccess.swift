import CosiController
import CosiMessages
import CosiState

/// The handle a controller reads and writes through. Every call is checked against the
/// controller's current declarations (spec: "What a controller may do"), so the controller
/// physically cannot touch what it did not declare:
///
/// - reads: its output types in any namespace, and its inputs (an input pinned to an id allows
///   that id only; List of a kind it only has pinned inputs on returns those resources);
/// - writes: only its output types, always as their owner (an owner the controller gives is
///   ignored), so it never modifies a resource someone else created;
/// - finalizers: only on resources its strong inputs cover.
struct ControllerAccess: ControllerRuntimeHandle {
    let runtime: ControllerRuntime
    let name: String

    private var engine: StateEngine { runtime.engine }

    func get(namespace: String, type: String, id: String) async throws -> Resource {
        try requireRead(namespace, type, id)
        return try mapped { try engine.get(ResourceAddress(namespace: namespace, type: type, id: id)) }
    }

    func list(namespace: String, type: String, labelQueries: [LabelQuery]) async throws -> [Resource] {
        let (inputs, outputs) = try runtime.declarations(of: name)
        let query = try mapped { try ResourceQuery(labelQueries: labelQueries, idQuery: nil) }
        let all = try mapped { try engine.list(ResourceKind(namespace: namespace, type: type), query: query) }
        if outputs.contains(where: { $0.type == type }) || inputs.contains(where: { $0.covers(namespace: namespace, type: type, id: "") && $0.id == nil }) {
            return all
        }
        let pinned = Set(inputs.filter { $0.namespace == namespace && $0.type == type }.compactMap(\.id))
        guard !pinned.isEmpty else { throw refusal("read \(namespace)/\(type): it is neither an input nor an output") }
        return all.filter { pinned.contains($0.metadata.id) }
    }

    func watchFor(namespace: String, type: String, id: String, finalizersEmpty: Bool) async throws -> Resource? {
        try requireRead(namespace, type, id)
        let request = WatchRequest(namespace: namespace, type: type, id: id, apiVersion: 1)
        let watch = try await mappedAsync { try await engine.watch(request) }
        for try await batch in watch {
            for event in batch {
                let exists = event.type != .destroyed
                let resource = exists ? event.resource : nil
                if !finalizersEmpty || (resource?.metadata.finalizers.isEmpty ?? true) { return resource }
            }
        }
        throw ControllerError(.unavailable, "the runtime stopped while \(name) waited for \(namespace)/\(type)/\(id)")
    }

    func create(_ resource: Resource) async throws -> Resource {
        try requireOutput(resource.metadata.type, "create", resource.address.description)
        return try await mappedAsync { try await engine.create(resource, owner: name) }
    }

    func update(_ resource: Resource) async throws -> Resource {
        try requireOutput(resource.metadata.type, "update", resource.address.description)
        return try await mappedAsync { try await engine.update(resource, owner: name) }
    }

    func teardown(namespace: String, type: String, id: String) async throws -> Bool {
        try requireOutput(type, "tear down", "\(namespace)/\(type)/\(id)")
        return try await mappedAsync { try await engine.teardown(ResourceAddress(namespace: namespace, type: type, id: id), owner: name) }
    }

    func destroy(namespace: String, type: String, id: String) async throws {
        try requireOutput(type, "destroy", "\(namespace)/\(type)/\(id)")
        try await mappedAsync { try await engine.destroy(ResourceAddress(namespace: namespace, type: type, id: id), owner: name) }
    }

    func addFinalizers(namespace: String, type: String, id: String, _ finalizers: [String]) async throws {
        try requireStrong(namespace, type, id)
        _ = try await mappedAsync { try await engine.addFinalizers(ResourceAddress(namespace: namespace, type: type, id: id), finalizers, author: name) }
    }

    func removeFinalizers(namespace: String, type: String, id: String, _ finalizers: [String]) async throws {
        try requireStrong(namespace, type, id)
        do {
            _ = try await mappedAsync { try await engine.removeFinalizers(ResourceAddress(namespace: namespace, type: type, id: id), finalizers, author: name) }
        } catch let error as ControllerError where error.code == .notFound {
            // Removing a finalizer from a resource that no longer exists is not an error.
        }
    }

    func queueReconcile() async throws {
        _ = try runtime.declarations(of: name)
        runtime.queue(of: name)?.signal()
    }

    func updateInputs(_ inputs: [ControllerInput]) async throws {
        try runtime.replaceInputs(name, inputs)
    }

    // MARK: Checks

    private func refusal(_ what: String) -> ControllerError {
        ControllerError(.permissionDenied, "controller \(name) may not \(what)")
    }

    private func requireRead(_ namespace: String, _ type: String, _ id: String) throws(ControllerError) {
        let (inputs, outputs) = try runtime.declarations(of: name)
        guard outputs.contains(where: { $0.type == type }) || inputs.contains(where: { $0.covers(namespace: namespace, type: type, id: id) }) else {
            throw refusal("read \(namespace)/\(type)/\(id): it is neither an input nor an output")
        }
    }

    private func requireOutput(_ type: String, _ verb: String, _ what: String) throws(ControllerError) {
        let (_, outputs) = try runtime.declarations(of: name)
        guard outputs.contains(where: { $0.type == type }) else {
            throw refusal("\(verb) \(what): \(type) is not one of its outputs")
        }
    }

    private func requireStrong(_ namespace: String, _ type: String, _ id: String) throws(ControllerError) {
        let (inputs, _) = try runtime.declarations(of: name)
        guard inputs.contains(where: { $0.kind == .strong && $0.covers(namespace: namespace, type: type, id: id) }) else {
            throw refusal("change the finalizers of \(namespace)/\(type)/\(id): it is not covered by a strong input")
        }
    }
}

/// The engine's errors as controllers see them: with the status the engine gives them.
extension ControllerError {
    public init(_ error: StateError) {
        self.init(Code(error.code.status), error.message)
    }
}

private func mapped<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as StateError { throw ControllerError(error) }
}

private func mappedAsync<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let error as StateError { throw ControllerError(error) }
}
