import CosiMessages

/// The largest resources and queries the state engine accepts (docs/RELIABILITY.md). They keep
/// every operation on one resource cheap and bounded: a Get, a match, an encoding. A request
/// over a limit is INVALID_ARGUMENT naming the field and the limit.
public enum ResourceLimits {
    /// Bytes of a namespace, type or id.
    public static let addressBytes = 1_024
    /// Labels on one resource, and bytes of a label's key and of its value.
    public static let labels = 1_024
    public static let labelKeyBytes = 1_024
    public static let labelValueBytes = 4_096
    /// Annotations on one resource, and the bytes of all their keys and values together.
    public static let annotations = 1_024
    public static let annotationBytes = 256 << 10
    /// Finalizers on one resource, and bytes of one.
    public static let finalizers = 256
    public static let finalizerBytes = 1_024
    /// Label queries in one request, terms in one query, values in one term.
    public static let labelQueries = 64
    public static let termsPerQuery = 64
    public static let valuesPerTerm = 1_024
    /// Bytes of an id regexp.
    public static let idPatternBytes = 1_024

    /// Checks a resource's metadata against the limits.
    static func check(_ metadata: Metadata, field: String) throws(StateError) {
        for (name, value) in [("namespace", metadata.namespace), ("type", metadata.type), ("id", metadata.id)] where value.utf8.count > addressBytes {
            throw StateError(.invalidArgument, "\(field).\(name) is \(value.utf8.count) bytes, more than the limit of \(addressBytes)")
        }
        guard metadata.labels.count <= labels else {
            throw StateError(.invalidArgument, "\(field).labels has \(metadata.labels.count) entries, more than the limit of \(labels)")
        }
        for (key, value) in metadata.labels {
            guard key.utf8.count <= labelKeyBytes, value.utf8.count <= labelValueBytes else {
                throw StateError(.invalidArgument, "\(field).labels: the key or value of \"\(key.prefix(64))\" is over the limit (\(labelKeyBytes) bytes for a key, \(labelValueBytes) for a value)")
            }
        }
        guard metadata.annotations.count <= annotations else {
            throw StateError(.invalidArgument, "\(field).annotations has \(metadata.annotations.count) entries, more than the limit of \(annotations)")
        }
        let annotationSize = metadata.annotations.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        guard annotationSize <= annotationBytes else {
            throw StateError(.invalidArgument, "\(field).annotations hold \(annotationSize) bytes, more than the limit of \(annotationBytes)")
        }
        guard metadata.finalizers.count <= finalizers else {
            throw StateError(.invalidArgument, "\(field).finalizers has \(metadata.finalizers.count) entries, more than the limit of \(finalizers)")
        }
        if let long = metadata.finalizers.first(where: { $0.utf8.count > finalizerBytes }) {
            throw StateError(.invalidArgument, "\(field).finalizers: \"\(long.prefix(64))...\" is more than \(finalizerBytes) bytes")
        }
    }

    /// A rough upper bound of a resource's encoded size, in bytes (what a Get of it would send).
    public static func estimatedSize(of resource: Resource) -> Int {
        let metadata = resource.metadata
        var size = 256 + metadata.namespace.utf8.count + metadata.type.utf8.count + metadata.id.utf8.count + metadata.owner.utf8.count
        size += resource.spec.yamlSpec.utf8.count + resource.spec.protoSpec.count
        for (key, value) in metadata.labels { size += key.utf8.count + value.utf8.count + 8 }
        for (key, value) in metadata.annotations { size += key.utf8.count + value.utf8.count + 8 }
        for finalizer in metadata.finalizers { size += finalizer.utf8.count + 4 }
        return size
    }
}
