import CosiMessages
import HashTreeCollections

/// One change of the state: what the event log records and watchers receive.
///
/// A copy is a reference and a revision: an event is queued for every watcher of its kind, so
/// the change itself (two resources) is kept once, in a shared box.
public struct StateEvent: Sendable {
    /// The position in the event log (1, 2, 3, ...).
    public var revision: UInt64
    private let change: Change

    private final class Change: Sendable {
        let type: EventType
        let resource: Resource
        let old: Resource?
        let kind: ResourceKind
        let author: String
        let changeID: String
        let encodings = EncodingCache(forms: StateEvent.forms)

        init(type: EventType, resource: Resource, old: Resource?, author: String, changeID: String) {
            self.type = type
            self.resource = resource
            self.old = old
            self.kind = resource.address.kind
            self.author = author
            self.changeID = changeID
        }
    }

    /// How many delivery forms an event has: as is, as CREATED, as DESTROYED (a label query's
    /// match flips), each as an `Event` and as a one-event `WatchResponse`.
    static let forms = 6

    /// - Parameters:
    ///   - author: who wrote it (a caller's certificate identity, a controller's name, `cosid`).
    ///   - changeID: the change it belongs to (changes.md), "" for a single write.
    public init(revision: UInt64, type: EventType, resource: Resource, old: Resource? = nil, author: String = "", changeID: String = "") {
        self.revision = revision
        self.change = Change(type: type, resource: resource, old: old, author: author, changeID: changeID)
    }

    /// The same event attributed to `author` and `changeID` (made before it is committed).
    func attributed(author: String, changeID: String = "") -> StateEvent {
        StateEvent(revision: revision, type: type, resource: resource, old: old, author: author, changeID: changeID)
    }

    /// `.created`, `.updated` or `.destroyed`.
    public var type: EventType { change.type }
    /// The resource after the change; for `.destroyed`, the last stored resource.
    public var resource: Resource { change.resource }
    /// For `.updated`, the resource before the change.
    public var old: Resource? { change.old }
    /// Who wrote it: a caller's certificate identity, a controller's name, or `cosid`.
    public var author: String { change.author }
    /// The change it belongs to; "" for a single write.
    public var changeID: String { change.changeID }

    /// Encodings of this change as watchers receive it, made once and shared by every watcher:
    /// slots 0-2 the `Event` as is, as CREATED, as DESTROYED; slots 3-5 the same as one-event
    /// `WatchResponse`s.
    public var encodings: EncodingCache { change.encodings }

    public var kind: ResourceKind { change.kind }

    /// The changed resource's id (without copying the resource out).
    public var id: String { change.resource.metadata.id }
}

/// The current resources, as a value.
///
/// Persistent hash trees make a copy O(1), so readers take a snapshot while the writer works
/// on the next version. Get is a lookup by kind then id; List walks one kind only.
public struct ResourceStore: Sendable {
    /// A stored resource behind one reference: tree nodes are copied on write, and copying a
    /// pointer is far cheaper than copying a Resource's many strings and maps.
    final class Box: Sendable {
        let resource: Resource
        init(_ resource: Resource) { self.resource = resource }
    }

    private var kinds: TreeDictionary<ResourceKind, TreeDictionary<String, Box>> = [:]
    /// The resources of changes being tried: writes other than the change's own (and finalizer
    /// changes) are refused until it is confirmed or reverted.
    public private(set) var locks: TreeDictionary<ResourceAddress, ChangeLock> = [:]
    /// The revision of the last change applied.
    public private(set) var revision: UInt64 = 0
    /// How many resources there are.
    public private(set) var count = 0

    public init() {}

    /// Rebuilds a store from persisted resources.
    public init(resources: [Resource], revision: UInt64) {
        for resource in resources { put(resource) }
        self.revision = revision
    }

    public func get(_ address: ResourceAddress) -> Resource? {
        kinds[address.kind]?[address.id]?.resource
    }

    /// The resources of a kind, sorted by id (byte-wise).
    public func list(_ kind: ResourceKind) -> [Resource] {
        guard let resources = kinds[kind] else { return [] }
        return resources.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }.map(\.value.resource)
    }

    /// Every kind that has resources.
    public var allKinds: [ResourceKind] { Array(kinds.keys) }

    private mutating func put(_ resource: Resource) {
        let address = resource.address
        if kinds[address.kind, default: [:]].updateValue(Box(resource), forKey: address.id) == nil { count += 1 }
    }

    private mutating func remove(_ address: ResourceAddress) {
        guard kinds[address.kind]?.removeValue(forKey: address.id) != nil else { return }
        count -= 1
        if kinds[address.kind]?.isEmpty == true { kinds[address.kind] = nil }
    }

    // MARK: Change locks

    /// Refuses a write to a resource of a change being tried, and any write of a Changes
    /// resource (cosid writes them).
    public func checkWritable(_ address: ResourceAddress) throws(StateError) {
        if let lock = locks[address] {
            throw StateError(.changePending, "resource \(address) is part of change \(lock.change), being tried until \(lock.deadline): it cannot be written until the change is confirmed or reverted (cosictl confirm \(lock.change), cosictl revert \(lock.change))")
        }
        if address.kind.namespace == MetaNamespace.namespace, address.kind.type == MetaNamespace.changesType {
            throw StateError(.ownerMismatch, "\(MetaNamespace.changesType) resources are written by cosid only: make a change (cosictl apply) to write resources")
        }
    }

    mutating func lock(_ address: ResourceAddress, _ lock: ChangeLock) { locks[address] = lock }

    mutating func unlock(change: String) {
        for (address, lock) in locks where lock.change == change { locks[address] = nil }
    }

    /// The oldest revision a pending try needs from the log.
    var pinnedRevision: UInt64? { locks.values.map(\.revision).min() }

    // MARK: Operations. Each validates in the order state.md gives, then applies and returns the event.

    /// The checks of a written resource's metadata: address, limits, a phase a writer may give.
    private func validateWritten(_ m: Metadata, field: String) throws(StateError) {
        try validateAddress(namespace: m.namespace, type: m.type, id: m.id, field: field)
        try ResourceLimits.check(m, field: field)
        guard m.phase.isEmpty || m.phase == Phase.running || m.phase == Phase.tearingDown else {
            throw StateError(.invalidArgument, "\(field).phase must be \"running\" or \"tearingDown\", not \"\(m.phase)\"")
        }
    }

    /// Create: version "1", owner from `owner`, created = updated = now, phase running.
    public mutating func create(_ request: Resource, owner: String, now: Timestamp) throws(StateError) -> StateEvent {
        guard request.hasMetadata else { throw StateError(.invalidArgument, "resource.metadata is missing") }
        guard request.hasSpec else { throw StateError(.invalidArgument, "resource.spec is missing") }
        let m = request.metadata
        try validateWritten(m, field: "resource.metadata")
        guard get(request.address) == nil else {
            throw StateError(.alreadyExists, "resource \(request.address) already exists")
        }
        var stored = try MetaNamespace.prepare(request, field: "resource")
        stored.metadata.version = "1"
        stored.metadata.owner = owner
        stored.metadata.phase = m.phase.isEmpty ? Phase.running : m.phase
        stored.metadata.created = now
        stored.metadata.updated = now
        stored.metadata.finalizers = deduplicated(m.finalizers)
        return apply(StateEvent(revision: 0, type: .created, resource: stored))
    }

    /// Update: the request must carry the stored version; stores version+1.
    public mutating func update(_ request: Resource, owner: String, expectedPhase: String?, now: Timestamp) throws(StateError) -> StateEvent {
        guard request.hasMetadata else { throw StateError(.invalidArgument, "new_resource.metadata is missing") }
        let m = request.metadata
        try validateWritten(m, field: "new_resource.metadata")
        guard let current = get(request.address) else {
            throw StateError(.notFound, "resource \(request.address) does not exist")
        }
        guard current.metadata.owner == owner else {
            throw StateError(.ownerMismatch, ownerMessage(current, owner))
        }
        guard current.metadata.version == m.version else {
            throw StateError(.versionConflict, "resource \(request.address) is at version \(current.metadata.version), the update carries version \(m.version.isEmpty ? "(none)" : m.version)")
        }
        if let expectedPhase, current.metadata.phase != expectedPhase {
            throw StateError(.phaseConflict, "resource \(request.address) is in phase \(current.metadata.phase), the update expects \(expectedPhase)")
        }
        var stored = try MetaNamespace.prepare(request, field: "new_resource")
        stored.metadata.version = String((UInt64(current.metadata.version) ?? 0) + 1)
        stored.metadata.owner = current.metadata.owner
        stored.metadata.phase = m.phase.isEmpty ? current.metadata.phase : m.phase
        stored.metadata.created = current.metadata.created
        stored.metadata.updated = now
        stored.metadata.finalizers = deduplicated(m.finalizers)
        if !request.hasSpec { stored.spec = current.spec }
        return apply(StateEvent(revision: 0, type: .updated, resource: stored, old: current))
    }

    /// Destroy: removes the resource in either phase, once it has no finalizers.
    public mutating func destroy(_ address: ResourceAddress, owner: String) throws(StateError) -> StateEvent {
        try validateAddress(namespace: address.kind.namespace, type: address.kind.type, id: address.id)
        guard let current = get(address) else {
            throw StateError(.notFound, "resource \(address) does not exist")
        }
        guard current.metadata.owner == owner else {
            throw StateError(.ownerMismatch, ownerMessage(current, owner))
        }
        guard current.metadata.finalizers.isEmpty else {
            throw StateError(.finalizersPending, "resource \(address) has finalizers pending: \(current.metadata.finalizers.joined(separator: ", "))")
        }
        return apply(StateEvent(revision: 0, type: .destroyed, resource: current))
    }

    /// Teardown: phase tearingDown (an update only the first time). Returns whether the resource
    /// is ready to destroy (no finalizers) and the event, if the phase changed.
    public mutating func teardown(_ address: ResourceAddress, owner: String, now: Timestamp) throws(StateError) -> (ready: Bool, event: StateEvent?) {
        try validateAddress(namespace: address.kind.namespace, type: address.kind.type, id: address.id)
        guard let current = get(address) else {
            throw StateError(.notFound, "resource \(address) does not exist")
        }
        let ready = current.metadata.finalizers.isEmpty
        guard current.metadata.phase != Phase.tearingDown else { return (ready, nil) }
        guard current.metadata.owner == owner else {
            throw StateError(.ownerMismatch, ownerMessage(current, owner))
        }
        var stored = current
        stored.metadata.phase = Phase.tearingDown
        stored.metadata.version = String((UInt64(current.metadata.version) ?? 0) + 1)
        stored.metadata.updated = now
        return (ready, apply(StateEvent(revision: 0, type: .updated, resource: stored, old: current)))
    }

    /// Adds or removes finalizers, whoever owns the resource (controllers put finalizers on their
    /// inputs). Returns nil when nothing changes. Adding a finalizer the resource does not have
    /// yet to a resource that is tearing down is a phase conflict: it could block its
    /// destruction for ever.
    public mutating func changeFinalizers(_ address: ResourceAddress, add: [String], remove: [String], now: Timestamp) throws(StateError) -> StateEvent? {
        try validateAddress(namespace: address.kind.namespace, type: address.kind.type, id: address.id)
        guard let current = get(address) else {
            throw StateError(.notFound, "resource \(address) does not exist")
        }
        var finalizers = current.metadata.finalizers.filter { !remove.contains($0) }
        let added = deduplicated(add).filter { !finalizers.contains($0) }
        if !added.isEmpty, current.metadata.phase == Phase.tearingDown {
            throw StateError(.tearingDown, "resource \(address) is tearing down: no finalizer can be added")
        }
        finalizers += added
        guard finalizers != current.metadata.finalizers else { return nil }
        var stored = current
        stored.metadata.finalizers = finalizers
        try ResourceLimits.check(stored.metadata, field: "finalizers")
        stored.metadata.version = String((UInt64(current.metadata.version) ?? 0) + 1)
        stored.metadata.updated = now
        return apply(StateEvent(revision: 0, type: .updated, resource: stored, old: current))
    }

    /// Applies an event (from an operation above, or replayed from the log) and assigns the next
    /// revision to it.
    @discardableResult
    public mutating func apply(_ event: StateEvent) -> StateEvent {
        var event = event
        revision += 1
        event.revision = revision
        if event.type == .destroyed {
            remove(event.resource.address)
        } else {
            put(event.resource)
        }
        return event
    }

    private func ownerMessage(_ resource: Resource, _ owner: String) -> String {
        let given = owner.isEmpty ? "no owner" : "owner \"\(owner)\""
        guard !resource.metadata.owner.isEmpty else {
            return "resource \(resource.address) has no owner; the request gave \(given)"
        }
        // access.md: controller outputs belong to their controller.
        return "resource \(resource.address) is owned by controller \(resource.metadata.owner) (the request gave \(given)): only its controller writes it"
    }
}

/// A resource held by a change being tried.
public struct ChangeLock: Hashable, Sendable {
    /// The change's id.
    public var change: String
    /// When the try ends, as the Change says it (RFC 3339).
    public var deadline: String
    /// The revision of the change's first event (its revert reads the log from there).
    public var revision: UInt64
}

private func deduplicated(_ values: [String]) -> [String] {
    var seen = Set<String>()
    return values.filter { seen.insert($0).inserted }
}
