import CProtobufC
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A protobuf message whose bytes can be read and written.
///
/// Conforming types are Swift values; their protobuf-c representation exists only inside this
/// module, for the duration of one encode or decode.
public protocol ProtobufMessage: Sendable, Equatable {
    /// Decodes a message. Unknown fields are skipped; malformed or truncated input throws.
    init(serializedBytes: ByteBuffer) throws(MessageDecodingError)
    /// Appends the message's encoding to `buffer`. Map entries are written in key order, so the
    /// output is deterministic (and equals other implementations' deterministic output).
    func serialize(into buffer: inout ByteBuffer)
}

extension ProtobufMessage {
    /// The message's encoding in a new buffer.
    public func serializedBytes() -> ByteBuffer {
        var buffer = ByteBuffer()
        serialize(into: &buffer)
        return buffer
    }

    /// Decodes a message from raw bytes.
    public init(serializedBytes bytes: [UInt8]) throws(MessageDecodingError) {
        try self.init(serializedBytes: ByteBuffer(bytes: bytes))
    }
}

/// A buffer that could not be decoded as the expected message.
public struct MessageDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate var name: String
        /// The bytes are not a valid protobuf encoding of the message.
        public static let malformed = Code(name: "malformed")
        public var description: String { name }
    }

    public var code: Code
    /// The message type that was expected.
    public var messageType: String

    @usableFromInline
    init(code: Code, messageType: String) {
        self.code = code
        self.messageType = messageType
    }
    public var description: String { "invalid \(messageType) message: bytes are not a valid protobuf encoding" }
}

/// The internal bridge between a Swift value and its protobuf-c struct.
///
/// Each conformance names the generated C functions and copies fields in both directions.
/// C pointers never leave this module and the generated bridges (`package` access: visible to
/// CosiMessages and CosiRPC, whose bridges are generated, and to no one outside the package).
///
/// The generic entry points are `@inlinable`: the message types live in other modules
/// (CosiMessages, CosiRPC), and without inlining every encode and decode would run unspecialized,
/// looking up generic metadata at run time.
@usableFromInline
package protocol CMessageBridged: ProtobufMessage {
    associatedtype CStruct
    static var messageName: String { get }
    /// Calls the generated `*__init` function (which also sets the descriptor).
    static func cInit(_ pointer: UnsafeMutablePointer<CStruct>)
    /// Calls the generated `*__unpack` function.
    static func cUnpack(_ length: Int, _ data: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>?
    /// Calls the generated `*__free_unpacked` function.
    static func cFree(_ pointer: UnsafeMutablePointer<CStruct>)
    /// Reads the value from a C struct.
    init(c: UnsafePointer<CStruct>)
    /// Writes the value into an initialised C struct; every pointer it stores comes from `arena`.
    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena)
}

extension CMessageBridged {
    @inlinable
    public init(serializedBytes buffer: ByteBuffer) throws(MessageDecodingError) {
        let unpacked: UnsafeMutablePointer<CStruct>? = buffer.withUnsafeReadableBytes { raw in
            if let base = raw.baseAddress, raw.count > 0 {
                return Self.cUnpack(raw.count, base.assumingMemoryBound(to: UInt8.self))
            }
            var empty: UInt8 = 0
            return Self.cUnpack(0, &empty)
        }
        guard let unpacked else {
            throw MessageDecodingError(code: .malformed, messageType: Self.messageName)
        }
        defer { Self.cFree(unpacked) }
        self.init(c: unpacked)
    }

    @inlinable
    public func serialize(into buffer: inout ByteBuffer) {
        let arena = CArena()
        let c = arena.message(self)
        let message = UnsafeMutableRawPointer(c).assumingMemoryBound(to: ProtobufCMessage.self)
        let size = protobuf_c_message_get_packed_size(message)
        guard size > 0 else { return }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
            protobuf_c_message_pack(message, raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        withExtendedLifetime(arena) {}
    }
}

/// Owns every C allocation made while building one message for packing, and frees them together.
@usableFromInline
package final class CArena {
    @usableFromInline var allocations: [UnsafeMutableRawPointer] = []

    @usableFromInline
    package init() { allocations.reserveCapacity(16) }

    deinit {
        for pointer in allocations { free(pointer) }
    }

    /// A NUL-terminated copy of `string`.
    @usableFromInline
    package func string(_ string: String) -> UnsafeMutablePointer<CChar> {
        let copy = strdup(string)!
        allocations.append(copy)
        return copy
    }

    /// Zeroed storage for `count` values of `T`.
    @inlinable
    package func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = calloc(max(count, 1), MemoryLayout<T>.stride)!
        allocations.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    /// A C struct for `value`, initialised and filled.
    @inlinable
    package func message<M: CMessageBridged>(_ value: M) -> UnsafeMutablePointer<M.CStruct> {
        let c = allocate(M.CStruct.self, count: 1)
        M.cInit(c)
        value.fill(c, arena: self)
        return c
    }

    /// An array of C structs for `values`, for a repeated message field.
    @inlinable
    package func messages<M: CMessageBridged>(_ values: [M]) -> UnsafeMutablePointer<UnsafeMutablePointer<M.CStruct>?>? {
        guard !values.isEmpty else { return nil }
        let array = allocate(UnsafeMutablePointer<M.CStruct>?.self, count: values.count)
        for (index, value) in values.enumerated() { array[index] = message(value) }
        return array
    }

    /// An array of C strings, for a repeated string field.
    @usableFromInline
    package func strings(_ values: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
        guard !values.isEmpty else { return nil }
        let array = allocate(UnsafeMutablePointer<CChar>?.self, count: values.count)
        for (index, value) in values.enumerated() { array[index] = string(value) }
        return array
    }

    /// Binary data pointing at a copy of `bytes`.
    @usableFromInline
    package func bytes(_ bytes: [UInt8]) -> ProtobufCBinaryData {
        guard !bytes.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let copy = allocate(UInt8.self, count: bytes.count)
        copy.update(from: bytes, count: bytes.count)
        return ProtobufCBinaryData(len: bytes.count, data: copy)
    }

    /// A map field as an array of entry structs, in key order (deterministic encoding).
    @inlinable
    package func map<Entry>(
        _ map: [String: String],
        initEntry: (UnsafeMutablePointer<Entry>) -> Void,
        set: (UnsafeMutablePointer<Entry>, UnsafeMutablePointer<CChar>, UnsafeMutablePointer<CChar>) -> Void
    ) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Entry>?>?) {
        guard !map.isEmpty else { return (0, nil) }
        let array = allocate(UnsafeMutablePointer<Entry>?.self, count: map.count)
        for (index, key) in map.keys.sorted().enumerated() {
            let entry = allocate(Entry.self, count: 1)
            initEntry(entry)
            set(entry, string(key), string(map[key]!))
            array[index] = entry
        }
        return (map.count, array)
    }
}

// MARK: - Reading C values

@inlinable
package func swiftString(_ pointer: UnsafePointer<CChar>?) -> String {
    guard let pointer else { return "" }
    return String(cString: pointer)
}

@inlinable
package func swiftString(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
    swiftString(UnsafePointer(pointer))
}

@usableFromInline
package func swiftStrings(_ count: Int, _ array: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> [String] {
    guard count > 0, let array else { return [] }
    return (0..<count).map { swiftString(array[$0]) }
}

@usableFromInline
package func swiftBytes(_ data: ProtobufCBinaryData) -> [UInt8] {
    guard data.len > 0, let pointer = data.data else { return [] }
    return Array(UnsafeBufferPointer(start: pointer, count: data.len))
}

@inlinable
package func swiftMessages<M: CMessageBridged>(
    _ count: Int, _ array: UnsafeMutablePointer<UnsafeMutablePointer<M.CStruct>?>?, as: M.Type
) -> [M] {
    guard count > 0, let array else { return [] }
    return (0..<count).compactMap { array[$0].map { M(c: $0) } }
}

@inlinable
package func swiftMap<Entry>(
    _ count: Int, _ array: UnsafeMutablePointer<UnsafeMutablePointer<Entry>?>?,
    _ read: (UnsafePointer<Entry>) -> (UnsafeMutablePointer<CChar>?, UnsafeMutablePointer<CChar>?)
) -> [String: String] {
    guard count > 0, let array else { return [:] }
    var map: [String: String] = [:]
    map.reserveCapacity(count)
    for index in 0..<count {
        guard let entry = array[index] else { continue }
        let (key, value) = read(entry)
        // As in other protobuf implementations, the last entry for a key wins.
        map[swiftString(key)] = swiftString(value)
    }
    return map
}

// MARK: - Nested messages

// protoc-c generates unpack/free functions for top-level messages only. A nested message is
// unpacked through the generic functions with its descriptor, read from an initialised struct
// (the descriptor constant itself cannot be addressed from Swift without copying it).

@inlinable
package func unpackNested<T>(_ initialise: (UnsafeMutablePointer<T>) -> Void, _ length: Int, _ data: UnsafePointer<UInt8>) -> UnsafeMutablePointer<T>? {
    let scratch = UnsafeMutablePointer<T>.allocate(capacity: 1)
    defer { scratch.deallocate() }
    initialise(scratch)
    let descriptor = UnsafeRawPointer(scratch).assumingMemoryBound(to: ProtobufCMessage.self).pointee.descriptor
    guard let message = protobuf_c_message_unpack(descriptor, nil, length, data) else { return nil }
    return UnsafeMutableRawPointer(message).assumingMemoryBound(to: T.self)
}

@inlinable
package func freeNested<T>(_ pointer: UnsafeMutablePointer<T>) {
    protobuf_c_message_free_unpacked(UnsafeMutableRawPointer(pointer).assumingMemoryBound(to: ProtobufCMessage.self), nil)
}
