import CosiMessages
import Foundation
import NIOCore
import Yams

/// Resources as YAML documents: `metadata` (keys in a fixed order, empty ones left out) and
/// `spec` (the resource's `yaml_spec`, as YAML).
public enum ResourceYAML {
    public struct FormatError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The metadata of a resource as YAML: keys in a fixed order, empty ones left out, every
    /// string quoted where YAML would read it as something else (a version `2`, a label `007`).
    static func metadataNode(_ m: Metadata) -> Node {
        var metadata: [(Node, Node)] = [
            ("namespace", yamlString(m.namespace)), ("type", yamlString(m.type)), ("id", yamlString(m.id)), ("version", yamlString(m.version)),
        ]
        if !m.owner.isEmpty { metadata.append(("owner", yamlString(m.owner))) }
        if !m.phase.isEmpty { metadata.append(("phase", yamlString(m.phase))) }
        if let created = m.created { metadata.append(("created", Node(iso8601(created)))) }
        if let updated = m.updated { metadata.append(("updated", Node(iso8601(updated)))) }
        if !m.labels.isEmpty { metadata.append(("labels", sortedMapping(m.labels))) }
        if !m.annotations.isEmpty { metadata.append(("annotations", sortedMapping(m.annotations))) }
        if !m.finalizers.isEmpty { metadata.append(("finalizers", Node(m.finalizers.map(yamlString)))) }
        return Node(metadata)
    }

    /// A resource's spec as YAML: the meta types' protobuf specs as fields, a YAML spec as it is.
    static func specNode(_ resource: Resource) -> Node {
        if let meta = metaSpec(resource) { return meta }
        if resource.spec.yamlSpec.isEmpty {
            return resource.spec.protoSpec.isEmpty ? Node("") : Node("<\(resource.spec.protoSpec.count) bytes of protobuf>")
        }
        return (try? Yams.compose(yaml: resource.spec.yamlSpec)) ?? Node(resource.spec.yamlSpec)
    }

    /// One document for a resource; `extra` keys (`node`, `event`) come first.
    public static func node(_ resource: Resource, extra: [(String, String)] = []) -> Node {
        var document: [(Node, Node)] = extra.map { (Node($0.0), yamlString($0.1)) }
        document.append(("metadata", metadataNode(resource.metadata)))
        document.append(("spec", specNode(resource)))
        return Node(document)
    }

    public static func encode(_ resource: Resource, event: String? = nil) throws -> String {
        try Yams.serialize(node: node(resource, extra: event.map { [("event", $0)] } ?? []))
    }

    /// Several resources as one multi-document stream, which `apply -f` reads back.
    public static func encode(_ resources: [Resource]) throws -> String {
        try resources.map { try encode($0) }.joined(separator: "---\n")
    }

    /// The spec as text in a canonical form (re-serialized from its parse), for comparing specs.
    static func canonicalSpec(_ spec: Spec) -> String {
        guard !spec.yamlSpec.isEmpty, let node = try? Yams.compose(yaml: spec.yamlSpec), let text = try? Yams.serialize(node: node) else { return spec.yamlSpec }
        return text
    }

    /// Reads one or more `---`-separated documents.
    public static func decode(_ text: String) throws -> [Resource] {
        var resources: [Resource] = []
        for (index, document) in try Yams.compose_all(yaml: text).enumerated() {
            let where_ = "document \(index + 1)"
            guard let mapping = document.mapping else { throw FormatError(description: "\(where_) is not a mapping") }
            for key in mapping.keys where !["metadata", "spec", "event", "node"].contains(key.string ?? "") {
                throw FormatError(description: "\(where_): unknown key \"\(key.string ?? "")\" (a document has metadata and spec)")
            }
            guard let metadata = mapping["metadata"]?.mapping else { throw FormatError(description: "\(where_) has no metadata mapping") }
            let known = ["namespace", "type", "id", "version", "owner", "phase", "created", "updated", "labels", "annotations", "finalizers"]
            for key in metadata.keys where !known.contains(key.string ?? "") {
                throw FormatError(description: "\(where_): unknown metadata key \"\(key.string ?? "")\" (known: \(known.joined(separator: ", ")))")
            }
            func string(_ key: String) throws -> String {
                guard let node = metadata[Node(key)] else { return "" }
                guard node.scalar != nil, let value = node.string else { throw FormatError(description: "\(where_): metadata.\(key) must be a string") }
                return value
            }
            func map(_ key: String) throws -> [String: String] {
                guard let node = metadata[Node(key)] else { return [:] }
                guard let pairs = node.mapping else { throw FormatError(description: "\(where_): metadata.\(key) must be a mapping of strings") }
                var result: [String: String] = [:]
                for (key2, value) in pairs {
                    guard let k = key2.string, value.scalar != nil, let v = value.string else {
                        throw FormatError(description: "\(where_): metadata.\(key) must be a mapping of strings")
                    }
                    result[k] = v
                }
                return result
            }
            var m = Metadata(namespace: try string("namespace"), type: try string("type"), id: try string("id"), version: try string("version"), owner: try string("owner"), phase: try string("phase"))
            guard !m.type.isEmpty, !m.id.isEmpty else { throw FormatError(description: "\(where_): metadata.type and metadata.id are required") }
            m.labels = try map("labels")
            m.annotations = try map("annotations")
            if let finalizers = metadata["finalizers"] {
                guard let list = finalizers.sequence, list.allSatisfy({ $0.scalar != nil }) else { throw FormatError(description: "\(where_): metadata.finalizers must be a list of strings") }
                m.finalizers = list.compactMap(\.string)
            }
            var spec = Spec()
            if let node = mapping["spec"] {
                if m.type == MetaNamespace.resourceDefinitionType || m.type == MetaNamespace.namespaceType, m.namespace.isEmpty || m.namespace == MetaNamespace.namespace {
                    spec.protoSpec = try metaSpec(type: m.type, node, where_)
                } else if node.scalar != nil {
                    spec.yamlSpec = node.string ?? ""
                } else {
                    spec.yamlSpec = try Yams.serialize(node: node)
                }
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
        // As `decode` reads them: these types in meta, or with the namespace left out.
        guard resource.metadata.namespace == MetaNamespace.namespace || resource.metadata.namespace.isEmpty else { return nil }
        if resource.metadata.type == "ResourceDefinitions.meta.cosi.dev",
           let spec = try? Meta.ResourceDefinitionSpec(serializedBytes: resource.spec.protoSpec) {
            var pairs: [(Node, Node)] = [
                ("resourceType", yamlString(spec.resourceType)), ("displayType", yamlString(spec.displayType)),
                ("defaultNamespace", yamlString(spec.defaultNamespace)),
                ("aliases", Node(spec.aliases.map(yamlString))), ("allAliases", Node(spec.allAliases.map(yamlString))),
            ]
            if !spec.printColumns.isEmpty {
                pairs.append(("printColumns", Node(spec.printColumns.map { mapping([("name", yamlString($0.name)), ("jsonPath", yamlString($0.jsonPath))]) })))
            }
            pairs.append(("sensitivity", Node(spec.sensitivity == .sensitive ? "sensitive" : "non-sensitive")))
            return Node(pairs)
        }
        if resource.metadata.type == "Namespaces.meta.cosi.dev", let spec = try? Meta.NamespaceSpec(serializedBytes: resource.spec.protoSpec) {
            return mapping([("description", yamlString(spec.description))])
        }
        return nil
    }

    /// The protobuf spec of a meta type from its YAML (what ``metaSpec(_:)`` shows), so a
    /// ResourceDefinition or Namespace printed with `-o yaml` can be applied back.
    static func metaSpec(type: String, _ node: Node, _ where_: String) throws -> [UInt8] {
        guard let fields = node.mapping else { throw FormatError(description: "\(where_): the spec of a \(type) is a mapping") }
        func string(_ key: String) throws -> String {
            guard let value = fields[Node(key)] else { return "" }
            guard value.scalar != nil, let text = value.string else { throw FormatError(description: "\(where_): spec.\(key) must be a string") }
            return text
        }
        func strings(_ key: String) throws -> [String] {
            guard let value = fields[Node(key)] else { return [] }
            guard let list = value.sequence, list.allSatisfy({ $0.scalar != nil }) else { throw FormatError(description: "\(where_): spec.\(key) must be a list of strings") }
            return list.compactMap(\.string)
        }
        func check(_ known: [String]) throws {
            for key in fields.keys where !known.contains(key.string ?? "") {
                throw FormatError(description: "\(where_): unknown field spec.\(key.string ?? "") of a \(type) (known: \(known.joined(separator: ", ")))")
            }
        }
        if type == MetaNamespace.namespaceType {
            try check(["description"])
            return Array(buffer: Meta.NamespaceSpec(description: try string("description")).serializedBytes())
        }
        try check(["resourceType", "displayType", "defaultNamespace", "aliases", "allAliases", "printColumns", "sensitivity"])
        var spec = Meta.ResourceDefinitionSpec(
            resourceType: try string("resourceType"), displayType: try string("displayType"), defaultNamespace: try string("defaultNamespace"),
            aliases: try strings("aliases"), allAliases: try strings("allAliases")
        )
        if let columns = fields[Node("printColumns")] {
            guard let list = columns.sequence else { throw FormatError(description: "\(where_): spec.printColumns must be a list of {name, jsonPath}") }
            spec.printColumns = try list.map { column in
                guard let pair = column.mapping, let name = pair[Node("name")]?.string, let path = pair[Node("jsonPath")]?.string else {
                    throw FormatError(description: "\(where_): spec.printColumns must be a list of {name, jsonPath}")
                }
                return Meta.ResourceDefinitionSpec.PrintColumn(name: name, jsonPath: path)
            }
        }
        switch try string("sensitivity") {
        case "", "non-sensitive": spec.sensitivity = .nonSensitive
        case "sensitive": spec.sensitivity = .sensitive
        case let other: throw FormatError(description: "\(where_): spec.sensitivity must be sensitive or non-sensitive, not \"\(other)\"")
        }
        return Array(buffer: spec.serializedBytes())
    }

    static func mapping(_ pairs: [(Node, Node)]) -> Node { Node(pairs) }

    /// A resource as JSON: `extra` keys (`node`, `event`) first, then metadata (strings stay
    /// strings, the version too) and spec.
    public static func json(_ resource: Resource, extra: [(String, String)] = []) -> JSONValue {
        let m = resource.metadata
        var metadata: [(String, JSONValue)] = [
            ("namespace", .string(m.namespace)), ("type", .string(m.type)), ("id", .string(m.id)), ("version", .string(m.version)),
        ]
        if !m.owner.isEmpty { metadata.append(("owner", .string(m.owner))) }
        if !m.phase.isEmpty { metadata.append(("phase", .string(m.phase))) }
        if let created = m.created { metadata.append(("created", .string(iso8601(created)))) }
        if let updated = m.updated { metadata.append(("updated", .string(iso8601(updated)))) }
        if !m.labels.isEmpty { metadata.append(("labels", .strings(m.labels))) }
        if !m.annotations.isEmpty { metadata.append(("annotations", .strings(m.annotations))) }
        if !m.finalizers.isEmpty { metadata.append(("finalizers", .array(m.finalizers.map(JSONValue.string)))) }
        var object: [(String, JSONValue)] = extra.map { ($0.0, .string($0.1)) }
        object.append(("metadata", .object(metadata)))
        let spec = specNode(resource)
        object.append(("spec", spec.scalar.map { _ in .string(spec.string ?? "") } ?? .from(spec)))
        return .object(object)
    }

    static func sortedMapping(_ map: [String: String]) -> Node {
        Node(map.keys.sorted().map { (yamlString($0), yamlString(map[$0]!)) })
    }

    static func iso8601(_ timestamp: Timestamp) -> String {
        let date = Date(timeIntervalSince1970: TimeInterval(timestamp.seconds) + TimeInterval(timestamp.nanos) / 1e9)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}
