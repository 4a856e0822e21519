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

// MARK: - protobuf-c bridge

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
