import CosiController
import CosiControllerRuntime
import CosiMessages
import CosiRPC
import Foundation
import Logging
import NIOConcurrencyHelpers

/// The controller services (`/cosi.runtime.ControllerRuntime/*` and
/// `/cosi.runtime.ControllerAdapter/*`) on a ``ControllerRuntime``: controllers on other
/// machines register, receive reconcile events and read and write through the runtime's
/// access-checked handle (spec: controllers.md, "Remote controllers").
///
/// This is the service edge: requests are decoded here and ``ControllerError``s become status codes
/// here. Tokens are 256 random bits (hex), bound to the registering certificate's identity (its
/// common name): an unknown token, or a token presented by another identity, is PERMISSION_DENIED.
public final class ControllerService: Sendable {
    public static let register = "/cosi.runtime.ControllerRuntime/RegisterController"
    public static let start = "/cosi.runtime.ControllerRuntime/Start"
    public static let stop = "/cosi.runtime.ControllerRuntime/Stop"
    public static let reconcileEvents = "/cosi.runtime.ControllerAdapter/ReconcileEvents"
    public static let queueReconcile = "/cosi.runtime.ControllerAdapter/QueueReconcile"
    public static let updateInputs = "/cosi.runtime.ControllerAdapter/UpdateInputs"
    public static let get = "/cosi.runtime.ControllerAdapter/Get"
    public static let list = "/cosi.runtime.ControllerAdapter/List"
    public static let watchFor = "/cosi.runtime.ControllerAdapter/WatchFor"
    public static let create = "/cosi.runtime.ControllerAdapter/Create"
    public static let update = "/cosi.runtime.ControllerAdapter/Update"
    public static let teardown = "/cosi.runtime.ControllerAdapter/Teardown"
    public static let destroy = "/cosi.runtime.ControllerAdapter/Destroy"
    public static let addFinalizer = "/cosi.runtime.ControllerAdapter/AddFinalizer"
    public static let removeFinalizer = "/cosi.runtime.ControllerAdapter/RemoveFinalizer"

    /// The methods that change state (audited).
    public static let writes: Set<String> = [register, start, stop, queueReconcile, updateInputs, create, update, teardown, destroy, addFinalizer, removeFinalizer]

    let runtime: ControllerRuntime
    /// How long a disconnected remote controller keeps its registration.
    let gracePeriod: Duration
    let logger: Logger
    private let remotes = NIOLockedValueBox<[String: Remote]>([:])

    /// A registered remote controller, by token.
    private struct Remote {
        var name: String
        var identity: String
        var inputs: [ControllerInput]
        var outputs: [ControllerOutput]
        var queue: ReconcileQueue
        /// The event stream now connected, if any.
        var stream: StreamControl?
        /// When it last had no stream (registration counts), for the grace period.
        var disconnectedSince: ContinuousClock.Instant?
    }

    public init(runtime: ControllerRuntime, gracePeriod: Duration = .seconds(60), logger: Logger = Logger(label: "cosi.controllers")) {
        self.runtime = runtime
        self.gracePeriod = gracePeriod
        self.logger = logger
    }

    // MARK: Registration and delivery

    func register(_ request: Runtime.RegisterControllerRequest, identity: String) throws(ControllerError) -> String {
        let inputs = try request.inputs.map(Self.input)
        let outputs = try request.outputs.map(Self.output)
        let name = request.controllerName
        let token = Self.newToken()
        // A restarted process has lost its token: a registration of the same name by the same
        // identity whose holder is disconnected takes it over at once (controllers.md).
        let holder = remotes.withLockedValue { remotes in remotes.first { $0.value.name == name } }
        if let (oldToken, remote) = holder {
            guard remote.identity == identity, remote.stream == nil else {
                throw ControllerError(.failedPrecondition, heldMessage(remote, asked: identity))
            }
            if remote.inputs == inputs, remote.outputs == outputs {
                // The same declarations: the registration goes on under the new token.
                let taken = remotes.withLockedValue { remotes -> Bool in
                    guard let current = remotes[oldToken], current.stream == nil else { return false }
                    remotes[oldToken] = nil
                    var moved = current
                    moved.disconnectedSince = .now
                    remotes[token] = moved
                    return true
                }
                guard taken else { throw ControllerError(.failedPrecondition, "a controller named \(name) connected meanwhile: try again") }
                logger.notice("remote controller taken over by a new registration of the same identity (the old token is void)", metadata: ["controller": "\(name)", "identity": "\(identity)"])
                return token
            }
            // New declarations: the old registration goes, the new one is made.
            remotes.withLockedValue { _ = $0.removeValue(forKey: oldToken) }
            runtime.unregister(name)
            logger.notice("remote controller replaced by a new registration of the same identity with other inputs or outputs", metadata: ["controller": "\(name)", "identity": "\(identity)"])
        }
        let queue = try runtime.registerRemote(name: name, inputs: inputs, outputs: outputs, identity: identity)
        remotes.withLockedValue { $0[token] = Remote(name: name, identity: identity, inputs: inputs, outputs: outputs, queue: queue, disconnectedSince: .now) }
        return token
    }

    /// Why a name cannot be taken: who holds it, and until when when disconnected.
    private func heldMessage(_ remote: Remote, asked identity: String) -> String {
        let who = remote.identity == identity ? "this identity (\(identity))" : "identity \(remote.identity)"
        if remote.stream != nil {
            return "a controller named \(remote.name) is registered already by \(who), and its event stream is connected"
                + (remote.identity == identity ? ": stop the other process first" : "")
        }
        var message = "a controller named \(remote.name) is registered already by \(who), disconnected"
        if let since = remote.disconnectedSince {
            let left = max(.zero, gracePeriod - (ContinuousClock.now - since))
            let until = Date(timeIntervalSinceNow: Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18)
            message += "; its registration is kept until \(until.formatted(.iso8601)) unless it reconnects"
        }
        return message
    }

    /// The remote controller a token stands for, if `identity` presented it.
    private func resolve(_ token: String, _ identity: String) throws(ControllerError) -> Remote {
        guard let remote = remotes.withLockedValue({ $0[token] }) else {
            throw ControllerError(.permissionDenied, "unknown controller token (never issued, or the controller was unregistered after its grace period)")
        }
        guard remote.identity == identity else {
            throw ControllerError(.permissionDenied, "this controller token was issued to another identity")
        }
        return remote
    }

    func handle(_ token: String, _ context: CallContext) throws(ControllerError) -> any ControllerRuntimeHandle {
        runtime.handle(for: try resolve(token, context.peer.commonName).name)
    }

    /// Serves one event stream: an event at once, then one per coalesced reconcile event, while
    /// delivery runs. A newer stream for the same token ends this one with ABORTED.
    func streamEvents(_ token: String, _ context: CallContext, _ writer: TypedResponseWriter<Runtime.ReconcileEventsResponse>) async throws {
        let remote = try resolve(token, context.peer.commonName)
        let control = StreamControl()
        let previous = remotes.withLockedValue { remotes -> StreamControl? in
            defer {
                remotes[token]?.stream = control
                remotes[token]?.disconnectedSince = nil
            }
            return remotes[token]?.stream
        }
        if let previous {
            previous.replace()
            await previous.ended.wait()
        }
        runtime.noteRemote(remote.name, running: true)
        logger.info("remote controller connected", metadata: ["controller": "\(remote.name)", "identity": "\(remote.identity)"])
        var failure: String?
        defer { disconnected(token, control, remote.name, failure: failure) }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    // An event may have been lost while disconnected.
                    remote.queue.signal()
                    for await _ in remote.queue.events {
                        await self.runtime.waitForDelivery()
                        try Task.checkCancellation()
                        try await writer.write(Runtime.ReconcileEventsResponse())
                    }
                    // The events end when the call is cancelled (the connection closed) or the
                    // controller was unregistered.
                    try Task.checkCancellation()
                    throw RPCError(code: .unavailable, message: "controller \(remote.name) is no longer registered")
                }
                group.addTask {
                    await control.replaced.wait()
                    throw RPCError(code: .aborted, message: "another ReconcileEvents stream for this controller replaced this one")
                }
                try await group.next()
            }
        } catch let error as RPCError where error.code == .aborted {
            throw error
        } catch is CancellationError {
            failure = "the event stream ended: its connection closed"
            throw CancellationError()
        } catch {
            failure = "the event stream broke: \(error)"
            throw error
        }
    }

    private func disconnected(_ token: String, _ control: StreamControl, _ name: String, failure: String?) {
        let current = remotes.withLockedValue { remotes -> Bool in
            guard remotes[token]?.stream === control else { return false }
            remotes[token]?.stream = nil
            remotes[token]?.disconnectedSince = .now
            return true
        }
        if current {
            runtime.noteRemote(name, running: false, failure: failure ?? "the event stream ended")
            logger.info("remote controller disconnected", metadata: ["controller": "\(name)", "grace": "\(gracePeriod)"])
        }
        control.ended.open()
    }

    /// Unregisters remote controllers that stayed disconnected for the grace period, until
    /// cancelled. Run it beside the server.
    public func expireDisconnected() async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let expired = remotes.withLockedValue { remotes -> [String] in
                let tokens = remotes.filter { $0.value.stream == nil && ($0.value.disconnectedSince.map { now - $0 >= gracePeriod } ?? false) }.map(\.key)
                return tokens.compactMap { remotes.removeValue(forKey: $0)?.name }
            }
            for name in expired {
                logger.notice("remote controller unregistered: no stream within the grace period", metadata: ["controller": "\(name)", "grace": "\(gracePeriod)"])
                runtime.unregister(name)
            }
            try? await Task.sleep(for: min(gracePeriod / 4, .milliseconds(250)))
        }
    }

    // MARK: Conversions

    static func input(_ input: Runtime.ControllerInput) throws(ControllerError) -> ControllerInput {
        let kind: ControllerInput.Kind = switch input.kind {
        case .weak: .weak
        case .strong: .strong
        case .destroyReady: .destroyReady
        default: throw ControllerError(.invalidArgument, "unknown input kind \(input.kind.rawValue)")
        }
        return ControllerInput(namespace: input.namespace, type: input.type, id: input.id, kind: kind)
    }

    static func output(_ output: Runtime.ControllerOutput) throws(ControllerError) -> ControllerOutput {
        let kind: ControllerOutput.Kind = switch output.kind {
        case .exclusive: .exclusive
        case .shared: .shared
        default: throw ControllerError(.invalidArgument, "unknown output kind \(output.kind.rawValue)")
        }
        return ControllerOutput(type: output.type, kind: kind)
    }

    /// The wire status for a runtime error.
    public static func rpcError(_ error: ControllerError) -> RPCError {
        RPCError(code: RPCStatus.Code(rawValue: error.code.status.rawValue), message: error.message)
    }

    /// 256 random bits, hex.
    static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in
            let hex = String(generator.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
    }
}

/// One event stream's lifecycle: replaced by a newer one, and ended.
final class StreamControl: Sendable {
    let replaced = Gate()
    let ended = Gate()
    func replace() { replaced.open() }
}

/// Opens once; `wait()` returns once it is open (or the task is cancelled).
final class Gate: Sendable {
    private let queue = ReconcileQueue()
    private let isOpen = NIOLockedValueBox(false)

    func open() {
        isOpen.withLockedValue { $0 = true }
        queue.finish()
    }

    func wait() async {
        var events = queue.events.makeAsyncIterator()
        while !isOpen.withLockedValue({ $0 }), await events.next() != nil {}
    }
}
