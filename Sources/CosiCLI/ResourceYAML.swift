import CosiMessages
import Foundation
import Yams

/// Resources as YAML documents: `metadata` (keys in a fixed order, empty ones left out) and
/// `spec` (the resource's `yaml_spec`, as YAML).
public enum ResourceYAML {
    public struct FormatError: Error, CustomStringConvertible {
        public var description: String
    }

    /// One document for a resource; `event` adds an `event:` key (for watch output).
    public static func node(_ resource: Resource, event: String? = nil) throws -> Node {
        let m = resource.metadata
        var metadata: [(Node, Node)] = [
            ("namespace", Node(m.namespace)), ("type", Node(m.type)), ("id", Node(m.id)), ("version", Node(m.version)),
        ]
        if !m.owner.isEmpty { metadata.append(("owner", Node(m.owner))) }
        if !m.phase.isEmpty { metadata.append(("phase", Node(m.phase))) }
        if let created = m.created { metadata.append(("created", Node(iso8601(created)))) }
        if let updated = m.updated { metadata.append(("updated", Node(iso8601(updated)))) }
        if !m.labels.isEmpty { metadata.append(("labels", sortedMapping(m.labels))) }
        if !m.annotations.isEmpty { metadata.append(("annotations", sortedMapping(m.annotations))) }
        if !m.finalizers.isEmpty { metadata.append(("finalizers", Node(m.finalizers.map { Node($0) }))) }
        var document: [(Node, Node)] = []
        if let event { document.append(("event", Node(event))) }
        document.append(("metadata", Node(metadata)))
        let spec: Node
        if let meta = metaSpec(resource) {
            spec = meta
        } else if resource.spec.yamlSpec.isEmpty {
            spec = resource.spec.protoSpec.isEmpty ? Node("") : Node("<\(resource.spec.protoSpec.count) bytes of protobuf>")
        } else {
            spec = (try? Yams.compose(yaml: resource.spec.yamlSpec)) ?? Node(resource.spec.yamlSpec)
        }
        document.append(("spec", spec))
        return Node(document)
    }

    public static func encode(_ resource: Resource, event: String? = nil) throws -> String {
        try Yams.serialize(node: node(resource, event: event))
    }

    /// Reads one or more `---`-separated documents.
    public static func decode(_ text: String) throws -> [Resource] {
        var resources: [Resource] = []
        for (index, document) in try Yams.compose_all(yaml: text).enumerated() {
            guard let mapping = document.mapping else { throw FormatError(description: "document \(index + 1) is not a mapping") }
            guard let metadata = mapping["metadata"]?.mapping else { throw FormatError(description: "document \(index + 1) has no metadata") }
            func string(_ key: String) -> String { metadata[Node(key)]?.string ?? "" }
            var m = Metadata(namespace: string("namespace"), type: string("type"), id: string("id"), version: string("version"), owner: string("owner"), phase: string("phase"))
            guard !m.type.isEmpty, !m.id.isEmpty else { throw FormatError(description: "document \(index + 1): metadata.type and metadata.id are required") }
            if let labels = metadata["labels"]?.mapping {
                for (key, value) in labels { m.labels[key.string ?? ""] = value.string ?? "" }
            }
            if let annotations = metadata["annotations"]?.mapping {
                for (key, value) in annotations { m.annotations[key.string ?? ""] = value.string ?? "" }
            }
            if let finalizers = metadata["finalizers"]?.sequence { m.finalizers = finalizers.compactMap(\.string) }
            var spec = Spec()
            if let node = mapping["spec"] {
                spec.yamlSpec = node.scalar != nil ? (node.string ?? "") : try Yams.serialize(node: node)
            }
            resources.append(Resource(metadata: m, spec: spec))
        }
        return resources
    }

    /// Reads a dotted path (`{.a.b}` or `a.b`) in a YAML spec, for print columns.
    public static func lookup(_ path: String, in yamlSpec: String) -> String {
        var keys = path
        if keys.hasPrefix("{"), keys.hasSuffix("}") { keys = String(keys.dropFirst().dropLast()) }
        guard var node = try? Yams.compose(yaml: yamlSpec) else { return "" }
        for key in keys.split(separator: ".") {
            guard let next = node.mapping?[Node(String(key))] else { return "" }
            node = next
        }
        if let scalar = node.string { return scalar }
        // A list of scalars reads best on one line in a table cell.
        if let sequence = node.sequence, sequence.allSatisfy({ $0.string != nil }) {
            return sequence.compactMap(\.string).joined(separator: ",")
        }
        return (try? Yams.serialize(node: node).trimmingCharacters(in: .whitespacesAndNewlines)) ?? ""
    }

    /// The protobuf specs of the meta namespace's own types, shown as YAML.
    static func metaSpec(_ resource: Resource) -> Node? {
        guard resource.metadata.namespace == "meta" else { return nil }
        if resource.metadata.type == "ResourceDefinitions.meta.cosi.dev",
           let spec = try? Meta.ResourceDefinitionSpec(serializedBytes: resource.spec.protoSpec) {
            var pairs: [(Node, Node)] = [
                ("resourceType", Node(spec.resourceType)), ("displayType", Node(spec.displayType)),
                ("defaultNamespace", Node(spec.defaultNamespace)),
                ("aliases", Node(spec.aliases.map { Node($0) })), ("allAliases", Node(spec.allAliases.map { Node($0) })),
            ]
            if !spec.printColumns.isEmpty {
                pairs.append(("printColumns", Node(spec.printColumns.map { mapping([("name", Node($0.name)), ("jsonPath", Node($0.jsonPath))]) })))
            }
            pairs.append(("sensitivity", Node(spec.sensitivity == .sensitive ? "sensitive" : "non-sensitive")))
            return Node(pairs)
        }
        if resource.metadata.type == "Namespaces.meta.cosi.dev", let spec = try? Meta.NamespaceSpec(serializedBytes: resource.spec.protoSpec) {
            return mapping([("description", Node(spec.description))])
        }
        return nil
    }

    static func mapping(_ pairs: [(Node, Node)]) -> Node { Node(pairs) }

    /// A resource as a JSON-ready object (the same content as the YAML document).
    public static func jsonObject(_ resource: Resource, event: String? = nil) throws -> Any {
        var object = sanitize(try Yams.load(yaml: try encode(resource, event: event)) ?? [:]) as? [String: Any] ?? [:]
        // Versions are strings in COSI, even when they look like numbers.
        if var metadata = object["metadata"] as? [String: Any] {
            metadata["version"] = resource.metadata.version
            object["metadata"] = metadata
        }
        return object
    }

    /// Turns what YAML parsing produced into values JSONSerialization accepts.
    static func sanitize(_ value: Any) -> Any {
        switch value {
        case let map as [String: Any]: return map.mapValues(sanitize)
        case let map as [AnyHashable: Any]: return Dictionary(uniqueKeysWithValues: map.map { ("\($0.key)", sanitize($0.value)) })
        case let list as [Any]: return list.map(sanitize)
        case let date as Date:
            let formatter = ISO8601DateFormatter()
            return formatter.string(from: date)
        case let data as Data: return data.base64EncodedString()
        case is NSNull: return NSNull()
        case let string as String: return string
        case let bool as Bool: return bool
        case let int as Int: return int
        case let double as Double: return double
        default: return "\(value)"
        }
    }

    static func sortedMapping(_ map: [String: String]) -> Node {
        Node(map.keys.sorted().map { (Node($0), Node(map[$0]!)) })
    }

    static func iso8601(_ timestamp: Timestamp) -> String {
        let date = Date(timeIntervalSince1970: TimeInterval(timestamp.seconds) + TimeInterval(timestamp.nanos) / 1e9)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}
