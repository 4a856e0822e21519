import CosiController
import CosiMessages
import Yams

/// One kind of machine setting a built-in controller manages: how its specs become files under the
/// root, and what its statuses report.
public protocol MachineSetting: Sendable {
    /// The controller's name (and the finalizer it puts on specs).
    var name: String { get }
    /// Where its specs and statuses live.
    var namespace: String { get }
    var specType: String { get }
    var statusType: String { get }
    /// Print columns (name, JSON path) of the spec and status types' definitions.
    var specColumns: [(String, String)] { get }
    var statusColumns: [(String, String)] { get }
    /// The fields of the spec type.
    var specSchema: SpecSchema { get }
    /// Short names of the spec and status types (distinct across the built-in types).
    var aliases: (spec: [String], status: [String]) { get }

    /// Makes the machine match `running` (every spec that is not tearing down), undoing what
    /// `releasing` (the specs tearing down) did, and returns a report for every spec in `running`,
    /// by id. A failure for one spec goes into its report; a failure that concerns them all is
    /// reported for each.
    ///
    /// - Parameter statuses: the current status resources by id (where a setting keeps what it must
    ///   remember, such as the value a kernel parameter had before the first write).
    func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot) -> [String: StatusReport]
}

/// A spec as a setting reads it: its id and its YAML fields.
public struct SettingSpec: Sendable {
    public var id: String
    public var fields: [String: YAMLValue]

    /// A field as text (scalars), or nil.
    public func string(_ key: String) -> String? {
        if case .scalar(let value)? = fields[key] { return value }
        return nil
    }

    /// A field as a list of text (a list of scalars, or one scalar), or nil.
    public func strings(_ key: String) -> [String]? {
        switch fields[key] {
        case .list(let values)?: return values
        case .scalar(let value)?: return [value]
        default: return nil
        }
    }
}

/// The values a spec's YAML may hold.
public enum YAMLValue: Sendable, Hashable {
    case scalar(String)
    case list([String])
    case other
}

/// What a setting reports for one spec.
public struct StatusReport: Sendable {
    /// The status's fields, in order (what is on the machine now).
    public var fields: [(String, YAMLValue)]
    /// Why the last attempt failed, when it did.
    public var error: String?
    /// Annotations to keep on the status resource (the setting's memory).
    public var annotations: [String: String] = [:]

    public init(fields: [(String, YAMLValue)], error: String? = nil, annotations: [String: String] = [:]) {
        self.fields = fields
        self.error = error
        self.annotations = annotations
    }

    /// The status's YAML spec: the fields, then `error` when there is one.
    var yaml: String {
        var mapping: [(Node, Node)] = fields.map { key, value in
            switch value {
            case .scalar(let text): (Node(key), Self.string(text))
            case .list(let items): (Node(key), Node(items.map(Self.string)))
            case .other: (Node(key), Node("null", Tag(.null)))
            }
        }
        if let error { mapping.append((Node("error"), Self.string(error))) }
        return (try? Yams.serialize(node: Node(mapping))) ?? ""
    }

    /// A text scalar that reads back as text: quoted when its plain form would read as something
    /// else (`10`, `true`, `null`, the empty string).
    static func string(_ text: String) -> Node {
        let plain = Node(text)
        return Resolver.default.resolveTag(of: plain) == .str && !text.isEmpty ? plain : Node(text, Tag(.str), .singleQuoted)
    }
}

/// The built-in controller for one ``MachineSetting``: specs in, files under the root and status
/// resources out, following the spec's teardown pattern:
///
/// - it holds a finalizer (its name) on every running spec;
/// - every reconcile applies all running specs to the machine (rewriting a file only when its
///   content must change) and writes each spec's status (same namespace and id);
/// - when a spec tears down, the setting undoes what it did, the status is torn down and destroyed
///   (its destroy-ready input wakes the controller), and only then is the finalizer removed, so the
///   spec goes away last.
///
/// A failure to act on the machine never stops the controller: it is reported in the status's
/// `error` field, and tried again on the next event.
public struct MachineController: Controller {
    public let setting: any MachineSetting
    public let root: MachineRoot

    public init(_ setting: any MachineSetting, root: MachineRoot) {
        self.setting = setting
        self.root = root
    }

    public var name: String { setting.name }

    /// The annotation of a status that names the version of the spec it reports.
    public static let specVersionAnnotation = "cosi.dev/spec-version"

    public var inputs: [ControllerInput] {
        [
            ControllerInput(namespace: setting.namespace, type: setting.specType, kind: .strong),
            ControllerInput(namespace: setting.namespace, type: setting.statusType, kind: .destroyReady),
        ]
    }

    public var outputs: [ControllerOutput] { [ControllerOutput(type: setting.statusType)] }

    public func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws {
        for await _ in events {
            try await reconcile(runtime)
        }
    }

    public func reconcile(_ runtime: any ControllerRuntimeHandle) async throws {
        async let listedSpecs = runtime.list(namespace: setting.namespace, type: setting.specType)
        async let listedStatuses = runtime.list(namespace: setting.namespace, type: setting.statusType)
        let specs = try await listedSpecs
        let statuses = Dictionary(uniqueKeysWithValues: try await listedStatuses.map { ($0.metadata.id, $0) })

        var running: [Resource] = []
        for spec in specs where spec.metadata.phase != "tearingDown" {
            if !spec.metadata.finalizers.contains(name) {
                do {
                    try await runtime.addFinalizers(namespace: setting.namespace, type: setting.specType, id: spec.metadata.id, [name])
                } catch let error as ControllerError where error.code == .failedPrecondition || error.code == .notFound {
                    continue // it started tearing down meanwhile: the next event handles it
                }
            }
            running.append(spec)
        }
        let releasing = specs.filter { $0.metadata.phase == "tearingDown" && $0.metadata.finalizers.contains(name) }

        let reports = setting.apply(running: running.map(Self.read), releasing: releasing.map(Self.read), statuses: statuses, root: root)

        for spec in running {
            let id = spec.metadata.id
            var report = reports[id] ?? StatusReport(fields: [], error: "no report")
            // Which version of the spec the status reports (`cosictl wait --for status`).
            report.annotations[Self.specVersionAnnotation] = spec.metadata.version
            if var status = statuses[id] {
                guard status.metadata.phase != "tearingDown" else { continue }
                let annotations = status.metadata.annotations.merging(report.annotations) { $1 }
                guard status.spec.yamlSpec != report.yaml || status.metadata.annotations != annotations else { continue }
                status.spec = Spec(yamlSpec: report.yaml)
                status.metadata.annotations = annotations
                _ = try await runtime.update(status)
            } else {
                let metadata = Metadata(namespace: setting.namespace, type: setting.statusType, id: id, annotations: report.annotations)
                _ = try await runtime.create(Resource(metadata: metadata, spec: Spec(yamlSpec: report.yaml)))
            }
        }

        // The statuses of specs that are going (or gone) go first; then the specs may go.
        let runningIDs = Set(running.map(\.metadata.id))
        for (id, status) in statuses where !runningIDs.contains(id) && status.metadata.owner == name {
            guard try await runtime.teardown(namespace: setting.namespace, type: setting.statusType, id: id) else { continue }
            try await runtime.destroy(namespace: setting.namespace, type: setting.statusType, id: id)
            try await runtime.removeFinalizers(namespace: setting.namespace, type: setting.specType, id: id, [name])
        }
        for spec in releasing where statuses[spec.metadata.id] == nil {
            try await runtime.removeFinalizers(namespace: setting.namespace, type: setting.specType, id: spec.metadata.id, [name])
        }
    }

    /// A spec resource's YAML fields (a spec that does not read as a mapping has none).
    static func read(_ resource: Resource) -> SettingSpec {
        var fields: [String: YAMLValue] = [:]
        if let node = try? Yams.compose(yaml: resource.spec.yamlSpec), let mapping = node.mapping {
            for (key, value) in mapping {
                guard let key = key.string else { continue }
                switch value {
                case .scalar(let scalar): fields[key] = .scalar(scalar.string)
                case .sequence(let sequence): fields[key] = .list(sequence.compactMap(\.string))
                default: fields[key] = .other
                }
            }
        }
        return SettingSpec(id: resource.metadata.id, fields: fields)
    }
}
