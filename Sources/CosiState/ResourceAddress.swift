import CosiMessages

/// A kind of resource: all resources of one type in one namespace.
public struct ResourceKind: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var namespace: String
    public var type: String

    public init(namespace: String, type: String) {
        self.namespace = namespace
        self.type = type
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.namespace, lhs.type) < (rhs.namespace, rhs.type)
    }

    public var description: String { "\(namespace)/\(type)" }
}

/// The address of one resource.
public struct ResourceAddress: Hashable, Sendable, CustomStringConvertible {
    public var kind: ResourceKind
    public var id: String

    public init(namespace: String, type: String, id: String) {
        self.kind = ResourceKind(namespace: namespace, type: type)
        self.id = id
    }

    public init(kind: ResourceKind, id: String) {
        self.kind = kind
        self.id = id
    }

    public var description: String { "\(kind)/\(id)" }
}

extension Resource {
    /// Where this resource lives.
    public var address: ResourceAddress {
        ResourceAddress(namespace: metadata.namespace, type: metadata.type, id: metadata.id)
    }

    /// A tombstone: the address, version "undefined", no spec.
    public static func tombstone(namespace: String, type: String, id: String) -> Resource {
        Resource(metadata: Metadata(namespace: namespace, type: type, id: id, version: "undefined"))
    }
}

/// Phases of a resource's life.
public enum Phase {
    public static let running = "running"
    public static let tearingDown = "tearingDown"
}

/// Checks the parts of an address and names the first empty one.
func validateAddress(namespace: String, type: String, id: String?, field: String = "") throws(StateError) {
    let prefix = field.isEmpty ? "" : field + "."
    guard !namespace.isEmpty else { throw StateError(.invalidArgument, "\(prefix)namespace must not be empty") }
    guard !type.isEmpty else { throw StateError(.invalidArgument, "\(prefix)type must not be empty") }
    if let id, id.isEmpty { throw StateError(.invalidArgument, "\(prefix)id must not be empty") }
}
