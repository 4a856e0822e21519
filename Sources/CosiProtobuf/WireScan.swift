import NIOCore

/// Reads a few fields of an encoded protobuf message without decoding it: for decisions that
/// need one or two strings of a request (the namespace and type an access check looks at)
/// before the handler decodes the whole of it.
///
/// The semantics are protobuf's: when a field occurs several times, the last occurrence wins,
/// and repeated occurrences of an embedded message are merged (so the last value found along
/// the path wins).
public enum WireScan {
    /// The string at `path` (field numbers, outermost first; all but the last must be embedded
    /// messages), nil when it is absent. Throws when the bytes are not a protobuf message.
    ///
    /// The string reads exactly as the decoder reads it: protobuf-c keeps strings as C strings,
    /// so the value ends at its first NUL byte, and invalid UTF-8 is repaired the same way
    /// (`String(cString:)`). A decision taken on the scanned value is a decision on the value the
    /// handler will see.
    public static func string(at path: [Int], in message: ByteBuffer) throws(WireScanError) -> String? {
        try bytes(at: path[...], in: message).map { value in
            value.withUnsafeReadableBytes { raw in
                let end = raw.firstIndex(of: 0) ?? raw.count
                return String(decoding: raw[..<end], as: UTF8.self)
            }
        }
    }

    /// Whether an embedded message or a string is present at `path`.
    public static func contains(_ path: [Int], in message: ByteBuffer) throws(WireScanError) -> Bool {
        try bytes(at: path[...], in: message) != nil
    }

    /// The bytes of the length-delimited field (string, bytes, embedded message) at `path`, nil
    /// when it is absent.
    public static func bytes(at path: [Int], in message: ByteBuffer) throws(WireScanError) -> ByteBuffer? {
        try bytes(at: path[...], in: message)
    }

    /// The varint field (integer, enum, bool) at `path`, nil when it is absent.
    public static func varint(at path: [Int], in message: ByteBuffer) throws(WireScanError) -> UInt64? {
        guard let number = path.last else { return nil }
        var buffer: ByteBuffer
        if path.count == 1 {
            buffer = message
        } else {
            guard let inner = try bytes(at: path.dropLast(), in: message) else { return nil }
            buffer = inner
        }
        var found: UInt64?
        while buffer.readableBytes > 0 {
            let key = try varint(&buffer)
            switch key & 7 {
            case 0:
                let value = try varint(&buffer)
                if Int(key >> 3) == number { found = value }
            case 1: guard buffer.moveReaderIndexIfPossible(8) else { throw WireScanError() }
            case 5: guard buffer.moveReaderIndexIfPossible(4) else { throw WireScanError() }
            case 2:
                let length = try varint(&buffer)
                guard length <= UInt64(buffer.readableBytes), buffer.moveReaderIndexIfPossible(Int(length)) else { throw WireScanError() }
            default:
                throw WireScanError()
            }
        }
        return found
    }

    /// Every occurrence of the length-delimited field `number` at the top level, in order (a
    /// repeated message field, such as the events of a `WatchResponse`).
    public static func occurrences(of number: Int, in message: ByteBuffer) throws(WireScanError) -> [ByteBuffer] {
        var buffer = message
        var found: [ByteBuffer] = []
        while buffer.readableBytes > 0 {
            let key = try varint(&buffer)
            switch key & 7 {
            case 0: _ = try varint(&buffer)
            case 1: guard buffer.moveReaderIndexIfPossible(8) else { throw WireScanError() }
            case 5: guard buffer.moveReaderIndexIfPossible(4) else { throw WireScanError() }
            case 2:
                let length = try varint(&buffer)
                guard length <= UInt64(buffer.readableBytes), let value = buffer.readSlice(length: Int(length)) else { throw WireScanError() }
                if Int(key >> 3) == number { found.append(value) }
            default:
                throw WireScanError()
            }
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

    private static func bytes(at path: ArraySlice<Int>, in message: ByteBuffer) throws(WireScanError) -> ByteBuffer? {
        guard let field = path.first else { return nil }
        var buffer = message
        var found: ByteBuffer?
        while buffer.readableBytes > 0 {
            let key = try varint(&buffer)
            let number = Int(key >> 3)
            switch key & 7 {
            case 0: _ = try varint(&buffer)
            case 1: guard buffer.moveReaderIndexIfPossible(8) else { throw WireScanError() }
            case 5: guard buffer.moveReaderIndexIfPossible(4) else { throw WireScanError() }
            case 2:
                let length = try varint(&buffer)
                guard length <= UInt64(buffer.readableBytes), let value = buffer.readSlice(length: Int(length)) else { throw WireScanError() }
                guard number == field else { continue }
                if path.count == 1 {
                    found = value
                } else if let inner = try bytes(at: path.dropFirst(), in: value) {
                    found = inner
                }
            default:
                throw WireScanError()
            }
        }
        return found
    }

    private static func varint(_ buffer: inout ByteBuffer) throws(WireScanError) -> UInt64 {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 64, by: 7) {
            guard let byte = buffer.readInteger(as: UInt8.self) else { throw WireScanError() }
            value |= UInt64(byte & 0x7f) << UInt64(shift)
            if byte & 0x80 == 0 { return value }
        }
        throw WireScanError()
    }
}

/// The bytes are not a protobuf message.
public struct WireScanError: Error, Hashable, Sendable {}

extension ByteBuffer {
    fileprivate mutating func moveReaderIndexIfPossible(_ count: Int) -> Bool {
        guard readableBytes >= count else { return false }
        moveReaderIndex(forwardBy: count)
        return true
    }
}
