import CosiMessages
import CosiRPC

/// The Changes service (changes.md): several resources as one commit, dry runs, tries, confirm,
/// revert, history.
extension CosiClient {
    /// Applies `resources` as one change: each created when missing, else its spec, labels and
    /// annotations replaced; all or nothing. With `dryRun` nothing is written and the answer says
    /// what would be. With `tryFor`, cosid reverts the change when the period ends unless it is
    /// confirmed (``confirmChange(_:)``); `revertOnError` reverts it when a status of one of its
    /// resources reports an error.
    public func applyChange(_ resources: [Resource], dryRun: Bool = false, tryFor: Duration? = nil, revertOnError: Bool = false) async throws -> ApplyChangeResponse {
        let milliseconds = tryFor.map { UInt64(max(1, $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000)) } ?? 0
        return try await unary(
            "/cosi.resource.Changes/Apply",
            ApplyChangeRequest(resources: resources, dryRun: dryRun, tryMilliseconds: milliseconds, revertOnError: revertOnError),
            as: ApplyChangeResponse.self
        )
    }

    /// Confirms a change being tried: it is kept. Returns its Changes resource.
    public func confirmChange(_ id: String) async throws -> Resource {
        guard let change = try await unary("/cosi.resource.Changes/Confirm", ConfirmChangeRequest(id: id), as: ConfirmChangeResponse.self).change else {
            throw RPCError(code: .internal, message: "Confirm returned no change")
        }
        return change
    }

    /// Reverts a change being tried at once. Returns its Changes resource.
    public func revertChange(_ id: String) async throws -> Resource {
        guard let change = try await unary("/cosi.resource.Changes/Revert", RevertChangeRequest(id: id), as: RevertChangeResponse.self).change else {
            throw RPCError(code: .internal, message: "Revert returned no change")
        }
        return change
    }

    /// The versions of a resource the event log still holds, oldest first.
    public func history(namespace: String, type: String, id: String) async throws -> HistoryResponse {
        try await unary("/cosi.resource.Changes/History", HistoryRequest(namespace: namespace, type: type, id: id), as: HistoryResponse.self)
    }
}
