import CosiMessages
import DequeModule
import NIOConcurrencyHelpers

/// How much of the event log to keep.
public struct RetentionPolicy: Hashable, Sendable {
    /// Keep at least this many of the most recent events.
    public var minimumEvents: Int
    /// Keep every event younger than this many seconds, when set.
    public var maximumAgeSeconds: Int64?

    /// Events from this revision on are kept whatever the rest says: the engine sets it while a
    /// tried change is pending (its revert reads the versions to go back to from the log).
    public var pinnedFrom: UInt64?

    public init(minimumEvents: Int = 100_000, maximumAgeSeconds: Int64? = nil) {
        self.minimumEvents = minimumEvents
        self.maximumAgeSeconds = maximumAgeSeconds
    }
}

/// An event as the log holds it, with when it was committed.
public struct LoggedEvent: Sendable {
    public var event: StateEvent
    /// Seconds since 1970 (the commit's wall-clock time); nil when the storage does not keep it.
    public var time: Int64?

    public init(event: StateEvent, time: Int64?) {
        self.event = event
        self.time = time
    }
}

/// Where the resources and the event log live. The engine calls `commit` from one writer thread
/// at a time, with events in revision order; reads may come from any thread. When
/// `readsBlock` is true, the engine makes its log reads (`events`, `tailStart`) on its reader
/// thread, never on the cooperative pool.
public protocol StateStorage: Sendable {
    /// Whether `events` and `tailStart` do blocking I/O.
    var readsBlock: Bool { get }
    /// Everything needed to rebuild the state at start.
    func load() throws(StateError) -> (resources: [Resource], revision: UInt64)
    /// Durably records a batch of events and the resulting resources, all or nothing.
    func commit(_ events: [StateEvent]) throws(StateError)
    /// Events with revision in `(after, upTo]`, of `kind` (all kinds when nil), oldest first, at
    /// most `limit`.
    func events(after: UInt64, upTo: UInt64, kind: ResourceKind?, limit: Int) throws(StateError) -> [StateEvent]
    /// The revision of the last `count` events of a kind (or of one resource, when `id` is set)
    /// with revision <= `upTo`: the oldest of them, or nil when there are none.
    func tailStart(kind: ResourceKind, id: String?, count: Int, upTo: UInt64) throws(StateError) -> UInt64?
    /// The oldest revision still in the log (revision + 1 when it is empty).
    var oldestRetainedRevision: UInt64 { get }
    /// Drops events the retention policy no longer keeps, the oldest first, at most `limit`
    /// (never one at or after `policy.pinnedFrom`).
    func compact(policy: RetentionPolicy, now: Int64, limit: Int) throws(StateError)
    /// The events of one resource still held, oldest first, with their authors and change ids:
    /// the last `limit` of them.
    func history(kind: ResourceKind, id: String, limit: Int) throws(StateError) -> [LoggedEvent]
}

extension StateStorage {
    /// A scan of the log (storages without an index by resource).
    public func history(kind: ResourceKind, id: String, limit: Int) throws(StateError) -> [LoggedEvent] {
        let all = try events(after: 0, upTo: .max, kind: kind, limit: .max).filter { $0.id == id }
        return all.suffix(limit).map { LoggedEvent(event: $0, time: nil) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
