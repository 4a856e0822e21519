import ArgumentParser
import CosiMessages
import Foundation
import Yams

/// How `cosictl get` prints resources (`-o`).
public enum OutputFormat: Sendable, ExpressibleByArgument, Equatable {
    /// Aligned columns: namespace, type, id, version and the type's print columns.
    case table
    /// The table with phase, owner, created, updated and labels.
    case wide
    /// YAML: one document per resource (`---` between), which `apply -f` reads back.
    case yaml
    /// JSON: one object for one resource, `{"items": [...]}` for a list; one object per line
    /// while watching.
    case json
    /// `type/id` per resource.
    case name
    /// A kubectl JSONPath template, evaluated against what `-o json` prints.
    case jsonpath(JSONPathTemplate)

    public init?(argument: String) {
        switch argument {
        case "table": self = .table
        case "wide": self = .wide
        case "yaml": self = .yaml
        case "json": self = .json
        case "name": self = .name
        default:
            for prefix in ["jsonpath=", "jsonpath:"] where argument.hasPrefix(prefix) {
                guard let template = try? JSONPathTemplate(String(argument.dropFirst(prefix.count))) else { return nil }
                self = .jsonpath(template)
                return
            }
            return nil
        }
    }

    public static var allValueStrings: [String] { ["table", "wide", "yaml", "json", "name", "jsonpath=TEMPLATE"] }

    public static func == (lhs: OutputFormat, rhs: OutputFormat) -> Bool {
        switch (lhs, rhs) {
        case (.table, .table), (.wide, .wide), (.yaml, .yaml), (.json, .json), (.name, .name), (.jsonpath, .jsonpath): true
        default: false
        }
    }

    /// Parses `-o`, with the reason when it is not a format.
    static func parse(_ text: String) throws -> OutputFormat {
        if let format = OutputFormat(argument: text) { return format }
        for prefix in ["jsonpath=", "jsonpath:"] where text.hasPrefix(prefix) {
            do { _ = try JSONPathTemplate(String(text.dropFirst(prefix.count))) } catch { throw ValidationError("-o \(text): \(error)") }
        }
        throw ValidationError("-o \(text): choose table, wide, yaml, json, name or jsonpath=TEMPLATE")
    }
}

/// A table whose column widths, once set by a header and the first rows, stay: rows printed later
/// (watch events) line up with the header.
struct TableWriter {
    private(set) var widths: [Int] = []

    /// Prints `header` and `rows`, setting the widths; `expected` rows (not printed) widen the
    /// columns for cells known to come (a watch's namespace and type).
    mutating func start(_ header: [String], _ rows: [[String]], expected: [[String]] = []) {
        widths = header.map(\.count)
        for row in rows + expected { widen(row) }
        if let capture = Output.capture {
            // One node of --nodes: the rows join the other nodes' in one table.
            capture.append(.table([header] + rows))
            return
        }
        for row in [header] + rows { out(line(row)) }
    }

    /// Sets the widths for `rows` without printing.
    mutating func measure(_ rows: [[String]]) {
        widths = rows.first?.map(\.count) ?? []
        for row in rows { widen(row) }
    }

    /// Prints more rows at the widths set (a longer cell pushes the rest of its row only).
    func more(_ rows: [[String]]) {
        for row in rows { out(line(row)) }
    }

    private mutating func widen(_ row: [String]) {
        for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
    }

    func line(_ row: [String]) -> String {
        var out = ""
        for (index, cell) in row.enumerated() {
            if index == row.count - 1 { out += cell; break }
            let width = index < widths.count ? widths[index] : cell.count
            out += cell.padding(toLength: max(width, cell.count) + 3, withPad: " ", startingAt: 0)
        }
        while out.last == " " { out.removeLast() }
        return out
    }
}

/// Prints resources in one ``OutputFormat``.
struct Printer {
    var format: OutputFormat
    var catalog: TypeCatalog?
    var showLabels = false
    /// Whether the resources shown are of one type (the type's print columns apply).
    var definition: Meta.ResourceDefinitionSpec?
    /// The namespace and type a watch follows.
    var expectedNamespace: String?
    var expectedType: String?
    /// Under `--nodes`: a NODE column first, and `node` in YAML and JSON.
    var nodeColumn = false
    /// The widest node name, so watch rows line up.
    var nodeWidth = 0

    var columns: [Meta.ResourceDefinitionSpec.PrintColumn] { definition?.printColumns ?? [] }

    private var wide: Bool { format == .wide }

    func header(watching: Bool) -> [String] {
        var header = (nodeColumn ? ["NODE"] : []) + (watching ? ["*"] : []) + ["NAMESPACE", "TYPE", "ID", "VERSION"]
        if watching || wide { header.append("PHASE") }
        header += columns.map { $0.name.uppercased() }
        if wide { header += ["OWNER", "CREATED", "UPDATED"] }
        if wide || showLabels { header.append("LABELS") }
        return header
    }

    func row(_ resource: Resource, marker: String?, watching: Bool, node: String? = nil) -> [String] {
        let m = resource.metadata
        var cells = (node.map { [$0] } ?? []) + (marker.map { [$0] } ?? []) + [m.namespace, m.type, m.id, m.version]
        if watching || wide { cells.append(m.phase) }
        if !columns.isEmpty {
            let spec = ResourceYAML.json(resource)["spec"] ?? .null
            cells += columns.map { column in
                guard let template = try? JSONPathTemplate.path(column.jsonPath) else { return "" }
                return template.values(spec).map(\.text).joined(separator: ",")
            }
        }
        if wide {
            cells += [m.owner.isEmpty ? "-" : m.owner, m.created.map(ResourceYAML.iso8601) ?? "", m.updated.map(ResourceYAML.iso8601) ?? ""]
        }
        if wide || showLabels { cells.append(m.labels.isEmpty ? "-" : m.labels.keys.sorted().map { "\($0)=\(m.labels[$0]!)" }.joined(separator: ",")) }
        return cells.map { $0.isEmpty ? "" : $0 }
    }

    static func name(_ resource: Resource) -> String {
        resource.metadata.type.lowercased() + "/" + resource.metadata.id
    }

    /// Prints a list (`single`: the one resource a `get TYPE ID` asked for).
    ///
    /// `nodes`, under `--nodes`, gives each resource's node (`single` then still prints a list:
    /// one resource per node).
    func printList(_ resources: [Resource], single: Bool = false, table: inout TableWriter, watching: Bool = false, nodes: [String]? = nil) throws {
        func extra(_ index: Int) -> [(String, String)] { nodes.map { [("node", $0[index])] } ?? [] }
        let one = single && resources.count == 1 && nodes == nil
        switch format {
        case .yaml:
            if !resources.isEmpty {
                out(try resources.indices.map { try Yams.serialize(node: ResourceYAML.node(resources[$0], extra: extra($0))) }.joined(separator: "---\n"), terminator: "")
            }
        case .json where watching:
            for index in resources.indices { out(ResourceYAML.json(resources[index], extra: extra(index)).serialized(indent: 0)) }
        case .json:
            let value: JSONValue = one ? ResourceYAML.json(resources[0]) : .object([("items", .array(resources.indices.map { ResourceYAML.json(resources[$0], extra: extra($0)) }))])
            out(value.serialized())
        case .name:
            for index in resources.indices { out((nodes.map { $0[index] + "   " } ?? "") + Self.name(resources[index])) }
        case .jsonpath(let template) where watching:
            for index in resources.indices { out(template.render(ResourceYAML.json(resources[index], extra: extra(index)))) }
        case .jsonpath(let template):
            let value: JSONValue = one ? ResourceYAML.json(resources[0]) : .object([("items", .array(resources.indices.map { ResourceYAML.json(resources[$0], extra: extra($0)) }))])
            out(template.render(value))
        case .table, .wide:
            // While watching, rows come later: the columns are made wide enough for the kind's
            // namespace and type, and ids and versions of ordinary lengths.
            let expected = watching
                ? [(nodeColumn ? [String(repeating: " ", count: nodeWidth)] : []) + ["", expectedNamespace ?? "", expectedType ?? "", String(repeating: " ", count: 12), "       "]]
                : []
            table.start(header(watching: watching), resources.indices.map { row(resources[$0], marker: watching ? " " : nil, watching: watching, node: nodes?[$0]) }, expected: expected)
        }
        fflush(nil)
    }

    /// Under `--nodes` while watching: one node's bootstrap rows, at the widths the header set.
    func printRows(_ resources: [Resource], node: String, table: TableWriter) throws {
        switch format {
        case .table, .wide:
            table.more(resources.map { row($0, marker: " ", watching: true, node: node) })
        default:
            var table = table
            try printList(resources, table: &table, watching: true, nodes: resources.map { _ in node })
        }
        fflush(nil)
    }

    /// Prints one watch event (created, updated, destroyed).
    func printEvent(_ event: Event, table: TableWriter, node: String? = nil) throws {
        guard let resource = event.resource else { return }
        let name: String
        switch event.type {
        case .created: name = "created"
        case .destroyed: name = "destroyed"
        case .updated: name = "updated"
        default: return
        }
        let extra = (node.map { [("node", $0)] } ?? []) + [("event", name)]
        switch format {
        case .yaml:
            out("---")
            out(try Yams.serialize(node: ResourceYAML.node(resource, extra: extra)), terminator: "")
        case .json:
            out(ResourceYAML.json(resource, extra: extra).serialized(indent: 0))
        case .name:
            out((node.map { $0 + "   " } ?? "") + "\(name) \(Self.name(resource))")
        case .jsonpath(let template):
            out(template.render(ResourceYAML.json(resource, extra: extra)))
        case .table, .wide:
            let marker = event.type == .created ? "+" : event.type == .destroyed ? "-" : " "
            table.more([row(resource, marker: marker, watching: true, node: node)])
        }
        fflush(nil)
    }
}

/// Sorts resources by a JSONPath expression over their JSON (`--sort-by .spec.mtu`,
/// `{.metadata.updated}`); numbers compare as numbers, anything else as text, missing values
/// first. Shorthands: `id`, `version`, `created`, `updated`, `namespace`, `type`, `phase`.
func sortResources(_ resources: [Resource], by expression: String) throws -> [Resource] {
    let shorthands = ["id", "version", "created", "updated", "namespace", "type", "phase", "owner"]
    let path = shorthands.contains(expression) ? ".metadata.\(expression)" : expression
    let template: JSONPathTemplate
    do { template = try JSONPathTemplate.path(path) } catch { throw ValidationError("--sort-by \(expression): \(error)") }
    let keyed = resources.map { resource -> (Resource, JSONValue?) in (resource, template.values(ResourceYAML.json(resource)).first) }
    func less(_ a: JSONValue?, _ b: JSONValue?) -> Bool {
        guard let a else { return b != nil }
        guard let b else { return false }
        if let x = Double(a.text), let y = Double(b.text), path.hasSuffix("version") || { if case .number = a { true } else { false } }() {
            return x < y
        }
        return a.text < b.text
    }
    return keyed.enumerated().sorted { lhs, rhs in
        if less(lhs.element.1, rhs.element.1) { return true }
        if less(rhs.element.1, lhs.element.1) { return false }
        return lhs.offset < rhs.offset
    }.map(\.element.0)
}

/// Aligned columns, the first row a header.
func printTable(_ rows: [[String]]) {
    guard let first = rows.first else { return }
    var table = TableWriter()
    table.start(first, Array(rows.dropFirst()))
}
