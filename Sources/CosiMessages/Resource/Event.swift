import CCosiProto
import CProtobufC
import CosiProtobuf
import NIOConcurrencyHelpers
import NIOCore

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

// The bridge is written by hand: see Resource.swift.
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
