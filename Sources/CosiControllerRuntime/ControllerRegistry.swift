import CosiController
import CosiMessages

/// Where a registered controller runs.
public enum ControllerOrigin: Hashable, Sendable {
    /// In `cosid`'s process.
    case local
    /// On the other end of the controller services, calling as this certificate identity.
    case remote(identity: String)
}

/// One edge of the dependency graph (spec: "The runtime can export its dependency graph").
public struct DependencyEdge: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        case outputExclusive, outputShared, inputWeak, inputStrong, inputDestroyReady
    }

    public var controller: String
    /// Empty for outputs (they span every namespace).
    public var namespace: String
    public var type: String
    public var id: String?
    public var kind: Kind

    public init(controller: String, namespace: String, type: String, id: String?, kind: Kind) {
        self.controller = controller
        self.namespace = namespace
        self.type = type
        self.id = id
        self.kind = kind
    }
}

/// A registered controller as the runtime reports it.
public struct ControllerStatus: Hashable, Sendable {
    public var name: String
    public var origin: ControllerOrigin
    public var inputs: [ControllerInput]
    public var outputs: [ControllerOutput]
    /// Its reconcile loop is running (in-process), or its event stream is connected (remote).
    public var running: Bool
    /// How many times it failed and was restarted (remote: how many times its stream broke).
    public var restarts: Int
    public var lastError: String?
}

/// The registered controllers and who holds which output type: every registration rule of the spec
/// ("Declarations"), checked without side effects, so a failed registration leaves nothing behind.
struct ControllerRegistry {
    private(set) var controllers: [String: ControllerStatus] = [:]
    /// Output type -> the controller holding it exclusively.
    private var exclusive: [String: String] = [:]
    /// Output type -> the controllers sharing it.
    private var shared: [String: Set<String>] = [:]
    /// (namespace, type) -> the controllers with an input on it, and those inputs.
    private(set) var inputIndex: [ResourceKind: [String: [ControllerInput]]] = [:]

    /// Checks a declaration that stands on its own (INVALID_ARGUMENT).
    static func validate(name: String, inputs: [ControllerInput], outputs: [ControllerOutput]) throws(ControllerError) {
        guard !name.isEmpty else { throw ControllerError(.invalidArgument, "controller_name must not be empty") }
        try validate(inputs: inputs)
        var seen: [String: ControllerOutput.Kind] = [:]
        for output in outputs {
            guard !output.type.isEmpty else { throw ControllerError(.invalidArgument, "an output of \(name) has no type") }
            switch (seen[output.type], output.kind) {
            case (nil, _):
                seen[output.type] = output.kind
            case (.shared?, .shared):
                throw ControllerError(.invalidArgument, "\(name) declares the shared output \(output.type) twice")
            case (.exclusive?, .exclusive):
                // The same exclusive type twice: it is held by the controller itself.
                throw ControllerError(.failedPrecondition, "output \(output.type) is already held exclusively by \(name)")
            default:
                throw ControllerError(.invalidArgument, "\(name) declares \(output.type) both exclusive and shared")
            }
        }
    }

    /// Two inputs with the same (namespace, type, id) are one too many (the kind does not count).
    static func validate(inputs: [ControllerInput]) throws(ControllerError) {
        var seen = Set<[String?]>()
        for input in inputs {
            guard !input.namespace.isEmpty, !input.type.isEmpty else {
                throw ControllerError(.invalidArgument, "an input needs a namespace and a type (\(input))")
            }
            if let id = input.id, id.isEmpty { throw ControllerError(.invalidArgument, "an input's id must not be empty when set (\(input))") }
            guard seen.insert([input.namespace, input.type, input.id]).inserted else {
                throw ControllerError(.invalidArgument, "two inputs on \(input.namespace)/\(input.type)\(input.id.map { "/\($0)" } ?? "")")
            }
        }
    }

    /// Adds a controller, or throws and changes nothing. Conflicts with what is registered are
    /// FAILED_PRECONDITION.
    mutating func add(name: String, inputs: [ControllerInput], outputs: [ControllerOutput], origin: ControllerOrigin) throws(ControllerError) {
        try Self.validate(name: name, inputs: inputs, outputs: outputs)
        guard controllers[name] == nil else {
            throw ControllerError(.failedPrecondition, "a controller named \(name) is registered already")
        }
        for output in outputs {
            if let holder = exclusive[output.type] {
                throw ControllerError(.failedPrecondition, "output \(output.type) is already held exclusively by \(holder)")
            }
            if output.kind == .exclusive, let holders = shared[output.type], !holders.isEmpty {
                throw ControllerError(.failedPrecondition, "output \(output.type) is already shared by \(holders.sorted().joined(separator: ", ")): it cannot be exclusive")
            }
        }
        for output in outputs {
            switch output.kind {
            case .exclusive: exclusive[output.type] = name
            case .shared: shared[output.type, default: []].insert(name)
            }
        }
        controllers[name] = ControllerStatus(name: name, origin: origin, inputs: inputs, outputs: outputs, running: false, restarts: 0)
        index(name, inputs)
    }

    mutating func remove(_ name: String) {
        guard let status = controllers.removeValue(forKey: name) else { return }
        for output in status.outputs {
            if exclusive[output.type] == name { exclusive[output.type] = nil }
            shared[output.type]?.remove(name)
            if shared[output.type]?.isEmpty == true { shared[output.type] = nil }
        }
        unindex(name, status.inputs)
    }

    /// Replaces a controller's inputs (INVALID_ARGUMENT when they are inconsistent).
    mutating func replaceInputs(_ name: String, _ inputs: [ControllerInput]) throws(ControllerError) {
        try Self.validate(inputs: inputs)
        guard let old = controllers[name]?.inputs else { throw ControllerError(.unavailable, "controller \(name) is not registered") }
        unindex(name, old)
        controllers[name]!.inputs = inputs
        index(name, inputs)
    }

    mutating func update(_ name: String, _ change: (inout ControllerStatus) -> Void) {
        guard controllers[name] != nil else { return }
        change(&controllers[name]!)
    }

    /// The dependency graph: every controller's outputs, then its inputs, by controller name.
    var edges: [DependencyEdge] {
        let sorted = controllers.values.sorted { $0.name < $1.name }
        let outputs = sorted.flatMap { status in
            status.outputs.map { DependencyEdge(controller: status.name, namespace: "", type: $0.type, id: nil, kind: $0.kind == .exclusive ? .outputExclusive : .outputShared) }
        }
        let inputs = sorted.flatMap { status in
            status.inputs.map { input in
                let kind: DependencyEdge.Kind = switch input.kind {
                case .weak: .inputWeak
                case .strong: .inputStrong
                case .destroyReady: .inputDestroyReady
                }
                return DependencyEdge(controller: status.name, namespace: input.namespace, type: input.type, id: input.id, kind: kind)
            }
        }
        return outputs + inputs
    }

    private mutating func index(_ name: String, _ inputs: [ControllerInput]) {
        for input in inputs {
            inputIndex[ResourceKind(namespace: input.namespace, type: input.type), default: [:]][name, default: []].append(input)
        }
    }

    private mutating func unindex(_ name: String, _ inputs: [ControllerInput]) {
        for kind in Set(inputs.map { ResourceKind(namespace: $0.namespace, type: $0.type) }) {
            inputIndex[kind]?[name] = nil
            if inputIndex[kind]?.isEmpty == true { inputIndex[kind] = nil }
        }
    }
}
