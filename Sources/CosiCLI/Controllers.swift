import ArgumentParser
import CosiClient
import CosiMessages
import Foundation
import Yams

/// A controller as cosid publishes it (`Controllers.meta.cosi.dev`, id = its name).
struct PublishedController {
    struct Input { var kind: String; var namespace: String; var type: String; var id: String? }
    struct Output { var kind: String; var type: String }

    var name: String
    var origin: String
    var identity: String
    var running: Bool
    var restarts: Int
    var lastError: String
    var inputs: [Input]
    var outputs: [Output]

    static let type = "Controllers.meta.cosi.dev"

    init(_ resource: Resource) throws {
        guard let spec = try Yams.load(yaml: resource.spec.yamlSpec) as? [String: Any] else {
            throw CLIError("\(resource.metadata.id): the controller status does not read as YAML")
        }
        func string(_ map: [String: Any], _ key: String) -> String { map[key].map { "\($0)" } ?? "" }
        name = string(spec, "name")
        origin = string(spec, "origin")
        identity = string(spec, "identity")
        running = spec["running"] as? Bool ?? false
        restarts = spec["restarts"] as? Int ?? 0
        lastError = string(spec, "lastError")
        inputs = (spec["inputs"] as? [[String: Any]] ?? []).map {
            Input(kind: string($0, "kind"), namespace: string($0, "namespace"), type: string($0, "type"), id: $0["id"].map { "\($0)" })
        }
        outputs = (spec["outputs"] as? [[String: Any]] ?? []).map { Output(kind: string($0, "kind"), type: string($0, "type")) }
    }

    static func all(_ client: CosiClient) async throws -> [PublishedController] {
        try await client.list(namespace: MetaNamespace.namespace, type: type).map(PublishedController.init)
    }
}

struct Controllers: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "List the registered controllers: local or remote, identity, running, restarts, last error.",
        discussion: "Example:\n  cosictl controllers\n  cosictl get Controllers.meta.cosi.dev --watch    # the same, as it changes"
    )
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        try await connection.eachNode { client in
            let controllers = try await PublishedController.all(client)
            let rows = controllers.map { c in
                [c.name, c.origin, c.identity.isEmpty ? "-" : c.identity, c.running ? "yes" : "no", "\(c.restarts)", c.lastError.isEmpty ? "-" : c.lastError]
            }
            printTable([["NAME", "ORIGIN", "IDENTITY", "RUNNING", "RESTARTS", "LAST ERROR"]] + rows)
        }
    }
}

struct Graph: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Print the controllers' dependency graph: a table, Graphviz DOT (--dot), or a PNG rendered by Graphviz.",
        discussion: """
        Edges are (controller, namespace, type, id, kind), outputs first.

        Examples:
          cosictl graph
          cosictl graph --dot > graph.dot
          cosictl graph -o png graph.png      # needs Graphviz's dot (Debian: apt-get install graphviz)
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print Graphviz DOT instead of a table.") var dot = false
    @Option(name: .shortAndLong, help: "Render to a file in this format (png).") var output: ImageFormat?
    @Argument(help: "The file to write with -o.") var file: String?

    enum ImageFormat: String, ExpressibleByArgument { case png }

    func validate() throws {
        if output != nil, file == nil { throw ValidationError("-o png needs a file name, e.g. cosictl graph -o png graph.png") }
    }

    func run() async throws {
        if try !connection.fleetNodes().isEmpty {
            guard file == nil, !dot else { throw ValidationError("graph --dot and -o png draw one node's graph: give one --endpoint") }
            try await connection.eachNode { client in
                let edges = Self.edges(try await PublishedController.all(client))
                printTable([["CONTROLLER", "EDGE", "NAMESPACE", "TYPE", "ID"]] + edges.map { [$0.controller, $0.kind, $0.namespace.isEmpty ? "*" : $0.namespace, $0.type, $0.id ?? "*"] })
            }
            return
        }
        let controllers = try await connection.withClient { try await PublishedController.all($0) }
        let edges = Self.edges(controllers)
        if let file {
            try Self.render(Self.dot(edges), to: file)
            out("wrote \(file)")
        } else if dot {
            out(Self.dot(edges), terminator: "")
        } else {
            printTable([["CONTROLLER", "EDGE", "NAMESPACE", "TYPE", "ID"]] + edges.map { [$0.controller, $0.kind, $0.namespace.isEmpty ? "*" : $0.namespace, $0.type, $0.id ?? "*"] })
        }
    }

    struct Edge { var controller: String; var kind: String; var namespace: String; var type: String; var id: String? }

    /// Every controller's outputs, then every controller's inputs.
    static func edges(_ controllers: [PublishedController]) -> [Edge] {
        let sorted = controllers.sorted { $0.name < $1.name }
        let outputs = sorted.flatMap { c in c.outputs.map { Edge(controller: c.name, kind: "output " + $0.kind, namespace: "", type: $0.type, id: nil) } }
        let inputs = sorted.flatMap { c in c.inputs.map { Edge(controller: c.name, kind: "input " + $0.kind, namespace: $0.namespace, type: $0.type, id: $0.id) } }
        return outputs + inputs
    }

    /// Controllers are boxes, resource kinds ellipses; inputs point at the controller, outputs away.
    static func dot(_ edges: [Edge]) -> String {
        func quoted(_ text: String) -> String { "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        var lines = ["digraph controllers {", "  rankdir=LR;", "  node [fontname=\"Helvetica\"];"]
        for controller in Set(edges.map(\.controller)).sorted() {
            lines.append("  \(quoted("controller:" + controller)) [label=\(quoted(controller)), shape=box, style=filled, fillcolor=\"#dbe9f6\"];")
        }
        func node(_ edge: Edge) -> String {
            "resource:" + (edge.namespace.isEmpty ? "" : edge.namespace + "/") + edge.type + (edge.id.map { "/" + $0 } ?? "")
        }
        for resource in Set(edges.map(node)).sorted() {
            lines.append("  \(quoted(resource)) [label=\(quoted(String(resource.dropFirst("resource:".count)))), shape=ellipse];")
        }
        for edge in edges {
            let controller = quoted("controller:" + edge.controller), resource = quoted(node(edge))
            let style = edge.kind.contains("strong") ? "bold" : edge.kind.contains("destroyReady") ? "dashed" : "solid"
            if edge.kind.hasPrefix("output") {
                lines.append("  \(controller) -> \(resource) [label=\(quoted(edge.kind.replacingOccurrences(of: "output ", with: "")))];")
            } else {
                lines.append("  \(resource) -> \(controller) [label=\(quoted(edge.kind.replacingOccurrences(of: "input ", with: ""))), style=\(style)];")
            }
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// Renders DOT to a PNG with Graphviz's `dot`. A client installs nothing: without `dot` it
    /// says how to get it.
    static func render(_ dot: String, to file: String) throws {
        guard let executable = findExecutable("dot") else {
            throw CLIError("rendering a PNG needs Graphviz's dot, which is not on PATH: install Graphviz (Debian and Ubuntu: apt-get install graphviz; Fedora: dnf install graphviz; macOS: brew install graphviz), or print DOT with --dot")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-Tpng", "-o", file]
        let input = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardError = errors
        try process.run()
        input.fileHandleForWriting.write(Data(dot.utf8))
        try input.fileHandleForWriting.close()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CLIError("dot failed: \(message)") }
    }

    static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
