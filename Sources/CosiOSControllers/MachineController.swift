import CosiController
import CosiMessages
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import Yams

/// What every built-in setting has, whichever controller runs it: its name, types, columns,
/// schema and short names.
public protocol BuiltInSetting: Sendable {
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
}

/// One kind of machine setting a built-in controller manages: how its specs become files under the
/// root, and what its statuses report (one status per spec, same id).
public protocol MachineSetting: BuiltInSetting {
    /// The files (relative to the root) whose changes by someone else the controller must notice
    /// at once (inotify on their directories). Empty: none.
    var keptFiles: [String] { get }
    /// Whether what it keeps gives no events (procfs, the kernel's hostname) and is checked every
    /// resync interval instead.
    var resyncs: Bool { get }
    /// The source of change events for what it keeps (nil: none, it resyncs).
    func observer(root: MachineRoot) throws(MachineError) -> (any MachineObserver)?

    /// Makes the machine match `running` (every spec that is not tearing down), undoing what
    /// `releasing` (the specs tearing down) did, and returns a report for every spec in `running`,
    /// by id. A failure for one spec goes into its report; a failure that concerns them all is
    /// reported for each. A report says what it found instead of the declared state when it had
    /// to change the machine (``StatusReport/replaced``). A report with an error for a spec in
    /// `releasing` says it could not be undone yet: the spec stays tearing down, retried.
    ///
    /// - Parameters:
    ///   - statuses: the current status resources by id (where a setting keeps what it must
    ///     remember, such as the value a kernel parameter had before the first write).
    ///   - leaveAlone: specs whose objects flap: report what is there, write nothing for them.
    func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot, leaveAlone: Set<String>) -> [String: StatusReport]
}

extension MachineSetting {
    public var keptFiles: [String] { [] }
    public var resyncs: Bool { false }

    /// The source of change events for what it keeps: inotify on its kept files' directories.
    public func observer(root: MachineRoot) throws(MachineError) -> (any MachineObserver)? {
        keptFiles.isEmpty ? nil : try FileChanges(root: root, files: keptFiles)
    }
}

/// A spec as a setting reads it: its id and its YAML fields.
public struct SettingSpec: Sendable {
    public var id: String
    public var fields: [String: YAMLValue]

    public init(id: String, fields: [String: YAMLValue]) {
        self.id = id
        self.fields = fields
    }

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
    /// A number (a status's `driftCorrections`).
    case integer(Int)
    /// `true` or `false` (a link status's `up`).
    case boolean(Bool)
    case list([String])
    /// A mapping of text to text, in order (a status's `lastDrift`).
    case pairs([Pair])
    case other

    public struct Pair: Sendable, Hashable {
        public var key: String
        public var value: String
        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }
}

/// What a setting reports for one spec.
public struct StatusReport: Sendable {
    /// The status's fields, in order (what is on the machine now).
    public var fields: [(String, YAMLValue)]
    /// Why the last attempt failed, when it did.
    public var error: String?
    /// Annotations to keep on the status resource (the setting's memory).
    public var annotations: [String: String] = [:]
    /// What was on the machine instead of the declared state, when this apply had to change it
    /// (a file's content, a parameter's value); nil when the machine already matched.
    public var replaced: String?

    public init(fields: [(String, YAMLValue)], error: String? = nil, annotations: [String: String] = [:], replaced: String? = nil) {
        self.fields = fields
        self.error = error
        self.annotations = annotations
        self.replaced = replaced
    }

    /// The status's YAML spec: the fields, then `error` when there is one.
    var yaml: String {
        var mapping: [(Node, Node)] = fields.map { key, value in
            switch value {
            case .scalar(let text): (Node(key), Self.string(text))
            case .list(let items): (Node(key), Node(items.map(Self.string)))
            case .integer(let number): (Node(key), Node(String(number)))
            case .boolean(let value): (Node(key), Node(value ? "true" : "false"))
            case .pairs(let pairs): (Node(key), Node(pairs.map { (Node($0.key), Self.string($0.value)) }))
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

/// The built-in controller for one ``MachineSetting``: specs in, the machine kept as they say,
/// status resources out, following the spec's teardown pattern:
///
/// - it holds a finalizer (its name) on every running spec;
/// - every reconcile applies all running specs to the machine (rewriting a file only when its
///   content must change) and writes each spec's status (same namespace and id);
/// - when a spec tears down, the setting undoes what it did, the status is torn down and destroyed
///   (its destroy-ready input wakes the controller), and only then is the finalizer removed, so the
///   spec goes away last.
///
/// It keeps the machine so (controllers.md, "The machine, kept"): a change of a kept file wakes it
/// at once (``FileChanges``), settings without events are checked every resync interval, and a
/// correction made with no change of the spec is drift: counted in the status
/// (`driftCorrections`, `lastDrift`), logged at notice level and in
/// `cosi_drift_corrections_total`. Its own writes find the machine as declared and are not drift.
/// An object put back more than 5 times in 10 s is left alone until its spec changes
/// (``DriftLedger``). A failure to act on the machine never stops the controller: it is reported
/// in the status's `error` field and retried with backoff (0.5 s, doubling up to the resync
/// interval).
public struct MachineController: Controller {
    public let setting: any MachineSetting
    public let root: MachineRoot
    public let resyncInterval: Duration
    let logger: Logger
    let ledger: DriftLedger
    let sleep: @Sendable (Duration) async throws -> Void
    /// Specs read and statuses rendered, by id: a resync of 1,000 unchanged specs parses and
    /// renders no YAML.
    let cache = ReconcileCache()

    public init(
        _ setting: any MachineSetting, root: MachineRoot, resyncInterval: Duration = .seconds(10), logger: Logger = Logger(label: "cosid.controllers"),
        ledger: DriftLedger = DriftLedger(), sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
    ) {
        self.setting = setting
        self.root = root
        self.resyncInterval = resyncInterval
        self.logger = logger
        self.ledger = ledger
        self.sleep = sleep
    }

    public var name: String { setting.name }

    /// The annotation of a status that names the version of the spec it reports.
    public static let specVersionAnnotation = "cosi.dev/spec-version"
    /// The annotations of a status that keep its drift record.
    static let correctionsAnnotation = "cosi.dev/drift-corrections"
    static let lastDriftTimeAnnotation = "cosi.dev/last-drift-time"
    static let lastDriftFoundAnnotation = "cosi.dev/last-drift-found"
    /// The first retry of a failed attempt.
    static let firstRetry: Duration = .milliseconds(500)

    public var inputs: [ControllerInput] {
        [
            ControllerInput(namespace: setting.namespace, type: setting.specType, kind: .strong),
            ControllerInput(namespace: setting.namespace, type: setting.statusType, kind: .destroyReady),
        ]
    }

    public var outputs: [ControllerOutput] { [ControllerOutput(type: setting.statusType)] }

    public func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws {
        // What the machine says: changes of what it keeps wake the controller.
        var files: (any MachineObserver)?
        var unobserved = false
        do {
            files = try setting.observer(root: root)
        } catch {
            unobserved = true
            logger.warning("cannot watch what this controller keeps; it checks every resync interval instead", metadata: ["controller": "\(name)", "error": "\(error)"])
        }
        try await Self.keep(
            events: events, runtime: runtime, observer: files, resyncs: setting.resyncs || unobserved, resyncInterval: resyncInterval, sleep: sleep
        ) { try await reconcile(runtime) }
    }

    /// The run loop of every built-in controller: a pass per event; changes the observer sees
    /// wake it; after a pass, the next wake-up without an event is a retry with backoff while
    /// something fails (0.5 s doubling up to the resync interval), else the resync when
    /// `resyncs` (what gives no events), else none. Everything armed stops with the run.
    static func keep(
        events: ReconcileEvents, runtime: any ControllerRuntimeHandle, observer: (any MachineObserver)?, resyncs: Bool, resyncInterval: Duration,
        sleep: @escaping @Sendable (Duration) async throws -> Void, pass: () async throws -> Bool
    ) async throws {
        let timer = ReconcileTimer(sleep: sleep)
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let observer {
                group.addTask {
                    for await _ in observer.changes { try? await runtime.queueReconcile() }
                }
            }
            defer {
                observer?.stop()
                group.cancelAll()
            }
            var retry = Self.firstRetry
            for await _ in events {
                let failing: Bool
                do {
                    failing = try await pass()
                } catch {
                    // The runtime restarts the controller: nothing armed outlives this run.
                    await timer.stop()
                    throw error
                }
                observer?.refresh()
                let delay: Duration?
                if failing {
                    delay = min(retry, resyncInterval)
                    retry = min(retry * 2, resyncInterval)
                } else {
                    retry = Self.firstRetry
                    delay = resyncs ? resyncInterval : nil
                }
                timer.arm(after: delay) { try? await runtime.queueReconcile() }
            }
            await timer.stop()
        }
    }

    /// The specs a built-in controller acts on: the running ones (its finalizer added where
    /// missing, each at the version the finalizer made, which its status names) and the ones
    /// tearing down that it still holds.
    static func claim(_ specs: [Resource], setting: any BuiltInSetting, runtime: any ControllerRuntimeHandle) async throws -> (running: [Resource], releasing: [Resource]) {
        var running: [Resource] = []
        for var spec in specs where spec.metadata.phase != "tearingDown" {
            if !spec.metadata.finalizers.contains(setting.name) {
                do {
                    try await runtime.addFinalizers(namespace: setting.namespace, type: setting.specType, id: spec.metadata.id, [setting.name])
                    // A drift right after the first apply counts: the status names this version.
                    guard let current = try await runtime.getIfExists(namespace: setting.namespace, type: setting.specType, id: spec.metadata.id),
                        current.metadata.phase != "tearingDown"
                    else { continue }
                    spec = current
                } catch let error as ControllerError where error.code == .failedPrecondition || error.code == .notFound {
                    continue // it started tearing down meanwhile: the next event handles it
                }
            }
            running.append(spec)
        }
        return (running, specs.filter { $0.metadata.phase == "tearingDown" && $0.metadata.finalizers.contains(setting.name) })
    }

    /// One pass; returns whether an attempt failed (to be retried).
    @discardableResult
    public func reconcile(_ runtime: any ControllerRuntimeHandle) async throws -> Bool {
        async let listedSpecs = runtime.list(namespace: setting.namespace, type: setting.specType)
        async let listedStatuses = runtime.list(namespace: setting.namespace, type: setting.statusType)
        let specs = try await listedSpecs
        let statuses = Dictionary(uniqueKeysWithValues: try await listedStatuses.map { ($0.metadata.id, $0) })

        let (running, releasing) = try await Self.claim(specs, setting: setting, runtime: runtime)

        ledger.keep(only: Set(running.map(\.metadata.id)))
        cache.keep(only: Set(specs.map(\.metadata.id)).union(statuses.keys))
        let leftAlone = ledger.leftAlone(running.map { ($0.metadata.id, $0.metadata.version) })
        let reports = setting.apply(running: running.map(cache.spec), releasing: releasing.map(cache.spec), statuses: statuses, root: root, leaveAlone: leftAlone)

        var failing = false
        for spec in running {
            let id = spec.metadata.id
            var report = reports[id] ?? StatusReport(fields: [], error: "no report")
            if leftAlone.contains(id) {
                report.error = Self.leftAloneReason(ledger)
            } else if report.error != nil {
                failing = true
            }
            report = recordDrift(report, spec: spec, status: statuses[id])
            // Which version of the spec the status reports (`cosictl wait --for status`).
            report.annotations[Self.specVersionAnnotation] = spec.metadata.version
            if var status = statuses[id] {
                guard status.metadata.phase != "tearingDown" else { continue }
                let annotations = status.metadata.annotations.merging(report.annotations) { $1 }
                let yaml = cache.yaml(of: report, id: id)
                guard status.spec.yamlSpec != yaml || status.metadata.annotations != annotations else { continue }
                status.spec = Spec(yamlSpec: yaml)
                status.metadata.annotations = annotations
                _ = try await runtime.update(status)
            } else {
                let metadata = Metadata(namespace: setting.namespace, type: setting.statusType, id: id, annotations: report.annotations)
                _ = try await runtime.create(Resource(metadata: metadata, spec: Spec(yamlSpec: report.yaml)))
            }
        }

        // The statuses of specs that are going (or gone) go first; then the specs may go. A spec
        // the setting could not release yet (a busy mount point) keeps its status, with the error.
        let runningIDs = Set(running.map(\.metadata.id))
        for (id, status) in statuses where !runningIDs.contains(id) && status.metadata.owner == name {
            if let held = reports[id], held.error != nil {
                failing = true
                guard status.metadata.phase != "tearingDown", status.spec.yamlSpec != held.yaml else { continue }
                var status = status
                status.spec = Spec(yamlSpec: held.yaml)
                _ = try await runtime.update(status)
                continue
            }
            guard try await runtime.teardown(namespace: setting.namespace, type: setting.statusType, id: id) else { continue }
            try await runtime.destroy(namespace: setting.namespace, type: setting.statusType, id: id)
            try await runtime.removeFinalizers(namespace: setting.namespace, type: setting.specType, id: id, [name])
        }
        for spec in releasing where statuses[spec.metadata.id] == nil {
            try await runtime.removeFinalizers(namespace: setting.namespace, type: setting.specType, id: spec.metadata.id, [name])
        }
        return failing
    }

    /// Counts a correction made while the spec stayed as it was, and the status reported the
    /// declared state, as drift; adds the drift record to the report's fields either way.
    func recordDrift(_ report: StatusReport, spec: Resource, status: Resource?) -> StatusReport {
        Self.recordDrift(report, spec: spec, status: status, controller: name, logger: logger, ledger: ledger, cache: cache)
    }

    /// The drift record of every built-in controller (``NetworkController`` too): a correction
    /// (`report.replaced`) made while the spec stayed at the version the status reported, and the
    /// status reported no error, is counted, logged and timed; an object corrected too often is
    /// left alone (``DriftLedger``).
    static func recordDrift(
        _ report: StatusReport, spec: Resource, status: Resource?, controller name: String, logger: Logger, ledger: DriftLedger, cache: ReconcileCache
    ) -> StatusReport {
        var report = report
        let previous = status?.metadata.annotations ?? [:]
        var corrections = Int(previous[Self.correctionsAnnotation] ?? "") ?? 0
        var last = previous[Self.lastDriftTimeAnnotation].map { ($0, previous[Self.lastDriftFoundAnnotation] ?? "") }
        let sameSpec = previous[Self.specVersionAnnotation] == spec.metadata.version
        let wasKept = status.map { cache.spec($0).string("error") == nil } ?? false
        if let found = report.replaced, sameSpec, wasKept {
            corrections += 1
            let time = Self.rfc3339(Date())
            last = (time, found)
            Self.drift.increment(dimensions: [("controller", name)])
            logger.notice("drift corrected", metadata: ["controller": "\(name)", "id": "\(spec.metadata.id)", "found": "\(found)"])
            if ledger.corrected(spec.metadata.id, version: spec.metadata.version, at: .now) {
                report.error = Self.leftAloneReason(ledger)
                logger.notice("drift: left alone until its spec changes", metadata: ["controller": "\(name)", "id": "\(spec.metadata.id)"])
            }
        }
        report.fields.append(("driftCorrections", .integer(corrections)))
        if let last {
            report.fields.append(("lastDrift", .pairs([YAMLValue.Pair("time", last.0), YAMLValue.Pair("found", last.1)])))
            report.annotations[Self.lastDriftTimeAnnotation] = last.0
            report.annotations[Self.lastDriftFoundAnnotation] = last.1
        }
        report.annotations[Self.correctionsAnnotation] = String(corrections)
        return report
    }

    static func leftAloneReason(_ ledger: DriftLedger) -> String {
        "put back \(ledger.flips) times in \(ledger.window) and changed back each time by someone else: left alone until the spec changes"
    }

    static let drift = DriftCounter()

    static func rfc3339(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
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

/// What a controller keeps between reconciles so that an unchanged spec is not parsed again and an
/// unchanged report not rendered again.
final class ReconcileCache: Sendable {
    private struct Rendered {
        var fields: [String]
        var values: [YAMLValue]
        var error: String?
        var yaml: String
    }

    private let specs = NIOLockedValueBox([String: (version: String, spec: SettingSpec)]())
    private let rendered = NIOLockedValueBox([String: Rendered]())

    /// Forgets what concerns ids no longer there.
    func keep(only ids: Set<String>) {
        specs.withLockedValue { specs in specs = specs.filter { ids.contains(String($0.key.split(separator: "/", maxSplits: 1).last ?? "")) } }
        rendered.withLockedValue { rendered in rendered = rendered.filter { ids.contains($0.key) } }
    }

    /// A resource's YAML fields, parsed once per version.
    func spec(_ resource: Resource) -> SettingSpec {
        let key = resource.metadata.type + "/" + resource.metadata.id
        if let cached = specs.withLockedValue({ $0[key] }), cached.version == resource.metadata.version { return cached.spec }
        let spec = MachineController.read(resource)
        specs.withLockedValue { $0[key] = (resource.metadata.version, spec) }
        return spec
    }

    /// A report's YAML, rendered once per distinct report.
    func yaml(of report: StatusReport, id: String) -> String {
        let fields = report.fields.map(\.0), values = report.fields.map(\.1)
        if let cached = rendered.withLockedValue({ $0[id] }), cached.fields == fields, cached.values == values, cached.error == report.error {
            return cached.yaml
        }
        let yaml = report.yaml
        rendered.withLockedValue { $0[id] = Rendered(fields: fields, values: values, error: report.error, yaml: yaml) }
        return yaml
    }
}

/// `cosi_drift_corrections_total{controller}`: corrections made with no change of the spec.
struct DriftCounter: Sendable {
    func increment(dimensions: [(String, String)]) {
        Counter(label: "cosi_drift_corrections_total", dimensions: dimensions).increment()
    }
}
