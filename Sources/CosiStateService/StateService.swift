import CosiMessages
import CosiRPC
import CosiState

/// The COSI State service (`/cosi.resource.State/*`) on top of a ``StateEngine``.
///
/// This is the service edge: requests are decoded here (a request that does not decode is
/// INVALID_ARGUMENT), engine errors become wire status codes here and nowhere else.
public enum StateService {
    public static let get = "/cosi.resource.State/Get"
    public static let list = "/cosi.resource.State/List"
    public static let create = "/cosi.resource.State/Create"
    public static let update = "/cosi.resource.State/Update"
    public static let destroy = "/cosi.resource.State/Destroy"
    public static let watch = "/cosi.resource.State/Watch"
    public static let teardown = "/cosi.resource.State/Teardown"
    public static let teardownAndDestroy = "/cosi.resource.State/TeardownAndDestroy"

    /// Call metadata that makes a Create or Update a dry run (value `true`): the write is
    /// checked exactly as it would be (access, owner, version, phase, limits, the type's spec
    /// schema) and answered with the resource as it would be stored; nothing is written, no event
    /// is made and nothing is audited as a write. Other writes ignore it.
    public static let dryRunKey = "cosi-dry-run"

    static func isDryRun(_ context: CallContext) -> Bool { context.metadata[dryRunKey] == "true" }

    /// The largest resource (estimated encoded size) a Get answers on the event loop.
    public static let inlineGetBytes = 64 << 10

    /// Every method, ready to register on an RPC server.
    public static func methods(engine: StateEngine) -> [RPCMethod] {
        let wakers = LoopWakers()
        return [
            // Get is a lookup in memory, answered on the event loop; a large resource is encoded
            // in a task (a costly answer).
            .unaryOnLoop(get, GetRequest.self, GetResponse.self) { request, _, respond in
                do {
                    let resource = try mapped { try engine.get(ResourceAddress(namespace: request.namespace, type: request.type, id: request.id)) }
                    respond.succeed(GetResponse(resource: resource), costly: ResourceLimits.estimatedSize(of: resource) > inlineGetBytes)
                } catch {
                    respond.fail(error)
                }
            },
            .serverStreaming(list, ListRequest.self, ListResponse.self) { request, _, writer in
                let resources = try mapped {
                    let query = try ResourceQuery(labelQueries: request.options?.labelQuery ?? [], idQuery: request.options?.idQuery)
                    return try engine.list(ResourceKind(namespace: request.namespace, type: request.type), query: query)
                }
                // Batches of 256 resources, each sent in chunks of about 64 KiB that wait for the
                // client's window: a client that does not read makes cosid hold one chunk.
                var start = 0
                while start < resources.count {
                    let end = min(start + 256, resources.count)
                    try await writer.write(contentsOf: resources[start..<end].map { ListResponse(resource: $0) })
                    start = end
                }
            },
            // Writes go from the event loop to the committer and back: no task.
            .unaryOnLoop(create, CreateRequest.self, CreateResponse.self) { request, context, respond in
                guard let resource = request.resource else { return respond.fail(RPCError(code: .invalidArgument, message: "resource is missing")) }
                let owner = request.options?.owner ?? ""
                if isDryRun(context) {
                    return respond(Result { CreateResponse(resource: try mapped { try engine.createDryRun(resource, owner: owner) }) })
                }
                engine.create(resource, owner: owner, author: context.peer.commonName) { respond(answer($0, CreateResponse.init(resource:))) }
            },
            .unaryOnLoop(update, UpdateRequest.self, UpdateResponse.self) { request, context, respond in
                guard let resource = request.newResource else { return respond.fail(RPCError(code: .invalidArgument, message: "new_resource is missing")) }
                let (owner, phase) = (request.options?.owner ?? "", request.options?.expectedPhase)
                if isDryRun(context) {
                    return respond(Result { UpdateResponse(resource: try mapped { try engine.updateDryRun(resource, owner: owner, expectedPhase: phase) }) })
                }
                engine.update(resource, owner: owner, expectedPhase: phase, author: context.peer.commonName) { respond(answer($0, UpdateResponse.init(resource:))) }
            },
            .unaryOnLoop(destroy, DestroyRequest.self, DestroyResponse.self) { request, context, respond in
                engine.destroy(ResourceAddress(namespace: request.namespace, type: request.type, id: request.id), owner: request.options?.owner ?? "", author: context.peer.commonName) {
                    respond(answer($0) { DestroyResponse() })
                }
            },
            // A watch runs on its connection's event loop (no task: an idle watch is a few small
            // objects).
            .serverStreamingOnLoop(watch, WatchRequest.self, WatchResponse.self, waitsOnOthers: true) { request, _, stream in
                WatchStream.start(request, engine: engine, stream: stream, wakers: wakers)
            },
            .unaryOnLoop(teardown, TeardownRequest.self, TeardownResponse.self) { request, context, respond in
                engine.teardown(ResourceAddress(namespace: request.namespace, type: request.type, id: request.id), owner: request.options?.owner ?? "", author: context.peer.commonName) {
                    respond(answer($0, TeardownResponse.init(destroyReady:)))
                }
            },
            // It waits for the finalizers to go: a task, and graceful shutdown ends it at once.
            RPCMethod.unary(teardownAndDestroy, TeardownAndDestroyRequest.self, TeardownAndDestroyResponse.self) { request, context in
                try await mapped {
                    try await engine.teardownAndDestroy(ResourceAddress(namespace: request.namespace, type: request.type, id: request.id), owner: request.options?.owner ?? "", author: context.peer.commonName)
                }
                return TeardownAndDestroyResponse()
            }.waitingOnOthers(),
        ]
    }

    /// The wire status for an engine error: the engine's own classification
    /// (``StateError/Code/status``), sent as it is.
    public static func rpcError(_ error: StateError) -> RPCError {
        RPCError(code: RPCStatus.Code(rawValue: error.code.status.rawValue), message: error.message)
    }

    /// An engine outcome as an RPC answer.
    private static func answer<T, Response>(_ result: Result<T, StateError>, _ response: (T) -> Response) -> Result<Response, any Error> {
        switch result {
        case .success(let value): .success(response(value))
        case .failure(let error): .failure(rpcError(error))
        }
    }

    private static func answer<Response>(_ result: Result<Void, StateError>, _ response: () -> Response) -> Result<Response, any Error> {
        answer(result) { (_: Void) in response() }
    }

    private static func mapped<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StateError { throw rpcError(error) }
    }

    private static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as StateError { throw rpcError(error) }
    }
}
