import CosiMessages
import NIOCore

/// The `meta` namespace's built-in resources and the rules for writing to it (state.md, "The meta
/// namespace"). Its names are in CosiMessages, so clients need not link the engine.
extension MetaNamespace {
    /// What the server registers at start, when missing: the definitions of the two meta types
    /// (brought up to date when an older server stored them differently) and the namespace
    /// "meta" itself.
    static func builtIns() -> [Resource] {
        // Namespaces has one capital, so the derivation gives no short alias; it is registered
        // with "ns" explicitly (as state.md lists it).
        let definitions = [
            try! definition(Meta.ResourceDefinitionSpec(
                resourceType: namespaceType, defaultNamespace: namespace, aliases: ["namespace", "ns"],
                printColumns: [.init(name: "Description", jsonPath: "{.description}")]
            )),
            try! definition(Meta.ResourceDefinitionSpec(
                resourceType: resourceDefinitionType, defaultNamespace: namespace,
                printColumns: [.init(name: "Aliases", jsonPath: "{.aliases}"), .init(name: "Default Namespace", jsonPath: "{.defaultNamespace}")]
            )),
            // changes.md: every change, written by cosid.
            try! definition(Meta.ResourceDefinitionSpec(
                resourceType: changesType, defaultNamespace: namespace,
                printColumns: [
                    .init(name: "Phase", jsonPath: "{.phase}"), .init(name: "Identity", jsonPath: "{.identity}"),
                    .init(name: "Time", jsonPath: "{.time}"), .init(name: "Deadline", jsonPath: "{.deadline}"),
                    .init(name: "Reason", jsonPath: "{.reason}"),
                ]
            )),
        ]
        let meta = Resource(
            metadata: Metadata(namespace: namespace, type: namespaceType, id: namespace),
            spec: Spec(protoSpec: Array(buffer: Meta.NamespaceSpec(description: "resource types and namespaces").serializedBytes()))
        )
        return definitions + [meta]
    }

    /// A ResourceDefinition resource for `spec`, with the derived fields filled.
    public static func definition(_ spec: Meta.ResourceDefinitionSpec) throws(StateError) -> Resource {
        let filled = try complete(spec)
        return Resource(
            metadata: Metadata(namespace: namespace, type: resourceDefinitionType, id: filled.resourceType.lowercased()),
            spec: Spec(protoSpec: Array(buffer: filled.serializedBytes()))
        )
    }

    /// Checks a resource written to the meta namespace and fills what the server derives.
    static func prepare(_ resource: Resource, field: String) throws(StateError) -> Resource {
        guard resource.metadata.namespace == namespace, resource.metadata.type == resourceDefinitionType else { return resource }
        let spec: Meta.ResourceDefinitionSpec
        do {
            spec = try Meta.ResourceDefinitionSpec(serializedBytes: resource.spec.protoSpec)
        } catch {
            throw StateError(.invalidArgument, "\(field).spec.proto_spec is not a ResourceDefinitionSpec")
        }
        let filled = try complete(spec, field: "\(field).spec")
        guard resource.metadata.id == filled.resourceType.lowercased() else {
            throw StateError(.invalidArgument, "\(field).metadata.id must be the resource_type in lower case (\(filled.resourceType.lowercased())), not \(resource.metadata.id)")
        }
        var prepared = resource
        prepared.spec.protoSpec = Array(buffer: filled.serializedBytes())
        return prepared
    }

    /// Validates the naming rules and fills display_type, aliases and all_aliases when empty.
    static func complete(_ spec: Meta.ResourceDefinitionSpec, field: String = "spec") throws(StateError) -> Meta.ResourceDefinitionSpec {
        let type = spec.resourceType
        guard let dot = type.firstIndex(of: ".") else {
            throw StateError(.invalidArgument, "\(field).resource_type \"\(type)\" must be Name.suffix, e.g. HostnameStatuses.net.cosi.dev")
        }
        let name = String(type[..<dot])
        let suffix = String(type[type.index(after: dot)...])
        guard name.wholeMatch(of: /[A-Z][A-Za-z0-9-]+/) != nil else {
            throw StateError(.invalidArgument, "\(field).resource_type: \"\(name)\" must be CamelCase ([A-Z][A-Za-z0-9-]+)")
        }
        guard name.hasSuffix("s") else {
            throw StateError(.invalidArgument, "\(field).resource_type: \"\(name)\" must be plural (end in s)")
        }
        guard suffix.wholeMatch(of: /[a-z][a-z0-9-]+(\.[a-z][a-z0-9-]+)*/) != nil else {
            throw StateError(.invalidArgument, "\(field).resource_type: suffix \"\(suffix)\" must be lower-case dot-separated words")
        }
        var filled = spec
        let singular = Self.singular(name)
        if filled.displayType.isEmpty { filled.displayType = singular }
        if filled.aliases.isEmpty {
            var aliases = [singular.lowercased()]
            let capitals = String(name.filter(\.isUppercase)).lowercased()
            if capitals.count >= 2 {
                aliases.append(capitals)
                if !capitals.hasSuffix("s") { aliases.append(capitals + "s") }
            }
            filled.aliases = aliases
        }
        if filled.allAliases.isEmpty {
            let plural = name.lowercased()
            let parts = suffix.split(separator: ".")
            var all = [plural]
            for count in 1..<max(parts.count, 1) {
                all.append(plural + "." + parts.prefix(count).joined(separator: "."))
            }
            filled.allAliases = all + filled.aliases
        }
        return filled
    }

    /// HostnameStatuses -> HostnameStatus, Policies -> Policy, Boxes -> Box, Namespaces -> Namespace.
    public static func singular(_ plural: String) -> String {
        if plural.hasSuffix("ies") { return String(plural.dropLast(3)) + "y" }
        for ending in ["ses", "xes", "zes", "ches", "shes"] where plural.hasSuffix(ending) {
            return String(plural.dropLast(2))
        }
        return String(plural.dropLast())
    }
}
