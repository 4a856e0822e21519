import CSQLite
import CosiMessages
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How often SQLite makes commits durable.
public enum SyncMode: String, Sendable, CaseIterable, Codable {
    /// fsync on every commit group: survives power loss.
    case full
    /// fsync at WAL checkpoints: survives a crash of the process, not of the machine.
    case normal
}

/// Resources and the event log in SQLite (WAL mode), in `<directory>/state.db`.
///
/// The committer thread writes through its own connection; log reads for catching-up watchers
/// go through a second connection, so they run concurrently with commits.
public final class SQLiteStorage: StateStorage, @unchecked Sendable {
    // @unchecked Sendable: `writer` is used only by the engine's single committer thread (and by
    // `init`/`load` before it starts); `reader` only under `readerLock`.
    /// 2: events carry their author and change id (a version 1 database gains the columns,
    /// empty for its old events, and the index by resource).
    public static let schemaVersion: Int64 = 2

    private let writer: SQLiteConnection
    private let reader: SQLiteConnection
    private let readerLock = NIOLock()
    private let oldest = NIOLockedValueBox<UInt64>(1)
    private var lastRevision: UInt64 = 0
    public let path: String
    /// Log reads are SQLite queries on disk.
    public var readsBlock: Bool { true }

    private let insertEvent: SQLiteStatement
    private let upsertResource: SQLiteStatement
    private let deleteResource: SQLiteStatement
    private let setRevision: SQLiteStatement
    private let compactStatement: SQLiteStatement

    /// Opens (or creates) the database under `directory`.
    ///
    /// - Throws: `.storageFailure` when the directory or database cannot be opened, when the
    ///   database was written by a newer schema, or when it is corrupt (it is never reset).
    public init(directory: String, sync: SyncMode = .full) throws(StateError) {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw StateError(.storageFailure, "cannot create the data directory \(directory): \(String(cString: strerror(errno)))")
        }
        // The database and its journal are written next to each other: a directory (or file
        // system) that cannot be written is said so, before SQLite reports it as something else.
        if access(directory, W_OK) != 0 {
            throw StateError(.storageFailure, "the data directory \(directory) is not writable (\(String(cString: strerror(errno)))): cosid writes its database there")
        }
        path = directory + "/state.db"
        if access(path, F_OK) == 0, access(path, W_OK) != 0 {
            throw StateError(.storageFailure, "the database \(path) is not writable (\(String(cString: strerror(errno)))); it was left as it is")
        }
        writer = try SQLiteConnection(path: path)
        do {
            try Self.check(writer)
        } catch {
            throw StateError(.storageFailure, "the database \(path) is unusable and was left as it is: \(error.message)")
        }
        try writer.execute("PRAGMA journal_mode=WAL")
        try writer.execute("PRAGMA synchronous=\(sync == .full ? "FULL" : "NORMAL")")
        // A page cache big enough for the resource table's working set. (A larger
        // wal_autocheckpoint gained ~5% throughput but doubled p99 latency: left at the default.)
        try writer.execute("PRAGMA cache_size=-65536")
        try writer.execute("""
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS resources(
                namespace TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL,
                PRIMARY KEY(namespace, type, id)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS events(
                revision INTEGER PRIMARY KEY, namespace TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
                event_type INTEGER NOT NULL, resource BLOB NOT NULL, old BLOB, time INTEGER NOT NULL,
                author TEXT NOT NULL DEFAULT '', change_id TEXT NOT NULL DEFAULT '');
            CREATE INDEX IF NOT EXISTS events_by_kind ON events(namespace, type, revision);
            INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', \(Self.schemaVersion));
            INSERT OR IGNORE INTO meta(key, value) VALUES ('revision', 0);
            """)
        try Self.migrate(writer)
        reader = try SQLiteConnection(path: path)
        insertEvent = try writer.prepare("INSERT INTO events(revision, namespace, type, id, event_type, resource, old, time, author, change_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        upsertResource = try writer.prepare("INSERT OR REPLACE INTO resources(namespace, type, id, data) VALUES (?, ?, ?, ?)")
        deleteResource = try writer.prepare("DELETE FROM resources WHERE namespace = ? AND type = ? AND id = ?")
        setRevision = try writer.prepare("UPDATE meta SET value = ? WHERE key = 'revision'")
        compactStatement = try writer.prepare(
            "DELETE FROM events WHERE revision IN (SELECT revision FROM events WHERE revision < ? AND time < ? ORDER BY revision LIMIT ?)"
        )
    }

    /// Brings a version 1 database to version 2: the author and change id columns, the index by
    /// resource (history reads).
    private static func migrate(_ db: SQLiteConnection) throws(StateError) {
        var columns: [String] = []
        try db.prepare("PRAGMA table_info(events)").run([]) { row in columns.append(row.text(1)) }
        try db.execute("BEGIN IMMEDIATE")
        do {
            if !columns.contains("author") {
                try db.execute("ALTER TABLE events ADD COLUMN author TEXT NOT NULL DEFAULT ''")
            }
            if !columns.contains("change_id") {
                try db.execute("ALTER TABLE events ADD COLUMN change_id TEXT NOT NULL DEFAULT ''")
            }
            try db.execute("CREATE INDEX IF NOT EXISTS events_by_id ON events(namespace, type, id, revision)")
            try db.execute("UPDATE meta SET value = \(schemaVersion) WHERE key = 'schema_version' AND value < \(schemaVersion)")
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
    }

    /// Refuses a database from a newer schema or one that fails SQLite's integrity check.
    private static func check(_ db: SQLiteConnection) throws(StateError) {
        var verdict: [String] = []
        try db.prepare("PRAGMA quick_check").run([]) { row in verdict.append(row.text(0)) }
        guard verdict == ["ok"] else {
            throw StateError(.storageFailure, "the integrity check failed (\(verdict.prefix(3).joined(separator: "; "))): restore it from a backup or move it away")
        }
        var hasMeta = false
        try db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'").run([]) { hasMeta = $0.int(0) > 0 }
        guard hasMeta else { return }
        var version: Int64 = 0
        try db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").run([]) { version = $0.int(0) }
        guard version <= schemaVersion else {
            throw StateError(.storageFailure, "it was written by a newer cosid (schema \(version); this one reads up to \(schemaVersion))")
        }
    }

    public func load() throws(StateError) -> (resources: [Resource], revision: UInt64) {
        var resources: [Resource] = []
        var failure: StateError?
        try writer.prepare("SELECT namespace, type, id, data FROM resources").run([]) { row in
            do {
                resources.append(try Resource(serializedBytes: row.blob(3)))
            } catch {
                failure = StateError(.storageFailure, "\(path): the stored resource \(row.text(0))/\(row.text(1))/\(row.text(2)) does not decode")
            }
        }
        if let failure { throw failure }
        var revision: Int64 = 0
        try writer.prepare("SELECT value FROM meta WHERE key = 'revision'").run([]) { revision = $0.int(0) }
        lastRevision = UInt64(revision)
        try refreshOldest()
        return (resources, UInt64(revision))
    }

    public func commit(_ events: [StateEvent]) throws(StateError) {
        guard let last = events.last else { return }
        try writer.execute("BEGIN IMMEDIATE")
        do {
            let time = wallClockSeconds()
            for event in events {
                let resource = event.resource
                let m = resource.metadata
                let data = Array(buffer: resource.serializedBytes())
                try insertEvent.run([
                    .int(Int64(event.revision)), .text(m.namespace), .text(m.type), .text(m.id),
                    .int(Int64(event.type.rawValue)), .blob(data),
                    event.old.map { .blob(Array(buffer: $0.serializedBytes())) } ?? .null, .int(time),
                    .text(event.author), .text(event.changeID),
                ])
                if event.type == .destroyed {
                    try deleteResource.run([.text(m.namespace), .text(m.type), .text(m.id)])
                } else {
                    try upsertResource.run([.text(m.namespace), .text(m.type), .text(m.id), .blob(data)])
                }
            }
            try setRevision.run([.int(Int64(last.revision))])
            try writer.execute("COMMIT")
        } catch {
            try? writer.execute("ROLLBACK")
            throw error
        }
        if lastRevision == 0 || oldest.withLockedValue({ $0 }) > lastRevision {
            // The log was empty: its oldest entry is the first of this batch.
            oldest.withLockedValue { $0 = events[0].revision }
        }
        lastRevision = last.revision
    }

    public func events(after: UInt64, upTo: UInt64, kind: ResourceKind?, limit: Int) throws(StateError) -> [StateEvent] {
        readerLock.lock()
        defer { readerLock.unlock() }
        do {
            var events: [StateEvent] = []
            var failure: StateError?
            let read = { (row: SQLiteStatement.Row) in
                do {
                    events.append(StateEvent(
                        revision: UInt64(row.int(0)), type: EventType(rawValue: Int32(row.int(1))),
                        resource: try Resource(serializedBytes: row.blob(2)),
                        old: row.isNull(3) ? nil : try Resource(serializedBytes: row.blob(3))
                    ))
                } catch {
                    failure = StateError(.storageFailure, "\(self.path): event \(row.int(0)) does not decode")
                }
            }
            if let kind {
                try readStatement("SELECT revision, event_type, resource, old FROM events WHERE namespace = ? AND type = ? AND revision > ? AND revision <= ? ORDER BY revision LIMIT ?")
                    .run([.text(kind.namespace), .text(kind.type), .int(Int64(after)), .int(Int64(upTo)), .int(Int64(limit))], read)
            } else {
                try readStatement("SELECT revision, event_type, resource, old FROM events WHERE revision > ? AND revision <= ? ORDER BY revision LIMIT ?")
                    .run([.int(Int64(after)), .int(Int64(upTo)), .int(Int64(limit))], read)
            }
            if let failure { throw failure }
            return events
        }
    }

    public func tailStart(kind: ResourceKind, id: String?, count: Int, upTo: UInt64) throws(StateError) -> UInt64? {
        readerLock.lock()
        defer { readerLock.unlock() }
        do {
            var start: Int64?
            if let id {
                try readStatement("SELECT min(revision) FROM (SELECT revision FROM events WHERE namespace = ? AND type = ? AND id = ? AND revision <= ? ORDER BY revision DESC LIMIT ?)")
                    .run([.text(kind.namespace), .text(kind.type), .text(id), .int(Int64(upTo)), .int(Int64(count))]) { row in
                        if !row.isNull(0) { start = row.int(0) }
                    }
            } else {
                try readStatement("SELECT min(revision) FROM (SELECT revision FROM events WHERE namespace = ? AND type = ? AND revision <= ? ORDER BY revision DESC LIMIT ?)")
                    .run([.text(kind.namespace), .text(kind.type), .int(Int64(upTo)), .int(Int64(count))]) { row in
                        if !row.isNull(0) { start = row.int(0) }
                    }
            }
            return start.map(UInt64.init)
        }
    }

    public var oldestRetainedRevision: UInt64 { oldest.withLockedValue { $0 } }

    public func compact(policy: RetentionPolicy, now: Int64, limit: Int) throws(StateError) {
        guard lastRevision > UInt64(policy.minimumEvents) else { return }
        var keepFrom = Int64(lastRevision) - Int64(policy.minimumEvents) + 1
        if let pinned = policy.pinnedFrom { keepFrom = min(keepFrom, Int64(pinned)) }
        let cutoff = policy.maximumAgeSeconds.map { now - $0 } ?? Int64.max
        try compactStatement.run([.int(keepFrom), .int(cutoff), .int(Int64(limit))])
        try refreshOldest()
    }


    public func history(kind: ResourceKind, id: String, limit: Int) throws(StateError) -> [LoggedEvent] {
        readerLock.lock()
        defer { readerLock.unlock() }
        var entries: [LoggedEvent] = []
        var failure: StateError?
        try readStatement("SELECT revision, event_type, resource, old, time, author, change_id FROM events WHERE namespace = ? AND type = ? AND id = ? ORDER BY revision DESC LIMIT ?")
            .run([.text(kind.namespace), .text(kind.type), .text(id), .int(Int64(limit))]) { row in
                do {
                    let event = StateEvent(
                        revision: UInt64(row.int(0)), type: EventType(rawValue: Int32(row.int(1))),
                        resource: try Resource(serializedBytes: row.blob(2)),
                        old: row.isNull(3) ? nil : try Resource(serializedBytes: row.blob(3)),
                        author: row.text(5), changeID: row.text(6)
                    )
                    entries.append(LoggedEvent(event: event, time: row.int(4)))
                } catch {
                    failure = StateError(.storageFailure, "\(self.path): event \(row.int(0)) does not decode")
                }
            }
        if let failure { throw failure }
        return entries.reversed()
    }

    private func refreshOldest() throws(StateError) {
        var minimum: Int64?
        try writer.prepare("SELECT min(revision) FROM events").run([]) { row in
            if !row.isNull(0) { minimum = row.int(0) }
        }
        let value = minimum.map(UInt64.init) ?? (lastRevision + 1)
        oldest.withLockedValue { $0 = value }
    }

    private var readStatements: [String: SQLiteStatement] = [:]

    /// A cached statement on the reader connection (call under `readerLock`).
    private func readStatement(_ sql: String) throws(StateError) -> SQLiteStatement {
        if let statement = readStatements[sql] { return statement }
        let statement = try reader.prepare(sql)
        readStatements[sql] = statement
        return statement
    }
}
