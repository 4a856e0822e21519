#if canImport(Glibc)
import Glibc
#endif
import CosiController
import CosiMessages
import CosiNetlink
import Dispatch
import Logging
import Metrics
import NIOConcurrencyHelpers

/// One kind of network object a built-in controller manages over rtnetlink (links, addresses,
/// routes). Unlike a ``MachineSetting``, its statuses describe every object of the namespace,
/// declared or not, by an id of the object's own.
public protocol NetworkSetting: BuiltInSetting {
    /// The netlink groups whose events may change what it reports or keeps.
    var groups: NetlinkSocket.Groups { get }
    /// The prefix of the status annotations that are its memory (`cosi.dev/link-`): kept from
    /// pass to pass while the spec runs, whatever a pass reports.
    var memoryPrefix: String { get }

    /// Makes the namespace match `running` (every spec that is not tearing down), undoes what
    /// `releasing` did (only what cosid added), then reads every object of the namespace.
    ///
    /// - Parameters:
    ///   - statuses: the current status resources by id (where a setting keeps what it must
    ///     remember: whether it created an object, what a link was like before the first change).
    ///   - leaveAlone: specs whose objects flap: report what is there, write nothing for them.
    func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], netlink: Rtnetlink, leaveAlone: Set<String>) -> NetworkPass
}

/// What a network setting found and did in one pass.
public struct NetworkPass: Sendable {
    /// What a setting reports for one spec.
    public struct Declared: Sendable {
        /// The status that reports it: its object's, or (while it is not in the kernel) the one
        /// its spec names.
        public var statusID: String
        public var error: String?
        /// What was there instead, when this pass had to change the kernel.
        public var replaced: String?
        /// Annotations to keep on its status (the setting's memory of the object).
        public var memory: [String: String]

        public init(statusID: String, error: String? = nil, replaced: String? = nil, memory: [String: String] = [:]) {
            self.statusID = statusID
            self.error = error
            self.replaced = replaced
            self.memory = memory
        }
    }

    /// Every object of the namespace after the pass, by status id: its status fields. Nil when
    /// the namespace could not be read (the statuses of undeclared objects then stay as they are).
    public var objects: [String: [(String, YAMLValue)]]?
    /// Each running spec, by spec id.
    public var declared: [String: Declared]
    /// Releasing specs that could not be undone yet, by spec id (they stay tearing down).
    public var holding: [String: Declared]

    public init(objects: [String: [(String, YAMLValue)]]?, declared: [String: Declared], holding: [String: Declared] = [:]) {
        self.objects = objects
        self.declared = declared
        self.holding = holding
    }
}

/// The built-in controller for one ``NetworkSetting``: specs in, the network namespace kept as
/// they say over rtnetlink, a status for every object of the namespace out.
///
/// - It holds a finalizer (its name) on every running spec and removes it once the setting has
///   undone what cosid added for it.
/// - Every pass applies all running specs, then reads the namespace (netlink dumps) and writes
///   only the statuses that changed: one per object, declared or not; a declared object's status
///   also carries `driftCorrections`, `lastDrift` and `error`; a declared object that is not in
///   the kernel has a status with the error and no kernel fields.
/// - Netlink events of the setting's groups (on a socket of its own, ``NetlinkChanges``) wake it;
///   its own writes' events wake it too, and find the kernel as declared: no write, no drift.
/// - A correction with no spec change is drift (counted, logged, `cosi_drift_corrections_total`);
///   an object put back more than 5 times in 10 s is left alone until its spec changes; a failure
///   is retried with backoff (0.5 s doubling up to the resync interval).
public struct NetworkController: Controller {
    public let setting: any NetworkSetting
    public let namespace: NetworkNamespace
    public let resyncInterval: Duration
    let netlink: Rtnetlink
    let logger: Logger
    let ledger: DriftLedger
    let sleep: @Sendable (Duration) async throws -> Void
    let cache = ReconcileCache()
    private let passCount = NIOLockedValueBox(0)
    /// Where its passes' netlink requests run.
    private let queue: DispatchQueue

    /// Opens the controller's request socket in `namespace`.
    ///
    /// - Throws: ``NetlinkError`` when the socket cannot be opened there.
    public init(
        _ setting: any NetworkSetting, namespace: NetworkNamespace, resyncInterval: Duration = .seconds(10), logger: Logger = Logger(label: "cosid.controllers"),
        ledger: DriftLedger = DriftLedger(), sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
    ) throws(NetlinkError) {
        self.setting = setting
        self.namespace = namespace
        self.resyncInterval = resyncInterval
        self.logger = logger
        self.ledger = ledger
        self.sleep = sleep
        netlink = try Rtnetlink(in: namespace)
        queue = DispatchQueue(label: "cosi-\(setting.name)")
    }

    public var name: String { setting.name }

    /// Requests this controller sent that changed the kernel (links, addresses, routes).
    public var netlinkWrites: Int { netlink.writes }
    /// Passes made (each reads the namespace).
    public var passes: Int { passCount.withLockedValue { $0 } }

    public var inputs: [ControllerInput] {
        [
            ControllerInput(namespace: setting.namespace, type: setting.specType, kind: .strong),
            // A status torn down earlier and held by someone's finalizer: destroyed once it is free.
            ControllerInput(namespace: setting.namespace, type: setting.statusType, kind: .destroyReady),
        ]
    }

    public var outputs: [ControllerOutput] { [ControllerOutput(type: setting.statusType)] }

    public func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws {
        var observer: (any MachineObserver)?
        do {
            observer = try NetlinkChanges(in: namespace, groups: setting.groups, name: "cosi-\(name)")
        } catch {
            logger.warning("cannot follow netlink events; this controller checks every resync interval instead", metadata: ["controller": "\(name)", "error": "\(error)"])
        }
        let writes = Counter(label: "cosi_netlink_writes_total", dimensions: [("controller", name)])
        try await MachineController.keep(
            events: events, runtime: runtime, observer: observer, resyncs: observer == nil, resyncInterval: resyncInterval, sleep: sleep
        ) {
            let before = netlink.writes
            defer { if netlink.writes > before { writes.increment(by: netlink.writes - before) } }
            return try await reconcile(runtime)
        }
    }

    /// One pass; returns whether an attempt failed (to be retried).
    @discardableResult
    public func reconcile(_ runtime: any ControllerRuntimeHandle) async throws -> Bool {
        passCount.withLockedValue { $0 += 1 }
        async let listedSpecs = runtime.list(namespace: setting.namespace, type: setting.specType)
        async let listedStatuses = runtime.list(namespace: setting.namespace, type: setting.statusType)
        let specs = try await listedSpecs
        let statuses = Dictionary(try await listedStatuses.map { ($0.metadata.id, $0) }) { first, _ in first }

        let (running, releasing) = try await MachineController.claim(specs, setting: setting, runtime: runtime)

        ledger.keep(only: Set(running.map(\.metadata.id)))
        cache.keep(only: Set(specs.map(\.metadata.id)).union(statuses.keys))
        let leftAlone = ledger.leftAlone(running.map { ($0.metadata.id, $0.metadata.version) })
        // The netlink requests block: on a thread of the controller's own, not the task pool's.
        let (runningSpecs, releasingSpecs) = (running.map(cache.spec), releasing.map(cache.spec))
        let (setting, netlink) = (self.setting, self.netlink)
        let pass = await withCheckedContinuation { continuation in
            queue.async {
                continuation.resume(returning: setting.apply(running: runningSpecs, releasing: releasingSpecs, statuses: statuses, netlink: netlink, leaveAlone: leftAlone))
            }
        }
        // What a setting remembers of a declared object is never lost to a pass that could not
        // tell (a failed dump, a spec that does not read): the previous status's memory stays.
        func memory(_ declared: NetworkPass.Declared, previous: Resource?) -> [String: String] {
            (previous?.metadata.annotations ?? [:]).filter { $0.key.hasPrefix(setting.memoryPrefix) }.merging(declared.memory) { $1 }
        }

        // What every status should say: the objects, then the declared ones' records on top.
        var wanted: [String: StatusReport] = [:]
        for (id, fields) in pass.objects ?? [:] { wanted[id] = StatusReport(fields: fields) }
        var failing = !pass.holding.isEmpty
        for spec in running {
            guard let declared = pass.declared[spec.metadata.id] else { continue }
            let statusID = declared.statusID
            var report = StatusReport(
                fields: pass.objects?[statusID] ?? [], error: declared.error, annotations: memory(declared, previous: statuses[statusID] ?? statuses[spec.metadata.id]),
                replaced: declared.replaced
            )
            if leftAlone.contains(spec.metadata.id) {
                report.error = MachineController.leftAloneReason(ledger)
            } else if report.error != nil {
                failing = true
            }
            report = MachineController.recordDrift(report, spec: spec, status: statuses[statusID], controller: name, logger: logger, ledger: ledger, cache: cache)
            report.annotations[MachineController.specVersionAnnotation] = spec.metadata.version
            wanted[statusID] = report
        }
        for declared in pass.holding.values {
            var report = wanted[declared.statusID] ?? StatusReport(fields: [])
            report.error = declared.error
            report.annotations = memory(declared, previous: statuses[declared.statusID])
            wanted[declared.statusID] = report
        }

        // Only what changed is written, many at a time (100,000 routes).
        var writes: [@Sendable () async throws -> Void] = []
        for (id, report) in wanted {
            let yaml = cache.yaml(of: report, id: id)
            if var status = statuses[id] {
                guard status.metadata.owner == name else { continue }
                if status.metadata.phase == "tearingDown" {
                    // Going from an earlier pass, and back in the kernel: gone first (once no
                    // finalizer holds it), made anew next.
                    writes.append {
                        if try await runtime.teardown(namespace: setting.namespace, type: setting.statusType, id: id) {
                            try await runtime.destroy(namespace: setting.namespace, type: setting.statusType, id: id)
                        }
                    }
                    failing = true
                    continue
                }
                guard status.spec.yamlSpec != yaml || status.metadata.annotations != report.annotations else { continue }
                status.spec = Spec(yamlSpec: yaml)
                status.metadata.annotations = report.annotations
                writes.append { [status] in _ = try await runtime.update(status) }
            } else {
                let metadata = Metadata(namespace: setting.namespace, type: setting.statusType, id: id, annotations: report.annotations)
                let resource = Resource(metadata: metadata, spec: Spec(yamlSpec: yaml))
                writes.append { _ = try await runtime.create(resource) }
            }
        }
        // When the namespace could not be read, undeclared objects' statuses stay as they are.
        for (id, status) in statuses where wanted[id] == nil && status.metadata.owner == name && pass.objects != nil {
            writes.append {
                if try await runtime.teardown(namespace: setting.namespace, type: setting.statusType, id: id) {
                    try await runtime.destroy(namespace: setting.namespace, type: setting.statusType, id: id)
                }
            }
        }
        try await Self.run(writes, atOnce: 64)

        for spec in releasing where pass.holding[spec.metadata.id] == nil {
            try await runtime.removeFinalizers(namespace: setting.namespace, type: setting.specType, id: spec.metadata.id, [name])
        }
        return failing
    }

    /// Runs `operations`, at most `limit` at a time (the engine commits those in flight together).
    static func run(_ operations: [@Sendable () async throws -> Void], atOnce limit: Int) async throws {
        guard !operations.isEmpty else { return }
        if operations.count == 1 { return try await operations[0]() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            while next < min(limit, operations.count) {
                group.addTask(operation: operations[next])
                next += 1
            }
            while try await group.next() != nil {
                if next < operations.count {
                    group.addTask(operation: operations[next])
                    next += 1
                }
            }
        }
    }
}

/// Netlink events of some groups in a namespace: a socket of its own, bound to them, read by a
/// ``PollLoop``; any event (or ENOBUFS, events lost) rings.
final class NetlinkChanges: MachineObserver {
    var changes: AsyncStream<Void> { loop.changes }
    private let socket: NetlinkSocket
    private let loop: PollLoop

    init(in namespace: NetworkNamespace, groups: NetlinkSocket.Groups, name: String) throws {
        let socket = try NetlinkSocket(in: namespace, groups: groups)
        self.socket = socket
        loop = try PollLoop(watching: socket.descriptor, events: Int16(POLLIN), name: name) { socket.drain() }
    }

    func refresh() {}

    func stop() { loop.stop() }
}
