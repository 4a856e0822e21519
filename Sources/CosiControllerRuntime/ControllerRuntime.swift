import CosiController
import CosiMessages
import CosiState
import Logging
import NIOConcurrencyHelpers

/// Settings of a ``ControllerRuntime``.
public struct ControllerRuntimeConfiguration: Sendable {
    /// The first delay before restarting a controller that failed.
    public var backoffInitial: Duration = .milliseconds(500)
    /// Each further failure multiplies the delay by this much...
    public var backoffMultiplier: Double = 1.5
    /// ...give or take this fraction, at random...
    public var backoffJitter: Double = 0.5
    /// ...up to this. A run that lasted longer than this starts the count again.
    public var backoffMaximum: Duration = .seconds(60)
    /// Publish every controller as a `Controllers.meta.cosi.dev` resource (for `cosictl controllers`).
    public var publishStatus = true
    /// How the runtime waits out a restart's backoff (tests pass one that records the delays and
    /// returns at once).
    public var sleep: @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }

    public init() {}
}

/// The controller runtime: registered controllers, their input watches, their reconcile events and
/// their restarts, on top of a ``StateEngine``. It knows nothing about the network: remote
/// controllers are registered by the controller services, which carry their events and calls.
///
/// ```swift
/// let runtime = ControllerRuntime(engine: engine)
/// try runtime.register(MyController())
/// try await runtime.run()   // until the task is cancelled, or an input watch fails
/// ```
///
/// - Inputs are watched with the engine's watches, one per (namespace, type) shared by every
///   controller that reads it, started from the revision at which the first controller needed it,
///   so no change is missed. A watch that fails ends ``run()`` with the error: the runtime stops
///   loudly rather than leave controllers deaf.
/// - Each controller has one ``ReconcileQueue``: changes coalesce into at most one pending event.
/// - An in-process controller runs as a child task of ``run()``; if it throws, it is restarted
///   after an exponential backoff with jitter, with a new event.
public final class ControllerRuntime: Sendable {
    /// The owner of the resources the runtime itself writes (controller statuses).
    public static let owner = "controller-runtime"
    /// The type of the status resources, in the `meta` namespace, id = controller name.
    public static let statusType = "Controllers.meta.cosi.dev"

    let engine: StateEngine
    let configuration: ControllerRuntimeConfiguration
    let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let jobs: AsyncStream<Job>
    private let statusChanged = ReconcileQueue()
    private let delivery = DeliveryGate()

    private struct State {
        var registry = ControllerRegistry()
        var queues: [String: ReconcileQueue] = [:]
        var watched: Set<ResourceKind> = []
        var jobs: AsyncStream<Job>.Continuation
        var dirtyStatus: Set<String> = []
        var failure: ControllerError?
    }

    private enum Job: Sendable {
        case watch(ResourceKind, after: UInt64)
        case local(String, any Controller)
    }

    public init(engine: StateEngine, configuration: ControllerRuntimeConfiguration = .init(), logger: Logger = Logger(label: "cosi.controllers")) {
        self.engine = engine
        self.configuration = configuration
        self.logger = logger
        let (jobs, continuation) = AsyncStream<Job>.makeStream()
        self.jobs = jobs
        self.state = NIOLockedValueBox(State(jobs: continuation))
    }

    // MARK: Registration

    /// Registers an in-process controller; it starts at once if the runtime runs, else when it
    /// starts, with one reconcile event.
    ///
    /// - Throws: ``ControllerError``: FAILED_PRECONDITION for a conflict with what is registered
    ///   (the name; an output type held exclusively, or shared when exclusive is asked);
    ///   INVALID_ARGUMENT for a declaration inconsistent in itself; UNAVAILABLE once stopped.
    public func register(_ controller: any Controller) throws(ControllerError) {
        _ = try add(name: controller.name, inputs: controller.inputs, outputs: controller.outputs, origin: .local, job: .local(controller.name, controller))
    }

    /// Registers a controller that runs elsewhere: the caller delivers the returned queue's events
    /// and makes its calls through ``handle(for:)``. It gets one event at once.
    public func registerRemote(name: String, inputs: [ControllerInput], outputs: [ControllerOutput], identity: String) throws(ControllerError) -> ReconcileQueue {
        let queue = try add(name: name, inputs: inputs, outputs: outputs, origin: .remote(identity: identity), job: nil)
        queue.signal()
        return queue
    }

    /// Removes a controller: its events end, its output types are free again.
    public func unregister(_ name: String) {
        let queue = state.withLockedValue { state -> ReconcileQueue? in
            state.registry.remove(name)
            state.dirtyStatus.insert(name)
            return state.queues.removeValue(forKey: name)
        }
        queue?.finish()
        statusChanged.signal()
        if queue != nil { logger.info("controller unregistered", metadata: ["controller": "\(name)"]) }
    }

    private func add(name: String, inputs: [ControllerInput], outputs: [ControllerOutput], origin: ControllerOrigin, job: Job?) throws(ControllerError) -> ReconcileQueue {
        let revision = engine.revision
        // In-process controllers' reconciles are timed here; a remote one's run elsewhere.
        let queue = ReconcileQueue(observer: job == nil ? nil : ControllerMetrics(controller: name))
        try state.withLockedValue { state -> Result<Void, ControllerError> in
            if let failure = state.failure { return .failure(failure) }
            do throws(ControllerError) {
                try state.registry.add(name: name, inputs: inputs, outputs: outputs, origin: origin)
            } catch {
                return .failure(error)
            }
            var newJobs: [Job] = watchJobs(for: inputs, after: revision, &state)
            if let job { newJobs.append(job) }
            for job in newJobs {
                guard case .enqueued = state.jobs.yield(job) else {
                    state.registry.remove(name)
                    return .failure(ControllerError(.unavailable, "the controller runtime has stopped"))
                }
            }
            state.queues[name] = queue
            state.dirtyStatus.insert(name)
            return .success(())
        }.get()
        statusChanged.signal()
        logger.info("controller registered", metadata: [
            "controller": "\(name)", "origin": "\(origin)",
            "inputs": "\(inputs.map(\.description).joined(separator: "; "))",
            "outputs": "\(outputs.map(\.description).joined(separator: "; "))",
        ])
        return queue
    }

    /// Watches for the kinds of `inputs` not watched yet, replaying from `after`.
    private func watchJobs(for inputs: [ControllerInput], after revision: UInt64, _ state: inout State) -> [Job] {
        var jobs: [Job] = []
        for kind in Set(inputs.map { ResourceKind(namespace: $0.namespace, type: $0.type) }).sorted() where state.watched.insert(kind).inserted {
            jobs.append(.watch(kind, after: revision))
        }
        return jobs
    }

    // MARK: Introspection

    /// Every registered controller, by name.
    public var controllers: [ControllerStatus] {
        state.withLockedValue { $0.registry.controllers.values.sorted { $0.name < $1.name } }
    }

    /// The dependency graph: outputs first, then inputs.
    public var edges: [DependencyEdge] { state.withLockedValue { $0.registry.edges } }

    /// A registered controller's queue of reconcile events.
    public func queue(of name: String) -> ReconcileQueue? { state.withLockedValue { $0.queues[name] } }

    /// The handle through which a controller reads and writes (access checked on every call).
    public func handle(for name: String) -> any ControllerRuntimeHandle { ControllerAccess(runtime: self, name: name) }

    /// Records what a remote controller's host reports: connected or not, and why it broke.
    public func noteRemote(_ name: String, running: Bool, failure: String? = nil) {
        update(name) { status in
            status.running = running
            if let failure {
                status.restarts += 1
                status.lastError = failure
                ControllerMetrics.restarted(name)
            }
        }
    }

    // MARK: Delivery to remote controllers (Start/Stop)

    /// Whether reconcile events flow to remote controllers (in-process ones are not affected).
    public var isDeliveryRunning: Bool { delivery.isOpen }

    /// Starts delivery to remote controllers; FAILED_PRECONDITION when it runs already.
    public func startDelivery() throws(ControllerError) {
        guard delivery.open() else { throw ControllerError(.failedPrecondition, "reconcile events are delivered already (Start was called, or cosid started them)") }
    }

    /// Stops delivery to remote controllers; events queue, coalesced, until Start.
    public func stopDelivery() throws(ControllerError) {
        guard delivery.close() else { throw ControllerError(.failedPrecondition, "reconcile events are not being delivered (Stop was called already)") }
    }

    /// Waits while delivery to remote controllers is stopped.
    public func waitForDelivery() async { await delivery.wait() }

    // MARK: Running

    /// Runs every controller, input watch and the status publisher as child tasks, until the
    /// calling task is cancelled (then every controller's events end and it returns), or until an
    /// input watch fails (then it throws).
    public func run() async throws {
        if configuration.publishStatus { await registerStatusDefinition() }
        defer {
            let queues = state.withLockedValue { state -> [ReconcileQueue] in
                state.jobs.finish()
                if state.failure == nil { state.failure = ControllerError(.unavailable, "the controller runtime has stopped") }
                return Array(state.queues.values)
            }
            for queue in queues { queue.finish() }
        }
        try await withThrowingDiscardingTaskGroup { group in
            if configuration.publishStatus {
                group.addTask { await self.publishStatuses() }
            }
            for await job in jobs {
                switch job {
                case .watch(let kind, let revision):
                    group.addTask { try await self.watch(kind, after: revision) }
                case .local(let name, let controller):
                    group.addTask { await self.runLocal(name, controller) }
                }
            }
            group.cancelAll()
        }
    }

    /// One shared watch of a kind: every change wakes the controllers whose inputs cover it.
    private func watch(_ kind: ResourceKind, after revision: UInt64) async throws {
        do {
            let request = WatchRequest(namespace: kind.namespace, type: kind.type, options: WatchOptions(startFromBookmark: Bookmark.encode(revision)), apiVersion: 1)
            for try await batch in try await engine.watch(request) {
                for event in batch {
                    if event.type == .errored { throw StateError(.historyLost, event.error ?? "the watch failed") }
                    if let resource = event.resource { dispatch(kind, resource, destroyed: event.type == .destroyed) }
                }
            }
            if Task.isCancelled { return }
            throw StateError(.unavailable, "the watch ended")
        } catch {
            if Task.isCancelled { return }
            let failure = ControllerError(.unavailable, "the input watch of \(kind) failed: \(error)")
            logger.critical("controller runtime stopping: an input watch failed", metadata: ["kind": "\(kind)", "error": "\(error)"])
            state.withLockedValue { state in
                state.failure = failure
                state.jobs.finish()
            }
            throw failure
        }
    }

    private func dispatch(_ kind: ResourceKind, _ resource: Resource, destroyed: Bool) {
        let queues = state.withLockedValue { state -> [ReconcileQueue] in
            guard let interested = state.registry.inputIndex[kind] else { return [] }
            var queues: [ReconcileQueue] = []
            for (name, inputs) in interested where inputs.contains(where: { Self.wakes($0, resource, destroyed: destroyed) }) {
                if let queue = state.queues[name] { queues.append(queue) }
            }
            return queues
        }
        for queue in queues { queue.signal() }
    }

    /// Whether a change of `resource` wakes a controller with `input`.
    static func wakes(_ input: ControllerInput, _ resource: Resource, destroyed: Bool) -> Bool {
        let m = resource.metadata
        guard input.id == nil || input.id == m.id else { return false }
        switch input.kind {
        case .weak, .strong: return true
        case .destroyReady: return !destroyed && m.phase == Phase.tearingDown && m.finalizers.isEmpty
        }
    }

    /// An in-process controller's life: run, and on failure restart after a backoff.
    private func runLocal(_ name: String, _ controller: any Controller) async {
        let handle = handle(for: name)
        var failures = 0
        while !Task.isCancelled, let queue = queue(of: name) {
            queue.signal()
            update(name) { $0.running = true }
            let started = ContinuousClock.now
            do {
                try await controller.run(events: queue.events, runtime: handle)
                update(name) { $0.running = false }
                logger.info("controller finished", metadata: ["controller": "\(name)"])
                return
            } catch {
                guard !Task.isCancelled else {
                    update(name) { $0.running = false }
                    return
                }
                if ContinuousClock.now - started > configuration.backoffMaximum { failures = 0 }
                let delay = backoff(after: failures)
                failures += 1
                update(name) { status in
                    status.running = false
                    status.restarts += 1
                    status.lastError = "\(error)"
                }
                ControllerMetrics.restarted(name)
                logger.warning("controller failed; restarting", metadata: ["controller": "\(name)", "error": "\(error)", "in": "\(delay)"])
                try? await configuration.sleep(delay)
            }
        }
        update(name) { $0.running = false }
    }

    /// The delay before the restart that follows `failures` earlier ones.
    func backoff(after failures: Int) -> Duration {
        func seconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        let maximum = seconds(configuration.backoffMaximum)
        let base = min(seconds(configuration.backoffInitial) * pow(configuration.backoffMultiplier, Double(min(failures, 64))), maximum)
        let jitter = 1 + Double.random(in: -configuration.backoffJitter...configuration.backoffJitter)
        return .seconds(min(base * jitter, maximum))
    }

    // MARK: Internals shared with the handle and the publisher

    func update(_ name: String, _ change: (inout ControllerStatus) -> Void) {
        state.withLockedValue { state in
            state.registry.update(name, change)
            state.dirtyStatus.insert(name)
        }
        statusChanged.signal()
    }

    /// A controller's current declarations, for access checks.
    func declarations(of name: String) throws(ControllerError) -> (inputs: [ControllerInput], outputs: [ControllerOutput]) {
        try state.withLockedValue { state -> Result<([ControllerInput], [ControllerOutput]), ControllerError> in
            guard let status = state.registry.controllers[name] else {
                return .failure(ControllerError(.unavailable, "controller \(name) is not registered"))
            }
            return .success((status.inputs, status.outputs))
        }.get()
    }

    /// Replaces a controller's inputs, watches the new kinds, and queues one event.
    func replaceInputs(_ name: String, _ inputs: [ControllerInput]) throws(ControllerError) {
        let revision = engine.revision
        let queue = try state.withLockedValue { state -> Result<ReconcileQueue?, ControllerError> in
            do throws(ControllerError) {
                try state.registry.replaceInputs(name, inputs)
            } catch {
                return .failure(error)
            }
            for job in watchJobs(for: inputs, after: revision, &state) { state.jobs.yield(job) }
            state.dirtyStatus.insert(name)
            return .success(state.queues[name])
        }.get()
        statusChanged.signal()
        queue?.signal()
    }

    func takeDirtyStatuses() -> [(String, ControllerStatus?)] {
        state.withLockedValue { state in
            defer { state.dirtyStatus = [] }
            return state.dirtyStatus.sorted().map { ($0, state.registry.controllers[$0]) }
        }
    }

    var statusEvents: ReconcileEvents { statusChanged.events }
}

/// Open or closed, with waiters for open; a waiting task that is cancelled stops waiting.
final class DeliveryGate: Sendable {
    private struct State {
        var open = true
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var cancelled: Set<Int> = []
    }

    private let state = NIOLockedValueBox(State())

    var isOpen: Bool { state.withLockedValue { $0.open } }

    /// Opens; false when it was open.
    func open() -> Bool {
        let (changed, waiters) = state.withLockedValue { state -> (Bool, [CheckedContinuation<Void, Never>]) in
            guard !state.open else { return (false, []) }
            state.open = true
            defer { state.waiters = [:] }
            return (true, Array(state.waiters.values))
        }
        for waiter in waiters { waiter.resume() }
        return changed
    }

    /// Closes; false when it was closed.
    func close() -> Bool {
        state.withLockedValue { state in
            guard state.open else { return false }
            state.open = false
            return true
        }
    }

    /// Returns when open (at once if it is), or when the task is cancelled.
    func wait() async {
        let id = state.withLockedValue { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let proceed = state.withLockedValue { state in
                    if state.open || state.cancelled.remove(id) != nil { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if proceed { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state in
                if let waiter = state.waiters.removeValue(forKey: id) { return Optional(waiter) }
                state.cancelled.insert(id)
                return nil
            }
            waiter?.resume()
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
