import NIOCore

/// Reads a few fields of an encoded protobuf message without decoding it: for decisions that
/// need one or two strings of a request (the namespace and type an access check looks at)
/// before the handler decodes the whole of it, and for light readers of responses.
///
/// The semantics are protobuf's: when a field occurs several times, the last occurrence wins,
/// and repeated occurrences of an embedded message are merged (so the last value found along
/// the path wins). Every reader here walks fields with ``forEachField(in:_:)``.
public enum WireScan {
    /// The string at `path` (field numbers, outermost first; all but the last must be embedded
    /// messages), nil when it is absent. Throws when the bytes are not a protobuf message.
    ///
    /// The string reads exactly as the decoder reads it: protobuf-c keeps strings as C strings,
    /// so the value ends at its first NUL byte, and invalid UTF-8 is repaired the same way
    /// (`String(cString:)`). A decision taken on the scanned value is a decision on the value the
    /// handler will see.
    public static func string(at path: [Int], in message: ByteBuffer) throws(WireScanError) -> String? {
        try bytes(at: path, in: message).map { value in
            value.withUnsafeReadableBytes { raw in
                let end = raw.firstIndex(of: 0) ?? raw.count
                return String(decoding: raw[..<end], as: UTF8.self)
            }
        }
    }

    /// Whether an embedded message or a string is present at `path`.
    public static func contains(_ path: [Int], in message: ByteBuffer) throws(WireScanError) -> Bool {
        try bytes(at: path, in: message) != nil
    }

    /// The bytes of the length-delimited field (string, bytes, embedded message) at `path`, nil
    /// when it is absent.
    public static func bytes(at path: [Int], in message: ByteBuffer) throws(WireScanError) -> ByteBuffer? {
        guard let last = path.last else { return nil }
        var found: ByteBuffer?
        try forEachParent(of: path[...], in: message) { parent throws(WireScanError) in
            try forEachSlice(in: parent) { number, value in
                if number == last, let value { found = value }
            }
        }
        return found
    }

    /// The varint field (integer, enum, bool) at `path`, nil when it is absent.
    public static func varint(at path: [Int], in message: ByteBuffer) throws(WireScanError) -> UInt64? {
        guard let last = path.last else { return nil }
        var found: UInt64?
        try forEachParent(of: path[...], in: message) { parent throws(WireScanError) in
            try parent.withUnsafeReadableBytes { raw throws(WireScanError) in
                try forEachField(in: raw) { number, field throws(WireScanError) in
                    if number == last, case .varint(let value) = field { found = value }
                }
            }
        }
        return found
    }

    /// Every occurrence of the length-delimited field `number` at the top level, in order (a
    /// repeated message field, such as the events of a `WatchResponse`).
    public static func occurrences(of number: Int, in message: ByteBuffer) throws(WireScanError) -> [ByteBuffer] {
        var found: [ByteBuffer] = []
        try forEachSlice(in: message) { field, value in
            if field == number, let value { found.append(value) }
        }
        return found
    }

    /// One field of a message, as ``forEachField(in:_:)`` visits it.
    public enum Field {
        /// A varint field (integer, enum, bool).
        case varint(UInt64)
        /// A length-delimited field (string, bytes, embedded message): its bytes.
        case bytes(UnsafeRawBufferPointer)
        /// A fixed-size field (fixed32/64, float, double): skipped.
        case fixed
    }

    /// Visits every field of the message in `bytes`, in order, without copying or allocating:
    /// for readers that need several fields of one message (one pass instead of one per field).
    public static func forEachField(in bytes: UnsafeRawBufferPointer, _ visit: (Int, Field) throws(WireScanError) -> Void) throws(WireScanError) {
        var index = 0
        func varint() throws(WireScanError) -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while index < bytes.count, shift < 64 {
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
            throw WireScanError()
        }
        while index < bytes.count {
            let key = try varint()
            let number = Int(key >> 3)
            switch key & 7 {
            case 0:
                try visit(number, .varint(try varint()))
            case 1, 5:
                let size = key & 7 == 1 ? 8 : 4
                guard bytes.count - index >= size else { throw WireScanError() }
                index += size
                try visit(number, .fixed)
            case 2:
                let length = try varint()
                guard length <= UInt64(bytes.count - index) else { throw WireScanError() }
                let value = UnsafeRawBufferPointer(rebasing: bytes[index..<index + Int(length)])
                index += Int(length)
                try visit(number, .bytes(value))
            default:
                throw WireScanError()
            }
        }
    }

    /// Visits, in order, every occurrence of the message that holds the last field of `path`
    /// (the message itself for a path of one): an embedded message that occurs several times is
    /// merged by protobuf, so a field's last value along all of them is its value.
    private static func forEachParent(of path: ArraySlice<Int>, in message: ByteBuffer, _ visit: (ByteBuffer) throws(WireScanError) -> Void) throws(WireScanError) {
        guard let first = path.first, path.count > 1 else { return try visit(message) }
        var occurrences: [ByteBuffer] = []
        try forEachSlice(in: message) { number, value in
            if number == first, let value { occurrences.append(value) }
        }
        for occurrence in occurrences { try forEachParent(of: path.dropFirst(), in: occurrence, visit) }
    }

    /// Visits every field of `message` with, for a length-delimited one, its bytes as a slice of
    /// `message` (no copy); nil for the others.
    private static func forEachSlice(in message: ByteBuffer, _ visit: (Int, ByteBuffer?) -> Void) throws(WireScanError) {
        try message.withUnsafeReadableBytes { raw throws(WireScanError) in
            try forEachField(in: raw) { number, field throws(WireScanError) in
                guard case .bytes(let value) = field, let start = value.baseAddress, let base = raw.baseAddress else {
                    // An empty length-delimited field has no address of its own.
                    if case .bytes = field { visit(number, ByteBuffer()) } else { visit(number, nil) }
                    return
                }
                visit(number, message.getSlice(at: message.readerIndex + (start - base), length: value.count))
            }
        }
    }
}

/// The bytes are not a protobuf message.
public struct WireScanError: Error, Hashable, Sendable {}
