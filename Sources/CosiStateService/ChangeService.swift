import CosiMessages
import CosiRPC
import CosiState

/// The Changes service (`/cosi.resource.Changes/*`, changes.md) on top of a ``ChangeKeeper``:
/// several resources as one commit, dry runs, tries, confirm, revert and history. Requests are
/// decoded here and engine errors become status codes through ``StateService/rpcError(_:)``.
public enum ChangeService {
    public static let apply = "/cosi.resource.Changes/Apply"
    public static let confirm = "/cosi.resource.Changes/Confirm"
    public static let revert = "/cosi.resource.Changes/Revert"
    public static let history = "/cosi.resource.Changes/History"

    /// Every method, ready to register on an RPC server (behind the access policy).
    public static func methods(keeper: ChangeKeeper) -> [RPCMethod] {
        let engine = keeper.engine
        return [
            .unary(apply, ApplyChangeRequest.self, ApplyChangeResponse.self) { request, context in
                let change = ChangeRequest(
                    resources: request.resources, author: context.peer.commonName,
                    tryMilliseconds: request.tryMilliseconds == 0 ? nil : Int64(clamping: request.tryMilliseconds),
                    revertOnError: request.revertOnError
                )
                let outcome = try await mapped {
                    request.dryRun ? try engine.dryRunChange(change) : try await keeper.apply(change)
                }
                return ApplyChangeResponse(
                    id: outcome.id,
                    resources: outcome.resources.map { ResourceChange(action: $0.action.rawValue, before: $0.before, after: $0.after) },
                    change: outcome.change
                )
            },
            .unary(confirm, ConfirmChangeRequest.self, ConfirmChangeResponse.self) { request, context in
                ConfirmChangeResponse(change: try await mapped { try await keeper.confirm(request.id, author: context.peer.commonName) })
            },
            .unary(revert, RevertChangeRequest.self, RevertChangeResponse.self) { request, context in
                RevertChangeResponse(change: try await mapped { try await keeper.revert(request.id, author: context.peer.commonName) })
            },
            .unary(history, HistoryRequest.self, HistoryResponse.self) { request, _ in
                let (entries, oldest) = try await mapped {
                    try await engine.history(ResourceAddress(namespace: request.namespace, type: request.type, id: request.id))
                }
                return HistoryResponse(entries: entries.map(entry), oldestRevision: oldest)
            },
        ]
    }

    /// A logged event as a history entry: "teardown" is the update that started the teardown.
    static func entry(_ logged: LoggedEvent) -> HistoryEntry {
        let event = logged.event
        let name: String = switch event.type {
        case .created: "created"
        case .destroyed: "destroyed"
        default: event.resource.metadata.phase == Phase.tearingDown && event.old?.metadata.phase != Phase.tearingDown ? "teardown" : "updated"
        }
        return HistoryEntry(
            revision: event.revision, event: name, time: logged.time.map { Timestamp(seconds: $0, nanos: 0) },
            identity: event.author, changeID: event.changeID, resource: event.resource
        )
    }

    private static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as StateError { throw StateService.rpcError(error) }
    }
}
