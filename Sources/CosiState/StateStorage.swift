import CosiMessages
import DequeModule
import NIOConcurrencyHelpers

/// How much of the event log to keep.
public struct RetentionPolicy: Hashable, Sendable {
    /// Keep at least this many of the most recent events.
    public var minimumEvents: Int
    /// Keep every event younger than this many seconds, when set.
    public var maximumAgeSeconds: Int64?

    public init(minimumEvents: Int = 100_000, maximumAgeSeconds: Int64? = nil) {
        self.minimumEvents = minimumEvents
        self.maximumAgeSeconds = maximumAgeSeconds
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
    /// Drops events the retention policy no longer keeps, the oldest first, at most `limit`.
    func compact(policy: RetentionPolicy, now: Int64, limit: Int) throws(StateError)
}

/// Keeps the event log in memory: for `--in-memory` and tests.
public final class MemoryStorage: StateStorage {
    private struct Entry {
        var event: StateEvent
        var time: Int64
    }

    private let log = NIOLockedValueBox((entries: Deque<Entry>(), last: UInt64(0)))

    public init() {}

    /// Reads are lookups in memory.
    public var readsBlock: Bool { false }

    public func load() throws(StateError) -> (resources: [Resource], revision: UInt64) {
        ([], 0)
    }

    public func commit(_ events: [StateEvent]) throws(StateError) {
        let now = wallClockSeconds()
        log.withLockedValue { log in
            for event in events {
                log.entries.append(Entry(event: event, time: now))
                log.last = event.revision
            }
        }
    }

    public func events(after: UInt64, upTo: UInt64, kind: ResourceKind?, limit: Int) throws(StateError) -> [StateEvent] {
        log.withLockedValue { log in
            guard let first = log.entries.first?.event.revision else { return [] }
            var index = after >= first ? Int(after - first + 1) : 0
            var result: [StateEvent] = []
            while index < log.entries.count, result.count < limit {
                let event = log.entries[index].event
                if event.revision > upTo { break }
                if kind == nil || event.kind == kind { result.append(event) }
                index += 1
            }
            return result
        }
    }

    public func tailStart(kind: ResourceKind, id: String?, count: Int, upTo: UInt64) throws(StateError) -> UInt64? {
        log.withLockedValue { log in
            var found = 0
            var start: UInt64?
            for entry in log.entries.reversed() where entry.event.revision <= upTo {
                guard entry.event.kind == kind, id == nil || entry.event.resource.metadata.id == id else { continue }
                found += 1
                start = entry.event.revision
                if found == count { break }
            }
            return start
        }
    }

    public var oldestRetainedRevision: UInt64 {
        log.withLockedValue { $0.entries.first?.event.revision ?? ($0.last + 1) }
    }

    public func compact(policy: RetentionPolicy, now: Int64, limit: Int) throws(StateError) {
        log.withLockedValue { log in
            var removed = 0
            while removed < limit, log.entries.count > policy.minimumEvents, let first = log.entries.first {
                if let age = policy.maximumAgeSeconds, now - first.time < age { break }
                log.entries.removeFirst()
                removed += 1
            }
        }
    }
}

/// Seconds since the Unix epoch.
func wallClockSeconds() -> Int64 {
    now().seconds
}

/// The current time as a protobuf timestamp.
func now() -> Timestamp {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Timestamp(seconds: Int64(spec.tv_sec), nanos: Int32(spec.tv_nsec))
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
