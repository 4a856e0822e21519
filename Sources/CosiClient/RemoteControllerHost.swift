import CosiController
import CosiMessages
import CosiProtobuf
import CosiRPC
import NIOConcurrencyHelpers

/// Runs a ``Controller`` against a remote `cosid`, unchanged: the same controller that runs
/// in-process runs here, talking to the runtime through the controller services.
///
/// ```swift
/// try await withCosiClient(.development()) { client in
///     try await RemoteControllerHost(client: client, controller: MyController()).run()
/// }
/// ```
///
/// It registers the controller (certificate role `os:controller` or `os:admin`), keeps its
/// ReconcileEvents stream open, and reconnects with exponential backoff when the connection drops
/// or the server restarts, keeping its token (so it keeps its registration within the server's
/// grace period). If the server no longer knows the token, it registers again. A controller that
/// throws is restarted after a backoff, with a new event, as in-process; one that returns ends
/// ``run()``.
public final class RemoteControllerHost: Sendable {
    public let controller: any Controller
    let client: CosiClient
    let maximumBackoff: Duration
    private let token = NIOLockedValueBox<String?>(nil)
    private let connected = NIOLockedValueBox(false)

    public init(client: CosiClient, controller: any Controller, maximumBackoff: Duration = .seconds(5)) {
        self.client = client
        self.controller = controller
        self.maximumBackoff = maximumBackoff
    }

    /// Whether the event stream is connected now.
    public var isConnected: Bool { connected.withLockedValue { $0 } }

    /// The token of the current registration, once registered.
    public var currentToken: String? { token.withLockedValue { $0 } }

    /// Registers and runs the controller until it returns (or the task is cancelled).
    ///
    /// - Throws: ``ControllerError`` when the registration is refused (a conflicting name or
    ///   output, no controller role).
    public func run() async throws {
        _ = try await register()
        let queue = ReconcileQueue()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.pumpEvents(into: queue) }
            group.addTask {
                try await self.runController(queue)
                // Returning ends the host; the stream is no longer needed.
                throw CancellationError()
            }
            do {
                try await group.next()
            } catch is CancellationError {
            }
            group.cancelAll()
        }
    }

    private func runController(_ queue: ReconcileQueue) async throws {
        let handle = RemoteHandle(host: self)
        var failures = 0
        while !Task.isCancelled {
            do {
                try await controller.run(events: queue.events, runtime: handle)
                return
            } catch {
                if Task.isCancelled { return }
                failures += 1
                try await Task.sleep(for: backoff(failures))
                queue.signal()
            }
        }
    }

    /// Keeps the ReconcileEvents stream open, feeding `queue`, across disconnects.
    private func pumpEvents(into queue: ReconcileQueue) async throws {
        var failures = 0
        while !Task.isCancelled {
            do {
                let current = try await currentOrNewToken()
                let stream = try await client.activeConnection().serverStream(
                    "/cosi.runtime.ControllerAdapter/ReconcileEvents",
                    request: Runtime.ReconcileEventsRequest(controllerToken: current).serializedBytes()
                )
                for try await _ in stream {
                    connected.withLockedValue { $0 = true }
                    failures = 0
                    queue.signal()
                }
                connected.withLockedValue { $0 = false }
            } catch let error as RPCError where error.code == .permissionDenied && error.message.contains("unknown controller token") {
                // The server forgot us (its grace period passed, or it restarted): register again.
                connected.withLockedValue { $0 = false }
                token.withLockedValue { $0 = nil }
                continue
            } catch let error as RPCError where [.unavailable, .aborted, .cancelled, .deadlineExceeded].contains(error.code) {
                connected.withLockedValue { $0 = false }
            }
            failures += 1
            try await Task.sleep(for: backoff(failures))
        }
    }

    private func backoff(_ failures: Int) -> Duration {
        min(.milliseconds(100) * (1 << min(failures - 1, 10)), maximumBackoff)
    }

    private func currentOrNewToken() async throws -> String {
        if let current = currentToken { return current }
        return try await register()
    }

    @discardableResult
    private func register() async throws -> String {
        let request = Runtime.RegisterControllerRequest(
            controllerName: controller.name,
            inputs: controller.inputs.map(Self.wire),
            outputs: controller.outputs.map(Self.wire)
        )
        let response = try await call("/cosi.runtime.ControllerRuntime/RegisterController", request, as: Runtime.RegisterControllerResponse.self)
        token.withLockedValue { $0 = response.controllerToken }
        return response.controllerToken
    }

    /// A unary call, with its RPC error as a ``ControllerError``.
    func call<Request: ProtobufMessage, Response: ProtobufMessage>(_ method: String, _ request: Request, as: Response.Type) async throws -> Response {
        do {
            return try await client.unary(method, request, as: Response.self)
        } catch let error as RPCError {
            throw ControllerError(error)
        }
    }

    /// The token for a call: the current registration's.
    func requireToken() throws -> String {
        guard let current = currentToken else { throw ControllerError(.unavailable, "\(controller.name) is not registered") }
        return current
    }

    static func wire(_ input: ControllerInput) -> Runtime.ControllerInput {
        let kind: Runtime.ControllerInputKind = switch input.kind {
        case .weak: .weak
        case .strong: .strong
        case .destroyReady: .destroyReady
        }
        return Runtime.ControllerInput(kind: kind, namespace: input.namespace, type: input.type, id: input.id)
    }

    static func wire(_ output: ControllerOutput) -> Runtime.ControllerOutput {
        Runtime.ControllerOutput(type: output.type, kind: output.kind == .exclusive ? .exclusive : .shared)
    }
}

/// The handle of a remotely hosted controller: each call is a ControllerAdapter call with its token.
struct RemoteHandle: ControllerRuntimeHandle {
    let host: RemoteControllerHost

    func get(namespace: String, type: String, id: String) async throws -> Resource {
        let response = try await host.call("/cosi.runtime.ControllerAdapter/Get", Runtime.RuntimeGetRequest(controllerToken: try host.requireToken(), namespace: namespace, type: type, id: id), as: Runtime.RuntimeGetResponse.self)
        guard let resource = response.resource else { throw ControllerError(.internal, "Get returned no resource") }
        return resource
    }

    func list(namespace: String, type: String, labelQueries: [LabelQuery]) async throws -> [Resource] {
        let request = Runtime.RuntimeListRequest(controllerToken: try host.requireToken(), namespace: namespace, type: type, options: Runtime.RuntimeListOptions(labelQuery: labelQueries))
        do {
            var resources: [Resource] = []
            for try await response in host.client.serverStream("/cosi.runtime.ControllerAdapter/List", request, as: Runtime.RuntimeListResponse.self) {
                if let resource = response.resource { resources.append(resource) }
            }
            return resources
        } catch let error as RPCError {
            throw ControllerError(error)
        }
    }

    func watchFor(namespace: String, type: String, id: String, finalizersEmpty: Bool) async throws -> Resource? {
        let request = Runtime.RuntimeWatchForRequest(controllerToken: try host.requireToken(), namespace: namespace, type: type, id: id, finalizersEmpty: finalizersEmpty ? Runtime.ConditionFinalizersEmpty() : nil)
        let response: Runtime.RuntimeWatchForResponse
        do {
            // No deadline: it waits as long as the condition takes (cancelling the task ends it).
            let bytes = try await host.client.activeConnection().unary("/cosi.runtime.ControllerAdapter/WatchFor", request: request.serializedBytes())
            response = try Runtime.RuntimeWatchForResponse(serializedBytes: bytes)
        } catch let error as RPCError {
            throw ControllerError(error)
        }
        // A resource that does not exist comes back as a tombstone.
        guard let resource = response.resource, resource.metadata.version != "undefined" else { return nil }
        return resource
    }

    func create(_ resource: Resource) async throws -> Resource {
        try await host.call("/cosi.runtime.ControllerAdapter/Create", Runtime.RuntimeCreateRequest(controllerToken: try host.requireToken(), resource: resource), as: Runtime.RuntimeCreateResponse.self).resource ?? resource
    }

    func update(_ resource: Resource) async throws -> Resource {
        try await host.call("/cosi.runtime.ControllerAdapter/Update", Runtime.RuntimeUpdateRequest(controllerToken: try host.requireToken(), newResource: resource), as: Runtime.RuntimeUpdateResponse.self).resource ?? resource
    }

    func teardown(namespace: String, type: String, id: String) async throws -> Bool {
        try await host.call("/cosi.runtime.ControllerAdapter/Teardown", Runtime.RuntimeTeardownRequest(controllerToken: try host.requireToken(), namespace: namespace, type: type, id: id), as: Runtime.RuntimeTeardownResponse.self).ready
    }

    func destroy(namespace: String, type: String, id: String) async throws {
        _ = try await host.call("/cosi.runtime.ControllerAdapter/Destroy", Runtime.RuntimeDestroyRequest(controllerToken: try host.requireToken(), namespace: namespace, type: type, id: id), as: Runtime.RuntimeDestroyResponse.self)
    }

    func addFinalizers(namespace: String, type: String, id: String, _ finalizers: [String]) async throws {
        _ = try await host.call("/cosi.runtime.ControllerAdapter/AddFinalizer", Runtime.RuntimeAddFinalizerRequest(controllerToken: try host.requireToken(), namespace: namespace, type: type, id: id, finalizers: finalizers), as: Runtime.RuntimeAddFinalizerResponse.self)
    }

    func removeFinalizers(namespace: String, type: String, id: String, _ finalizers: [String]) async throws {
        _ = try await host.call("/cosi.runtime.ControllerAdapter/RemoveFinalizer", Runtime.RuntimeRemoveFinalizerRequest(controllerToken: try host.requireToken(), namespace: namespace, type: type, id: id, finalizers: finalizers), as: Runtime.RuntimeRemoveFinalizerResponse.self)
    }

    func queueReconcile() async throws {
        _ = try await host.call("/cosi.runtime.ControllerAdapter/QueueReconcile", Runtime.QueueReconcileRequest(controllerToken: try host.requireToken()), as: Runtime.QueueReconcileResponse.self)
    }

    func updateInputs(_ inputs: [ControllerInput]) async throws {
        _ = try await host.call("/cosi.runtime.ControllerAdapter/UpdateInputs", Runtime.UpdateInputsRequest(controllerToken: try host.requireToken(), inputs: inputs.map(RemoteControllerHost.wire)), as: Runtime.UpdateInputsResponse.self)
    }
}

extension ControllerError {
    /// A server status as a controller error.
    public init(_ error: RPCError) {
        let code: Code = switch error.code {
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        case .failedPrecondition, .aborted: .failedPrecondition
        case .permissionDenied, .unauthenticated: .permissionDenied
        case .invalidArgument, .outOfRange: .invalidArgument
        case .unavailable, .cancelled: .unavailable
        case .deadlineExceeded: .deadlineExceeded
        case .resourceExhausted: .resourceExhausted
        case .unimplemented: .unimplemented
        default: .internal
        }
        self.init(code, error.message)
    }
}
