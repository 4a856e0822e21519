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

/// The names of the `meta` namespace, which holds Namespaces and ResourceDefinitions
/// (state.md, "The meta namespace"). The state engine fills it and validates writes to it.
public enum MetaNamespace {
    public static let namespace = "meta"
    /// The owner of the built-in resources of `meta`.
    public static let owner = "meta"
    public static let namespaceType = "Namespaces.meta.cosi.dev"
    public static let resourceDefinitionType = "ResourceDefinitions.meta.cosi.dev"
    /// The record of every change (changes.md): id = change id, written by cosid only.
    public static let changesType = "Changes.meta.cosi.dev"
    /// The owner of Changes resources.
    public static let changesOwner = "cosid"
}
