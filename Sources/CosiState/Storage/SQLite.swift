import CSQLite

/// An open SQLite connection (owns the `sqlite3` handle). Not thread-safe: each user holds its
/// own connection or serialises access.
final class SQLiteConnection {
    let handle: OpaquePointer
    let path: String

    init(path: String) throws(StateError) {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "code \(rc)"
            sqlite3_close(db)
            throw StateError(.storageFailure, "cannot open the database \(path): \(message)")
        }
        self.handle = db
        self.path = path
        sqlite3_busy_timeout(db, 5000)
    }

    deinit { sqlite3_close(handle) }

    /// Runs statements that return no rows.
    func execute(_ sql: String) throws(StateError) {
        var error: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &error)
        if rc != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? "code \(rc)"
            sqlite3_free(error)
            throw StateError(Self.code(of: rc), "\(path): \(message) (in: \(sql.prefix(60)))")
        }
    }

    func prepare(_ sql: String) throws(StateError) -> SQLiteStatement {
        try SQLiteStatement(connection: self, sql: sql)
    }

    func failure(_ what: String) -> StateError {
        StateError(Self.code(of: sqlite3_errcode(handle)), "\(path): \(what): \(String(cString: sqlite3_errmsg(handle)))")
    }

    /// A full disk is its own error (the caller can free space); anything else is a storage
    /// failure.
    static func code(of rc: Int32) -> StateError.Code {
        rc & 0xff == SQLITE_FULL ? .storageFull : .storageFailure
    }
}

/// A prepared statement (owns the `sqlite3_stmt`). Bind, step, reset.
final class SQLiteStatement {
    private let statement: OpaquePointer
    private let connection: SQLiteConnection

    init(connection: SQLiteConnection, sql: String) throws(StateError) {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v3(connection.handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil) == SQLITE_OK, let statement else {
            throw connection.failure("cannot prepare \(sql.prefix(60))")
        }
        self.statement = statement
        self.connection = connection
    }

    deinit { sqlite3_finalize(statement) }

    /// A value to bind.
    enum Value {
        case int(Int64)
        case text(String)
        case blob([UInt8])
        case null
    }

    /// Binds `values` (1-based in order), runs `body` for each row, then resets the statement.
    func run(_ values: [Value], _ body: (Row) throws(StateError) -> Void = { _ in }) throws(StateError) {
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        // Text and blobs are copied into buffers that live until the statement is reset.
        var buffers: [UnsafeMutableRawBufferPointer] = []
        defer { buffers.forEach { $0.deallocate() } }
        func copy<C: Collection>(_ bytes: C) -> UnsafeMutableRawBufferPointer where C.Element == UInt8 {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
            buffer.copyBytes(from: bytes)
            buffers.append(buffer)
            return buffer
        }
        for (index, value) in values.enumerated() {
            let position = Int32(index + 1)
            let rc: Int32
            switch value {
            case .int(let number):
                rc = sqlite3_bind_int64(statement, position, number)
            case .text(let text):
                let buffer = copy(text.utf8)
                rc = sqlite3_bind_text(statement, position, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(text.utf8.count), nil)
            case .blob(let bytes):
                let buffer = copy(bytes)
                rc = sqlite3_bind_blob(statement, position, buffer.baseAddress!, Int32(bytes.count), nil)
            case .null:
                rc = sqlite3_bind_null(statement, position)
            }
            guard rc == SQLITE_OK else { throw connection.failure("cannot bind parameter \(position)") }
        }
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw connection.failure("statement failed") }
            try body(Row(statement: statement))
        }
    }

    /// One result row, valid only inside the `run` callback.
    struct Row {
        let statement: OpaquePointer

        func int(_ column: Int32) -> Int64 { sqlite3_column_int64(statement, column) }

        func isNull(_ column: Int32) -> Bool { sqlite3_column_type(statement, column) == SQLITE_NULL }

        func text(_ column: Int32) -> String {
            guard let pointer = sqlite3_column_text(statement, column) else { return "" }
            return String(cString: pointer)
        }

        func blob(_ column: Int32) -> [UInt8] {
            let count = Int(sqlite3_column_bytes(statement, column))
            guard count > 0, let pointer = sqlite3_column_blob(statement, column) else { return [] }
            return Array(UnsafeRawBufferPointer(start: pointer, count: count))
        }
    }
}
