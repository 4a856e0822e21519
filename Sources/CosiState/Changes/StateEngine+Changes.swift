import CosiMessages
import Foundation
import Yams

/// What a change does to one resource.
public struct ResourceChangeResult: Sendable {
    public enum Action: String, Sendable { case create, update, unchanged }
    public var action: Action
    /// The resource as stored before (nil for `.create`).
    public var before: Resource?
    /// The resource as the change stores it (or would, for a dry run).
    public var after: Resource
}

/// What ``StateEngine/applyChange(_:)`` did.
public struct ChangeOutcome: Sendable {
    /// The change's id; "" for a dry run or when every resource was unchanged.
    public var id: String
    /// One per resource of the request, in its order.
    public var resources: [ResourceChangeResult]
    /// The `Changes.meta.cosi.dev` resource as stored (nil when nothing was written).
    public var change: Resource?
}

/// A change as the caller asks for it (changes.md).
public struct ChangeRequest: Sendable {
    /// The resources: namespace, type, id, labels, annotations and spec are read.
    public var resources: [Resource]
    /// The caller's certificate identity, recorded in the Change and with every event.
    public var author: String
    /// A try period: cosid reverts the change when it ends unless it is confirmed.
    public var tryMilliseconds: Int64?
    /// While the try is pending, a status reporting an error reverts the change.
    public var revertOnError: Bool

    public init(resources: [Resource], author: String, tryMilliseconds: Int64? = nil, revertOnError: Bool = false) {
        self.resources = resources
        self.author = author
        self.tryMilliseconds = tryMilliseconds
        self.revertOnError = revertOnError
    }
}

extension StateEngine {
    /// The most resources one change may hold.
    public static let maximumChangeResources = 10_000

    // MARK: Apply

    /// Validates the change exactly as ``applyChange(_:)`` does and writes nothing.
    public func dryRunChange(_ request: ChangeRequest) throws(StateError) -> ChangeOutcome {
        try checkShape(request)
        var store = shared.withLockedValue { $0.store }
        let planned = try Self.plan(request.resources, in: &store, now: now(), validate: validateSpec)
        return ChangeOutcome(id: "", resources: planned.map(\.result), change: nil)
    }

    /// Writes the change's resources and its `Changes.meta.cosi.dev` resource in one commit: all
    /// or nothing. A refusal of any resource names it (its position and address), with the code of
    /// the refusal, and nothing is written.
    public func applyChange(_ request: ChangeRequest) async throws -> ChangeOutcome {
        try checkShape(request)
        return try await write { store, now throws(StateError) in
            var trial = store
            let planned = try Self.plan(request.resources, in: &trial, now: now, validate: self.validateSpec)
            let written = planned.compactMap(\.event)
            guard let first = written.first?.revision else {
                return WriteResult(change: ChangeOutcome(id: "", resources: planned.map(\.result), change: nil))
            }
            let id = "c\(first)"
            let nowMillis = now.seconds * 1000 + Int64(now.nanos / 1_000_000)
            var record = ChangeRecord(
                phase: request.tryMilliseconds == nil ? .applied : .trying, identity: request.author,
                time: ChangeRecord.rfc3339(millis: nowMillis), revision: first,
                resources: planned.map { step in
                    ChangeRecord.Entry(
                        namespace: step.result.after.metadata.namespace, type: step.result.after.metadata.type, id: step.result.after.metadata.id,
                        action: step.result.action.rawValue, versionBefore: step.result.before?.metadata.version ?? "",
                        versionAfter: step.result.after.metadata.version
                    )
                }
            )
            if let period = request.tryMilliseconds {
                record.deadlineMillis = nowMillis + period
                record.deadline = ChangeRecord.rfc3339(millis: nowMillis + period)
                record.revertOnError = request.revertOnError
            }
            var change = Resource(metadata: Metadata(namespace: MetaNamespace.namespace, type: MetaNamespace.changesType, id: id, labels: record.labels), spec: Spec(yamlSpec: record.yaml()))
            change.metadata.version = "1"
            change.metadata.owner = MetaNamespace.changesOwner
            change.metadata.phase = Phase.running
            change.metadata.created = now
            change.metadata.updated = now
            let changeEvent = trial.apply(StateEvent(revision: 0, type: .created, resource: change, author: request.author, changeID: id))
            if let deadline = record.deadline {
                for event in written { trial.lock(event.resource.address, ChangeLock(change: id, deadline: deadline, revision: first)) }
            }
            store = trial
            return WriteResult(
                events: written.map { $0.attributed(author: request.author, changeID: id) } + [changeEvent],
                resource: change,
                change: ChangeOutcome(id: id, resources: planned.map(\.result), change: change)
            )
        }.change!
    }

    private func checkShape(_ request: ChangeRequest) throws(StateError) {
        guard !request.resources.isEmpty else { throw StateError(.invalidArgument, "a change needs at least one resource") }
        guard request.resources.count <= Self.maximumChangeResources else {
            throw StateError(.invalidArgument, "a change holds at most \(Self.maximumChangeResources) resources, this one has \(request.resources.count)")
        }
        if let period = request.tryMilliseconds, period <= 0 || period > 7 * 24 * 3_600_000 {
            throw StateError(.invalidArgument, "a try period must be between 1 ms and 7 days, not \(period) ms")
        }
        if request.revertOnError, request.tryMilliseconds == nil {
            throw StateError(.invalidArgument, "revert_on_error needs a try period")
        }
        var seen = Set<ResourceAddress>()
        for (index, resource) in request.resources.enumerated() where !seen.insert(resource.address).inserted {
            throw StateError(.invalidArgument, "resource \(index + 1) of \(request.resources.count) (\(resource.address)) appears twice in the change")
        }
    }

    private static func naming(_ error: StateError, _ index: Int, _ count: Int, _ address: ResourceAddress) -> StateError {
        StateError(error.code, "resource \(index + 1) of \(count) (\(address)): \(error.message); nothing of the change was written")
    }

    /// Applies the documents to `store`: each created when missing (with the finalizers it
    /// gives), else spec, labels and annotations replaced (owner, phase and finalizers as
    /// stored), or left when equal.
    static func plan(
        _ documents: [Resource], in store: inout ResourceStore, now: Timestamp, validate: (Resource, String) throws(StateError) -> Void
    ) throws(StateError) -> [(result: ResourceChangeResult, event: StateEvent?)] {
        var planned: [(result: ResourceChangeResult, event: StateEvent?)] = []
        planned.reserveCapacity(documents.count)
        for (index, document) in documents.enumerated() {
            do throws(StateError) {
                try store.checkWritable(document.address)
                try validate(document, "resource")
                var clean = document
                clean.metadata.owner = ""
                clean.metadata.phase = ""
                clean.metadata.version = ""
                clean.metadata.created = nil
                clean.metadata.updated = nil
                guard let current = store.get(document.address) else {
                    let event = try store.create(clean, owner: "", now: now)
                    planned.append((ResourceChangeResult(action: .create, before: nil, after: event.resource), event))
                    continue
                }
                var updated = current
                if !document.spec.yamlSpec.isEmpty || !document.spec.protoSpec.isEmpty { updated.spec = document.spec }
                updated.metadata.labels = document.metadata.labels
                updated.metadata.annotations = document.metadata.annotations
                if sameContent(updated, current) {
                    planned.append((ResourceChangeResult(action: .unchanged, before: current, after: current), nil))
                    continue
                }
                if current.metadata.phase == Phase.tearingDown {
                    let waiting = current.metadata.finalizers.isEmpty ? "" : " (waiting on finalizers: \(current.metadata.finalizers.joined(separator: ", ")))"
                    throw StateError(.tearingDown, "it is tearing down\(waiting) and cannot be updated")
                }
                let event = try store.update(updated, owner: "", expectedPhase: Phase.running, now: now)
                planned.append((ResourceChangeResult(action: .update, before: current, after: event.resource), event))
            } catch {
                throw naming(error, index, documents.count, document.address)
            }
        }
        return planned
    }

    /// Whether two resources have the same spec (YAML compared by its parse, so formatting does
    /// not count), labels and annotations.
    static func sameContent(_ a: Resource, _ b: Resource) -> Bool {
        a.metadata.labels == b.metadata.labels && a.metadata.annotations == b.metadata.annotations
            && a.spec.protoSpec == b.spec.protoSpec && sameYAML(a.spec.yamlSpec, b.spec.yamlSpec)
    }

    static func sameYAML(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        func canonical(_ text: String) -> String? {
            guard let node = try? Yams.compose(yaml: text) else { return nil }
            return try? Yams.serialize(node: node)
        }
        guard let x = canonical(a), let y = canonical(b) else { return false }
        return x == y
    }

    // MARK: Confirm and revert

    /// Ends a try and keeps the change; `author` is recorded.
    ///
    /// - Throws: `notFound` for an unknown change, `changeEnded` for one that is not being tried.
    public func confirmChange(_ id: String, author: String) async throws -> Resource {
        try await write { store, now throws(StateError) in
            var (record, current) = try Self.pendingChange(id, in: store, doing: "confirm")
            record.phase = .confirmed
            record.ended = ChangeRecord.rfc3339(millis: now.seconds * 1000 + Int64(now.nanos / 1_000_000))
            record.endedBy = author
            let event = Self.rewrite(current, record, now: now, in: &store, author: author)
            store.unlock(change: id)
            return WriteResult(events: [event], resource: event.resource)
        }.resource!
    }

    /// The Change and its record, if it is being tried.
    static func pendingChange(_ id: String, in store: ResourceStore, doing: String) throws(StateError) -> (ChangeRecord, Resource) {
        guard let current = store.get(ChangeRecord.address(id)) else {
            throw StateError(.notFound, "change \(id) does not exist (cosictl get changes lists them)")
        }
        let record = try ChangeRecord(current)
        guard record.phase == .trying else {
            throw StateError(.changeEnded, "change \(id) is \(record.phase.rawValue), not being tried: there is nothing to \(doing)")
        }
        return (record, current)
    }

    private static func rewrite(_ current: Resource, _ record: ChangeRecord, now: Timestamp, in store: inout ResourceStore, author: String) -> StateEvent {
        var updated = current
        updated.spec = Spec(yamlSpec: record.yaml())
        updated.metadata.labels = record.labels
        updated.metadata.version = String((UInt64(current.metadata.version) ?? 0) + 1)
        updated.metadata.updated = now
        return store.apply(StateEvent(revision: 0, type: .updated, resource: updated, old: current, author: author, changeID: current.metadata.id))
    }

    /// The versions a tried change goes back to: for each resource it created or updated, in the
    /// record's order, the resource before it (nil: the change created it). Read from the log,
    /// which keeps them while the try is pending (``RetentionPolicy/pinnedFrom``).
    func versionsBefore(_ record: ChangeRecord) async throws(StateError) -> [Resource?] {
        let written = record.written
        guard !written.isEmpty else { return [] }
        let events = try await read { storage throws(StateError) in
            try storage.events(after: record.revision - 1, upTo: record.revision + UInt64(written.count) - 1, kind: nil, limit: written.count)
        }
        guard events.count == written.count else {
            throw StateError(.historyLost, "the event log no longer holds the \(written.count) events of the change from revision \(record.revision) (it holds \(events.count))")
        }
        return zip(written, events).map { entry, event in entry.action == "create" ? nil : event.old }
    }

    /// Puts every resource of a tried change back as it was, as new versions, in one commit: a
    /// resource it created is destroyed, or torn down when it has finalizers (the caller
    /// destroys it once they are gone); `reason` is recorded.
    public func revertChange(_ id: String, author: String, reason: String) async throws -> Resource {
        let (record, _) = try Self.pendingChange(id, in: shared.withLockedValue { $0.store }, doing: "revert")
        let befores = try await versionsBefore(record)
        return try await write { store, now throws(StateError) in
            var trial = store
            var (record, current) = try Self.pendingChange(id, in: trial, doing: "revert")
            var events: [StateEvent] = []
            var tearing: [String] = []
            for (entry, before) in zip(record.written, befores) {
                guard let resource = trial.get(entry.address) else { continue }
                let owner = resource.metadata.owner
                if entry.action == "create" {
                    if resource.metadata.finalizers.isEmpty {
                        events.append(try trial.destroy(entry.address, owner: owner))
                    } else {
                        if let event = try trial.teardown(entry.address, owner: owner, now: now).event { events.append(event) }
                        tearing.append(entry.address.description)
                    }
                    continue
                }
                guard let before else { continue }
                var restored = resource
                restored.spec = before.spec
                restored.metadata.labels = before.metadata.labels
                restored.metadata.annotations = before.metadata.annotations
                if Self.sameContent(restored, resource) { continue }
                events.append(try trial.update(restored, owner: owner, expectedPhase: nil, now: now))
            }
            record.phase = .reverted
            record.reason = reason
            record.ended = ChangeRecord.rfc3339(millis: now.seconds * 1000 + Int64(now.nanos / 1_000_000))
            record.endedBy = author
            record.tearingDown = tearing.isEmpty ? nil : tearing
            let changeEvent = Self.rewrite(current, record, now: now, in: &trial, author: author)
            trial.unlock(change: id)
            store = trial
            current = changeEvent.resource
            return WriteResult(events: events.map { $0.attributed(author: author, changeID: id) } + [changeEvent], resource: current)
        }.resource!
    }

    /// Restores the locks of the changes being tried (at start: they are durable in their
    /// Changes resources).
    static func restoreLocks(_ store: inout ResourceStore) {
        for change in store.list(ResourceKind(namespace: MetaNamespace.namespace, type: MetaNamespace.changesType))
        where change.metadata.labels["cosi.dev/phase"] == ChangeRecord.Phase.trying.rawValue {
            guard let record = try? ChangeRecord(change), record.phase == .trying, let deadline = record.deadline else { continue }
            for entry in record.written {
                store.lock(entry.address, ChangeLock(change: change.metadata.id, deadline: deadline, revision: record.revision))
            }
        }
    }

    /// Destroys a Changes resource (the keeper's pruning).
    func dropChange(_ id: String) async throws {
        _ = try await write { store, _ throws(StateError) in
            WriteResult(events: [try store.destroy(ChangeRecord.address(id), owner: MetaNamespace.changesOwner).attributed(author: "cosid", changeID: id)])
        }
    }

    // MARK: History

    /// The versions of one resource the event log still holds (the last `limit`), oldest first,
    /// and the oldest revision the log holds.
    public func history(_ address: ResourceAddress, limit: Int = 1000) async throws(StateError) -> (entries: [LoggedEvent], oldestRevision: UInt64) {
        try validateAddress(namespace: address.kind.namespace, type: address.kind.type, id: address.id)
        return try await read { storage throws(StateError) in
            (try storage.history(kind: address.kind, id: address.id, limit: limit), storage.oldestRetainedRevision)
        }
    }
}
