import CosiClient
import CosiMessages
import Foundation

/// The resource types a server defines (its ResourceDefinitions), and how a name typed on the
/// command line resolves to one of them.
///
/// A name resolves, case-insensitively, to the type whose `resource_type` it is, else to the one
/// type that lists it among its aliases (`aliases` or `all_aliases`). A name two types list is
/// ambiguous: an error naming the candidates. A name no type lists is an error naming the
/// closest defined types. A full type name (`Name.suffix`) that no definition lists is an
/// *undefined* type: commands that act on one resource use it as written, listing commands use it
/// only when it has resources.
public struct TypeCatalog: Sendable {
    public let definitions: [Meta.ResourceDefinitionSpec]

    public init(definitions: [Meta.ResourceDefinitionSpec]) {
        self.definitions = definitions.sorted { $0.resourceType < $1.resourceType }
    }

    /// The server's definitions.
    public static func load(_ client: CosiClient) async throws -> TypeCatalog {
        let resources = try await client.list(namespace: MetaNamespace.namespace, type: MetaNamespace.resourceDefinitionType)
        let catalog = TypeCatalog(definitions: resources.compactMap { try? Meta.ResourceDefinitionSpec(serializedBytes: $0.spec.protoSpec) })
        TypeCache.store(catalog.completionNames)
        return catalog
    }

    /// What a name resolved to.
    public enum Resolution: Sendable {
        /// A defined type.
        case defined(Meta.ResourceDefinitionSpec)
        /// A full type name that no definition lists.
        case undefined(String)

        public var type: String {
            switch self {
            case .defined(let definition): definition.resourceType
            case .undefined(let type): type
            }
        }

        public var definition: Meta.ResourceDefinitionSpec? {
            if case .defined(let definition) = self { return definition }
            return nil
        }

        /// The namespace a command uses when none is given.
        public var defaultNamespace: String {
            guard let definition, !definition.defaultNamespace.isEmpty else { return "default" }
            return definition.defaultNamespace
        }
    }

    /// Every name a definition answers to, lower-cased: its type, then its aliases.
    static func names(_ definition: Meta.ResourceDefinitionSpec) -> [String] {
        var seen = Set<String>()
        return ([definition.resourceType] + definition.aliases + definition.allAliases)
            .map { $0.lowercased() }
            .filter { seen.insert($0).inserted }
    }

    /// Resolves `name`.
    ///
    /// - Throws: ``CLIError`` when the name is ambiguous, or is neither defined nor a full type name.
    public func resolve(_ name: String) throws(CLIError) -> Resolution {
        let wanted = name.lowercased()
        if let exact = definitions.first(where: { $0.resourceType.lowercased() == wanted }) { return .defined(exact) }
        let matching = definitions.filter { Self.names($0).contains(wanted) }
        if matching.count == 1 { return .defined(matching[0]) }
        if matching.count > 1 {
            let candidates = matching.map { "\($0.resourceType) (\(shortest($0)))" }.joined(separator: ", ")
            throw CLIError("\"\(name)\" is ambiguous: it names \(candidates); use the full type name or a distinct alias")
        }
        if Self.isFullTypeName(name) { return .undefined(name) }
        throw unknown(name)
    }

    /// Resolves `name`, refusing an undefined type.
    public func resolveDefined(_ name: String) throws(CLIError) -> Meta.ResourceDefinitionSpec {
        switch try resolve(name) {
        case .defined(let definition): return definition
        case .undefined: throw unknown(name)
        }
    }

    /// The error for a name no definition lists, with the closest defined types.
    public func unknown(_ name: String) -> CLIError {
        let suggestions = suggest(name)
        if suggestions.isEmpty {
            return CLIError("no resource type \"\(name)\" is defined (`cosictl get rd` lists the types)")
        }
        return CLIError("no resource type \"\(name)\"; did you mean \(suggestions.joined(separator: " or "))?")
    }

    /// Up to three defined types close to `name`, by their plural lower-case names.
    public func suggest(_ name: String) -> [String] {
        let wanted = name.lowercased()
        var scored: [(distance: Int, name: String)] = []
        for definition in definitions {
            let display = Self.plural(definition)
            let best = Self.names(definition).map { candidate -> Int in
                // A typed prefix of a type's name counts as close.
                if candidate.hasPrefix(wanted), wanted.count >= 3 { return 1 }
                return editDistance(wanted, candidate)
            }.min() ?? Int.max
            let allowed = max(2, wanted.count / 3)
            if best <= allowed { scored.append((best, display)) }
        }
        return scored.sorted { ($0.distance, $0.name) < ($1.distance, $1.name) }.prefix(3).map(\.name)
    }

    /// `HostnameSpecs.net.cosi.dev` -> `hostnamespecs`.
    static func plural(_ definition: Meta.ResourceDefinitionSpec) -> String {
        String(definition.resourceType.prefix { $0 != "." }).lowercased()
    }

    /// The shortest alias of a definition (what `get rd` shows first).
    func shortest(_ definition: Meta.ResourceDefinitionSpec) -> String {
        Self.names(definition).min { $0.count < $1.count } ?? definition.resourceType
    }

    /// `Name.suffix` with a CamelCase plural name and a lower-case dotted suffix, as state.md
    /// requires of a type.
    public static func isFullTypeName(_ name: String) -> Bool {
        guard let dot = name.firstIndex(of: ".") else { return false }
        let head = name[..<dot], suffix = name[name.index(after: dot)...]
        return head.wholeMatch(of: /[A-Z][A-Za-z0-9-]+/) != nil && head.hasSuffix("s")
            && suffix.wholeMatch(of: /[a-z][a-z0-9-]+(\.[a-z][a-z0-9-]+)*/) != nil
    }

    /// Every name a shell may complete: each type's plural name and aliases.
    public var completionNames: [String] {
        definitions.flatMap { [$0.resourceType] + Self.names($0) }.reduce(into: [String]()) { names, name in
            if !names.contains(name) { names.append(name) }
        }
    }

    /// The status type that reports a spec type (`HostnameSpecs.net.cosi.dev` ->
    /// `HostnameStatuses.net.cosi.dev`), when it is defined.
    public func statusType(of type: String) -> Meta.ResourceDefinitionSpec? {
        guard let range = type.range(of: "Specs.") else { return nil }
        let status = type.replacingCharacters(in: range, with: "Statuses.")
        return definitions.first { $0.resourceType == status }
    }
}

/// The type names of the last server cosictl talked to, for shell completion (which must answer
/// without a connection): `$XDG_CACHE_HOME/cosi/resource-types` or `~/.cache/cosi/resource-types`.
enum TypeCache {
    static var path: String {
        let environment = ProcessInfo.processInfo.environment
        let base = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory() + "/.cache"
        return base + "/cosi/resource-types"
    }

    /// The built-in types' names, when nothing is cached yet.
    static let fallback = ["resourcedefinitions", "rd", "namespaces", "ns"]

    static func store(_ names: [String]) {
        let text = names.joined(separator: "\n") + "\n"
        guard (try? String(contentsOfFile: path, encoding: .utf8)) != text else { return }
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    static func names() -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return fallback }
        return text.split(separator: "\n").map(String.init)
    }
}

/// Levenshtein distance, for suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
