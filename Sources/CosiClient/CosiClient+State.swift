import CosiMessages
import CosiRPC
import NIOCore

/// The COSI State service, typed.
///
/// Errors are ``RPCError``s with the server's status: NOT_FOUND, ALREADY_EXISTS,
/// PERMISSION_DENIED (owner mismatch), FAILED_PRECONDITION (version conflict, finalizers
/// pending, unusable bookmark), INVALID_ARGUMENT (the message names the field).
extension CosiClient {
    public func get(namespace: String, type: String, id: String) async throws -> Resource {
        let response = try await unary("/cosi.resource.State/Get", GetRequest(namespace: namespace, type: type, id: id), as: GetResponse.self)
        guard let resource = response.resource else { throw RPCError(code: .internal, message: "Get returned no resource") }
        return resource
    }

    /// The resources of a kind, sorted by id, filtered by `idQuery` AND (any of `labelQueries`).
    public func list(namespace: String, type: String, labelQueries: [LabelQuery] = [], idQuery: IDQuery? = nil, timeout: Duration? = nil) async throws -> [Resource] {
        let request = ListRequest(namespace: namespace, type: type, options: ListOptions(labelQuery: labelQueries, idQuery: idQuery))
        var resources: [Resource] = []
        for try await response in serverStream("/cosi.resource.State/List", request, as: ListResponse.self, timeout: timeout) {
            if let resource = response.resource { resources.append(resource) }
        }
        return resources
    }

    /// Call metadata that makes a Create or Update a dry run (see docs/PROTOCOL.md).
    public static let dryRunMetadata = ["cosi-dry-run": "true"]

    /// Creates a resource owned by `owner`; returns it as stored (version "1"). With `dryRun`,
    /// the server checks the Create exactly as it would make it and answers with the resource as
    /// it would be stored, writing nothing.
    public func create(_ resource: Resource, owner: String = "", dryRun: Bool = false) async throws -> Resource {
        let request = CreateRequest(resource: resource, options: CreateOptions(owner: owner))
        let response = try await unary("/cosi.resource.State/Create", request, as: CreateResponse.self, metadata: dryRun ? Self.dryRunMetadata : [:])
        guard let stored = response.resource else { throw RPCError(code: .internal, message: "Create returned no resource") }
        return stored
    }

    /// Updates a resource; `resource.metadata.version` must be the stored version. With `dryRun`,
    /// nothing is written (see ``create(_:owner:dryRun:)``).
    public func update(_ resource: Resource, owner: String = "", expectedPhase: String? = nil, dryRun: Bool = false) async throws -> Resource {
        let request = UpdateRequest(newResource: resource, options: UpdateOptions(owner: owner, expectedPhase: expectedPhase))
        let response = try await unary("/cosi.resource.State/Update", request, as: UpdateResponse.self, metadata: dryRun ? Self.dryRunMetadata : [:])
        guard let stored = response.resource else { throw RPCError(code: .internal, message: "Update returned no resource") }
        return stored
    }

    public func destroy(namespace: String, type: String, id: String, owner: String = "") async throws {
        _ = try await unary("/cosi.resource.State/Destroy", DestroyRequest(namespace: namespace, type: type, id: id, options: DestroyOptions(owner: owner)), as: DestroyResponse.self)
    }

    /// Moves a resource to phase tearingDown; returns whether it has no finalizers left.
    public func teardown(namespace: String, type: String, id: String, owner: String = "") async throws -> Bool {
        try await unary("/cosi.resource.State/Teardown", TeardownRequest(namespace: namespace, type: type, id: id, options: TeardownOptions(owner: owner)), as: TeardownResponse.self).destroyReady
    }

    /// Tears a resource down and destroys it once its finalizers are gone, waiting up to `timeout`.
    public func teardownAndDestroy(namespace: String, type: String, id: String, owner: String = "", timeout: Duration? = nil) async throws {
        let request = TeardownAndDestroyRequest(namespace: namespace, type: type, id: id, options: TeardownAndDestroyOptions(owner: owner))
        _ = try await unary("/cosi.resource.State/TeardownAndDestroy", request, as: TeardownAndDestroyResponse.self, timeout: timeout ?? .seconds(3600))
    }

    /// One Watch call: the responses as they arrive (the first is the empty "ready" response).
    /// Ends with the call; see ``watch(_:)`` for a watch that survives dropped connections.
    public func watchCall(_ request: WatchRequest) -> ResponseStream<WatchResponse> {
        serverStream("/cosi.resource.State/Watch", request, as: WatchResponse.self)
    }
}

extension CosiClient {
    /// Defines a resource type: creates its ResourceDefinition in `meta` (which needs `os:admin`);
    /// the server fills the display type and aliases the spec leaves empty. A type defined
    /// already is left as it is. Returns the definition as stored.
    @discardableResult
    public func define(_ spec: Meta.ResourceDefinitionSpec) async throws -> Resource {
        let resource = Resource(
            metadata: Metadata(namespace: MetaNamespace.namespace, type: MetaNamespace.resourceDefinitionType, id: spec.resourceType.lowercased()),
            spec: Spec(protoSpec: Array(buffer: spec.serializedBytes()))
        )
        do {
            return try await create(resource)
        } catch let error as RPCError where error.code == .alreadyExists {
            return try await get(namespace: MetaNamespace.namespace, type: MetaNamespace.resourceDefinitionType, id: resource.metadata.id)
        }
    }
}
