import CosiMessages
import DequeModule
import NIOConcurrencyHelpers

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

    public func history(kind: ResourceKind, id: String, limit: Int) throws(StateError) -> [LoggedEvent] {
        log.withLockedValue { log in
            var found: [LoggedEvent] = []
            for entry in log.entries.reversed() where entry.event.kind == kind && entry.event.id == id {
                found.append(LoggedEvent(event: entry.event, time: entry.time))
                if found.count == limit { break }
            }
            return found.reversed()
        }
    }

    public func compact(policy: RetentionPolicy, now: Int64, limit: Int) throws(StateError) {
        log.withLockedValue { log in
            var removed = 0
            while removed < limit, log.entries.count > policy.minimumEvents, let first = log.entries.first {
                if let pinned = policy.pinnedFrom, first.event.revision >= pinned { break }
                if let age = policy.maximumAgeSeconds, now - first.time < age { break }
                log.entries.removeFirst()
                removed += 1
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
