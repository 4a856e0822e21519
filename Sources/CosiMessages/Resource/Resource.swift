import CCosiProto
import CProtobufC
import CosiProtobuf
import NIOConcurrencyHelpers
import NIOCore

/// `cosi.resource.Resource`: metadata and spec.
public struct Resource: Hashable, Sendable {
    public var metadata: Metadata
    public var spec: Spec
    /// Whether decoded bytes carried a metadata field (always true for values made in Swift).
    public private(set) var hasMetadata = true
    /// Whether decoded bytes carried a spec field (always true for values made in Swift).
    public private(set) var hasSpec = true

    public init(metadata: Metadata, spec: Spec = Spec()) {
        self.metadata = metadata
        self.spec = spec
    }

    // Presence is how the value was decoded, not part of its value.
    public static func == (lhs: Resource, rhs: Resource) -> Bool {
        lhs.metadata == rhs.metadata && lhs.spec == rhs.spec
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(metadata)
        hasher.combine(spec)
    }
}

/// `cosi.resource.Event`: one change delivered to a watcher.
public struct Event: Hashable, Sendable {
    public var resource: Resource?
    public var type: EventType
    public var old: Resource?
    public var error: String?
    public var bookmark: [UInt8]?
    /// Where the encoding of this exact event is kept once made, shared by every copy (a server
    /// sends the same event to many watchers). Not part of the value.
    public var encodingCache: EncodingCache.Slot?

    public init(resource: Resource?, type: EventType, old: Resource? = nil, error: String? = nil, bookmark: [UInt8]? = nil) {
        self.resource = resource
        self.type = type
        self.old = old
        self.error = error
        self.bookmark = bookmark
    }

    public static func == (lhs: Event, rhs: Event) -> Bool {
        lhs.resource == rhs.resource && lhs.type == rhs.type && lhs.old == rhs.old && lhs.error == rhs.error && lhs.bookmark == rhs.bookmark
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(resource)
        hasher.combine(type)
        hasher.combine(old)
        hasher.combine(error)
        hasher.combine(bookmark)
    }

    /// The event's encoding, made once per cache slot. Only events whose content is fixed for
    /// the slot may share one (the state engine makes one slot per event and delivery form).
    public func cachedSerializedBytes() -> ByteBuffer {
        guard let encodingCache else { return serializedBytes() }
        return encodingCache.cache.bytes(encodingCache.index) { serializedBytes() }
    }
}

/// Encodings of one change in its few delivery forms, computed at most once each.
public final class EncodingCache: @unchecked Sendable {
    // @unchecked Sendable: `slots` is guarded by `lock`.
    private let lock = NIOLock()
    private var slots: [ByteBuffer?]

    /// One form in a cache.
    public struct Slot: Sendable {
        public let cache: EncodingCache
        public let index: Int
    }

    public init(forms: Int) { slots = Array(repeating: nil, count: forms) }

    public func slot(_ index: Int) -> Slot { Slot(cache: self, index: index) }

    /// The encoding in slot `index`, made by `make` the first time.
    public func bytes(_ index: Int, _ make: () -> ByteBuffer) -> ByteBuffer {
        if let cached = lock.withLock({ slots[index] }) { return cached }
        let made = make()
        lock.withLock { slots[index] = made }
        return made
    }
}

/// Builds `WatchResponse` bytes from events, reusing their cached encodings (field 1, repeated
/// Event, is the response's only field).
public func encodeWatchResponse(_ events: [Event]) -> ByteBuffer {
    var buffer = ByteBuffer()
    for event in events { appendEventField(event.cachedSerializedBytes(), to: &buffer) }
    return buffer
}

/// Appends one encoded `Event` to `WatchResponse` bytes (field 1, length-delimited).
public func appendEventField(_ encoded: ByteBuffer, to buffer: inout ByteBuffer) {
    buffer.writeInteger(UInt8(0x0a))
    var length = UInt64(encoded.readableBytes)
    while length >= 0x80 {
        buffer.writeInteger(UInt8(truncatingIfNeeded: length) | 0x80)
        length >>= 7
    }
    buffer.writeInteger(UInt8(length))
    buffer.writeImmutableBuffer(encoded)
}

// MARK: - protobuf-c bridges

// Written by hand because generation cannot express them: Resource keeps non-optional metadata
// and spec while recording whether the bytes carried them; Event calls its `event_type` field
// `type` and carries an encoding cache outside its value. Every other message is generated
// (scripts/gen-swift-messages.py).

extension Resource: CMessageBridged {
    @usableFromInline package typealias CStruct = Cosi__Resource__Resource
    @usableFromInline package static let messageName = "cosi.resource.Resource"
    @usableFromInline package static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__resource__init(p) }
    @usableFromInline package static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__resource__resource__unpack(nil, n, d) }
    @usableFromInline package static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__resource__free_unpacked(p, nil) }
    @usableFromInline package init(c: UnsafePointer<CStruct>) {
        self.init(
            metadata: c.pointee.metadata.map { Metadata(c: $0) } ?? Metadata(),
            spec: c.pointee.spec.map { Spec(c: $0) } ?? Spec()
        )
        hasMetadata = c.pointee.metadata != nil
        hasSpec = c.pointee.spec != nil
    }
    @usableFromInline package func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.metadata = arena.message(metadata)
        c.pointee.spec = arena.message(spec)
    }
}

extension Event: CMessageBridged {
    @usableFromInline package typealias CStruct = Cosi__Resource__Event
    @usableFromInline package static let messageName = "cosi.resource.Event"
    @usableFromInline package static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__event__init(p) }
    @usableFromInline package static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__resource__event__unpack(nil, n, d) }
    @usableFromInline package static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__event__free_unpacked(p, nil) }

    @usableFromInline package init(c: UnsafePointer<CStruct>) {
        let e = c.pointee
        self.init(
            resource: e.resource.map { Resource(c: $0) },
            type: EventType(rawValue: Int32(bitPattern: e.event_type.rawValue)),
            old: e.old.map { Resource(c: $0) },
            error: e._error_case == COSI__RESOURCE__EVENT___ERROR_ERROR ? swiftString(e.error) : nil,
            bookmark: e._bookmark_case == COSI__RESOURCE__EVENT___BOOKMARK_BOOKMARK ? swiftBytes(e.bookmark) : nil
        )
    }

    @usableFromInline package func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.resource = resource.map { arena.message($0) }
        c.pointee.event_type = Cosi__Resource__EventType(rawValue: UInt32(bitPattern: type.rawValue))
        c.pointee.old = old.map { arena.message($0) }
        if let error {
            c.pointee._error_case = COSI__RESOURCE__EVENT___ERROR_ERROR
            c.pointee.error = arena.string(error)
        }
        if let bookmark {
            c.pointee._bookmark_case = COSI__RESOURCE__EVENT___BOOKMARK_BOOKMARK
            c.pointee.bookmark = arena.bytes(bookmark)
        }
    }
}

extension Timestamp: Comparable {
    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        (lhs.seconds, lhs.nanos) < (rhs.seconds, rhs.nanos)
    }
}
