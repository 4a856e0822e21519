import CCosiProto
import CProtobufC
import NIOConcurrencyHelpers
import NIOCore

/// `google.protobuf.Timestamp`: seconds and nanoseconds since the Unix epoch, UTC.
public struct Timestamp: Hashable, Sendable, Comparable {
    public var seconds: Int64
    public var nanos: Int32

    public init(seconds: Int64, nanos: Int32 = 0) {
        self.seconds = seconds
        self.nanos = nanos
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        (lhs.seconds, lhs.nanos) < (rhs.seconds, rhs.nanos)
    }
}

/// `cosi.resource.Metadata`: a resource's identity, version, phase, ownership and labels.
public struct Metadata: Hashable, Sendable {
    public var namespace: String
    public var type: String
    public var id: String
    public var version: String
    public var owner: String
    public var phase: String
    public var created: Timestamp?
    public var updated: Timestamp?
    public var finalizers: [String]
    public var labels: [String: String]
    public var annotations: [String: String]

    public init(
        namespace: String = "", type: String = "", id: String = "", version: String = "",
        owner: String = "", phase: String = "", created: Timestamp? = nil, updated: Timestamp? = nil,
        finalizers: [String] = [], labels: [String: String] = [:], annotations: [String: String] = [:]
    ) {
        self.namespace = namespace
        self.type = type
        self.id = id
        self.version = version
        self.owner = owner
        self.phase = phase
        self.created = created
        self.updated = updated
        self.finalizers = finalizers
        self.labels = labels
        self.annotations = annotations
    }
}

/// `cosi.resource.Spec`: a resource's desired state, as protobuf bytes and/or YAML text.
public struct Spec: Hashable, Sendable {
    public var protoSpec: [UInt8]
    public var yamlSpec: String

    public init(protoSpec: [UInt8] = [], yamlSpec: String = "") {
        self.protoSpec = protoSpec
        self.yamlSpec = yamlSpec
    }
}

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

/// `cosi.resource.EventType`. Unknown values from newer peers are kept as their raw number.
public struct EventType: RawRepresentable, Hashable, Sendable {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let created = EventType(rawValue: 0)
    public static let updated = EventType(rawValue: 1)
    public static let destroyed = EventType(rawValue: 2)
    public static let bootstrapped = EventType(rawValue: 3)
    public static let errored = EventType(rawValue: 4)
    public static let noop = EventType(rawValue: 5)
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

    func bytes(_ index: Int, _ make: () -> ByteBuffer) -> ByteBuffer {
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
    for event in events {
        let encoded = event.cachedSerializedBytes()
        buffer.writeInteger(UInt8(0x0a))
        var length = UInt64(encoded.readableBytes)
        while length >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: length) | 0x80)
            length >>= 7
        }
        buffer.writeInteger(UInt8(length))
        buffer.writeImmutableBuffer(encoded)
    }
    return buffer
}

/// `cosi.resource.LabelTerm`: one condition of a label query.
public struct LabelTerm: Hashable, Sendable {
    /// `cosi.resource.LabelTerm.Operation`.
    public struct Operation: RawRepresentable, Hashable, Sendable {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let exists = Operation(rawValue: 0)
        public static let equal = Operation(rawValue: 1)
        /// Deprecated in COSI: means `exists` with `invert`.
        public static let notExists = Operation(rawValue: 2)
        public static let `in` = Operation(rawValue: 3)
        public static let lt = Operation(rawValue: 4)
        public static let lte = Operation(rawValue: 5)
        public static let ltNumeric = Operation(rawValue: 6)
        public static let lteNumeric = Operation(rawValue: 7)
    }

    public var key: String
    public var op: Operation
    public var value: [String]
    public var invert: Bool

    public init(key: String, op: Operation, value: [String] = [], invert: Bool = false) {
        self.key = key
        self.op = op
        self.value = value
        self.invert = invert
    }
}

/// `cosi.resource.LabelQuery`: terms that must all hold.
public struct LabelQuery: Hashable, Sendable {
    public var terms: [LabelTerm]
    public init(terms: [LabelTerm] = []) { self.terms = terms }
}

/// `cosi.resource.IDQuery`: a regular expression on resource ids.
public struct IDQuery: Hashable, Sendable {
    public var regexp: String
    public init(regexp: String = "") { self.regexp = regexp }
}

// MARK: - protobuf-c bridges

extension Timestamp: CMessageBridged {
    typealias CStruct = Google__Protobuf__Timestamp
    static let messageName = "google.protobuf.Timestamp"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { google__protobuf__timestamp__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { google__protobuf__timestamp__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { google__protobuf__timestamp__free_unpacked(p, nil) }
    init(c: UnsafePointer<CStruct>) { self.init(seconds: c.pointee.seconds, nanos: c.pointee.nanos) }
    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.seconds = seconds
        c.pointee.nanos = nanos
    }
}

extension Metadata: CMessageBridged {
    typealias CStruct = Cosi__Resource__Metadata
    static let messageName = "cosi.resource.Metadata"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__metadata__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__resource__metadata__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__metadata__free_unpacked(p, nil) }

    init(c: UnsafePointer<CStruct>) {
        let m = c.pointee
        self.init(
            namespace: swiftString(m.namespace_), type: swiftString(m.type), id: swiftString(m.id),
            version: swiftString(m.version), owner: swiftString(m.owner), phase: swiftString(m.phase),
            created: m.created.map { Timestamp(c: $0) }, updated: m.updated.map { Timestamp(c: $0) },
            finalizers: swiftStrings(m.n_finalizers, m.finalizers),
            labels: swiftMap(m.n_labels, m.labels) { ($0.pointee.key, $0.pointee.value) },
            annotations: swiftMap(m.n_annotations, m.annotations) { ($0.pointee.key, $0.pointee.value) }
        )
    }

    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.namespace_ = arena.string(namespace)
        c.pointee.type = arena.string(type)
        c.pointee.id = arena.string(id)
        c.pointee.version = arena.string(version)
        c.pointee.owner = arena.string(owner)
        c.pointee.phase = arena.string(phase)
        c.pointee.created = created.map { arena.message($0) }
        c.pointee.updated = updated.map { arena.message($0) }
        c.pointee.n_finalizers = finalizers.count
        c.pointee.finalizers = arena.strings(finalizers)
        (c.pointee.n_labels, c.pointee.labels) = arena.map(labels, initEntry: cosi__resource__metadata__labels_entry__init) {
            $0.pointee.key = $1; $0.pointee.value = $2
        }
        (c.pointee.n_annotations, c.pointee.annotations) = arena.map(annotations, initEntry: cosi__resource__metadata__annotations_entry__init) {
            $0.pointee.key = $1; $0.pointee.value = $2
        }
    }
}

extension Spec: CMessageBridged {
    typealias CStruct = Cosi__Resource__Spec
    static let messageName = "cosi.resource.Spec"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__spec__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__resource__spec__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__spec__free_unpacked(p, nil) }
    init(c: UnsafePointer<CStruct>) {
        self.init(protoSpec: swiftBytes(c.pointee.proto_spec), yamlSpec: swiftString(c.pointee.yaml_spec))
    }
    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.proto_spec = arena.bytes(protoSpec)
        c.pointee.yaml_spec = arena.string(yamlSpec)
    }
}

extension Resource: CMessageBridged {
    typealias CStruct = Cosi__Resource__Resource
    static let messageName = "cosi.resource.Resource"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__resource__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__resource__resource__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__resource__free_unpacked(p, nil) }
    init(c: UnsafePointer<CStruct>) {
        self.init(
            metadata: c.pointee.metadata.map { Metadata(c: $0) } ?? Metadata(),
            spec: c.pointee.spec.map { Spec(c: $0) } ?? Spec()
        )
        hasMetadata = c.pointee.metadata != nil
        hasSpec = c.pointee.spec != nil
    }
    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.metadata = arena.message(metadata)
        c.pointee.spec = arena.message(spec)
    }
}

extension Event: CMessageBridged {
    typealias CStruct = Cosi__Resource__Event
    static let messageName = "cosi.resource.Event"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__event__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__resource__event__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__event__free_unpacked(p, nil) }

    init(c: UnsafePointer<CStruct>) {
        let e = c.pointee
        self.init(
            resource: e.resource.map { Resource(c: $0) },
            type: EventType(rawValue: Int32(bitPattern: e.event_type.rawValue)),
            old: e.old.map { Resource(c: $0) },
            error: e._error_case == COSI__RESOURCE__EVENT___ERROR_ERROR ? swiftString(e.error) : nil,
            bookmark: e._bookmark_case == COSI__RESOURCE__EVENT___BOOKMARK_BOOKMARK ? swiftBytes(e.bookmark) : nil
        )
    }

    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
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

extension LabelTerm: CMessageBridged {
    typealias CStruct = Cosi__Resource__LabelTerm
    static let messageName = "cosi.resource.LabelTerm"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__label_term__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__resource__label_term__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__label_term__free_unpacked(p, nil) }
    init(c: UnsafePointer<CStruct>) {
        self.init(
            key: swiftString(c.pointee.key),
            op: Operation(rawValue: Int32(bitPattern: c.pointee.op.rawValue)),
            value: swiftStrings(c.pointee.n_value, c.pointee.value),
            invert: c.pointee.invert != 0
        )
    }
    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.key = arena.string(key)
        c.pointee.op = Cosi__Resource__LabelTerm__Operation(rawValue: UInt32(bitPattern: op.rawValue))
        c.pointee.n_value = value.count
        c.pointee.value = arena.strings(value)
        c.pointee.invert = invert ? 1 : 0
    }
}

extension LabelQuery: CMessageBridged {
    typealias CStruct = Cosi__Resource__LabelQuery
    static let messageName = "cosi.resource.LabelQuery"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__label_query__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__resource__label_query__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__label_query__free_unpacked(p, nil) }
    init(c: UnsafePointer<CStruct>) {
        self.init(terms: swiftMessages(c.pointee.n_terms, c.pointee.terms, as: LabelTerm.self))
    }
    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.n_terms = terms.count
        c.pointee.terms = arena.messages(terms)
    }
}

extension IDQuery: CMessageBridged {
    typealias CStruct = Cosi__Resource__IDQuery
    static let messageName = "cosi.resource.IDQuery"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__idquery__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__resource__idquery__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__resource__idquery__free_unpacked(p, nil) }
    init(c: UnsafePointer<CStruct>) { self.init(regexp: swiftString(c.pointee.regexp)) }
    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) { c.pointee.regexp = arena.string(regexp) }
}
