import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import CosiTLS
import Foundation
import Yams

/// `cosictl`: manage a machine's resources from a shell.
@available(macOS 10.15, macCatalyst 13, iOS 13, tvOS 13, watchOS 6, *)
public struct Cosictl: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "cosictl",
        abstract: "The COSI command-line client.",
        discussion: """
        Connection settings come from $COSICONFIG or ~/.config/cosi/config.yaml (a named context),
        overridden by --endpoint, --ca, --cert and --key. Next to a development cosid, the
        certificates in ./Certs are used.

        Example:
          cosictl get rd
          cosictl get Hostnames.net.cosi.dev -o yaml --watch
        """,
        version: "0.1.0",
        subcommands: [Get.self, Apply.self, Create.self, Edit.self, Delete.self, Teardown.self, Controllers.self, Graph.self, Info.self, Version.self, Gen.self]
    )

    public init() {}
}

/// Resolves a type name or alias through the ResourceDefinitions, case-insensitively.
func resolveType(_ name: String, client: CosiClient) async throws -> (type: String, definition: Meta.ResourceDefinitionSpec?) {
    let definitions = try await client.list(namespace: MetaNamespace.namespace, type: MetaNamespace.resourceDefinitionType)
    let wanted = name.lowercased()
    for resource in definitions {
        guard let spec = try? Meta.ResourceDefinitionSpec(serializedBytes: resource.spec.protoSpec) else { continue }
        let names = [spec.resourceType.lowercased()] + spec.allAliases.map { $0.lowercased() } + spec.aliases.map { $0.lowercased() }
        if names.contains(wanted) { return (spec.resourceType, spec) }
    }
    return (name, nil)
}

/// Resolves a type argument and picks the namespace: the flag, else the type's default, else "default".
func resolveKind(_ type: String, namespace: String?, client: CosiClient) async throws -> (namespace: String, type: String, definition: Meta.ResourceDefinitionSpec?) {
    let (resolved, definition) = try await resolveType(type, client: client)
    let defaultNamespace = definition.map { $0.defaultNamespace.isEmpty ? "default" : $0.defaultNamespace } ?? "default"
    return (namespace ?? defaultNamespace, resolved, definition)
}

/// An error as one sentence for the terminal: a server status as `CODE: message`.
func fail(_ error: any Error) -> any Error {
    switch error {
    case let error as RPCError: ValidationError("\(error.code): \(error.message)")
    case is ValidationError, is CancellationError: error
    default: ValidationError("\(error)")
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show resources of a type (or one resource), optionally watching for changes.",
        discussion: """
        Examples:
          cosictl get rd                                  # every resource definition
          cosictl get HostnameSpecs.net.cosi.dev -n network -o yaml
          cosictl get ns meta -o json
          cosictl get Links -l 'kind=physical,mtu<=1500' --watch
        """
    )

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Type, or an alias of one (rd, ns, ...).") var type: String
    @Argument(help: "One resource's id.") var id: String?
    @Option(name: .shortAndLong, help: "Namespace (default: the type's default namespace, or \"default\").") var namespace: String?
    @Option(name: .shortAndLong, help: "Output format.") var output: OutputFormat = .table
    @Option(name: [.customShort("l"), .customLong("selector")], help: "Label selector: k=v, k!=v, k, !k, k in (a,b), k<v, k<=v; comma for AND.") var selector: String?
    @Option(help: "Regular expression the id must match.") var idRegexp: String?
    @Flag(name: .shortAndLong, help: "Print the current resources, then every change as it happens.") var watch = false

    func run() async throws {
        try await connection.withClient { client in
            let (ns, resolved, definition) = try await resolveKind(type, namespace: namespace, client: client)
            let labelQueries = try selector.map { [try LabelSelector.parse($0)] } ?? []
            let printer = Printer(format: output, definition: definition)
            if watch {
                var request = WatchRequest(namespace: ns, type: resolved, id: id, apiVersion: 1)
                request.options = WatchOptions(bootstrapContents: id == nil, labelQuery: labelQueries, idQuery: idRegexp.map { IDQuery(regexp: $0) })
                if id != nil { request.options = WatchOptions() }
                var bootstrapped = id != nil
                var pending: [Resource] = []
                for try await event in client.watch(request) {
                    if !bootstrapped {
                        if event.type == .bootstrapped {
                            bootstrapped = true
                            try printer.printList(pending)
                            fflush(nil)
                        } else if let resource = event.resource {
                            pending.append(resource)
                        }
                        continue
                    }
                    try printer.printEvent(event)
                }
            } else if let id {
                try printer.printList([try await client.get(namespace: ns, type: resolved, id: id)])
            } else {
                // Stream the list, showing progress on a terminal when it is long.
                let request = ListRequest(namespace: ns, type: resolved, options: ListOptions(labelQuery: labelQueries, idQuery: idRegexp.map { IDQuery(regexp: $0) }))
                let showProgress = isatty(2) != 0
                var resources: [Resource] = []
                for try await response in client.serverStream("/cosi.resource.State/List", request, as: ListResponse.self, timeout: .seconds(300)) {
                    if let resource = response.resource { resources.append(resource) }
                    if showProgress, resources.count % 5000 == 0 {
                        FileHandle.standardError.write(Data("\rreceived \(resources.count) resources...".utf8))
                    }
                }
                if showProgress, resources.count >= 5000 { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
                try printer.printList(resources)
            }
        }
    }
}

/// How `cosictl get` prints resources.
enum OutputFormat: String, CaseIterable, ExpressibleByArgument {
    /// Aligned columns: namespace, type, id, version and the type's print columns.
    case table
    /// One YAML document per resource.
    case yaml
    /// One JSON object per line.
    case json
}

/// Prints resources as a table, YAML documents or JSON.
struct Printer {
    let format: OutputFormat
    let definition: Meta.ResourceDefinitionSpec?

    var columns: [Meta.ResourceDefinitionSpec.PrintColumn] { definition?.printColumns ?? [] }

    func row(_ resource: Resource, marker: String?) -> [String] {
        let m = resource.metadata
        var cells = [m.namespace, m.type, m.id, m.version]
        cells += columns.map { ResourceYAML.lookup($0.jsonPath, in: resource.spec.yamlSpec) }
        if let marker { cells.insert(marker, at: 0) }
        return cells
    }

    func header(watching: Bool) -> [String] {
        (watching ? [" "] : []) + ["NAMESPACE", "TYPE", "ID", "VERSION"] + columns.map { $0.name.uppercased() }
    }

    func printList(_ resources: [Resource]) throws {
        switch format {
        case .yaml:
            for (index, resource) in resources.enumerated() {
                if index > 0 { print("---") }
                print(try ResourceYAML.encode(resource), terminator: "")
            }
        case .json:
            for resource in resources { print(try json(resource, event: nil)) }
        case .table:
            CosiCLI.printTable([header(watching: false)] + resources.map { row($0, marker: nil) })
        }
    }

    func printEvent(_ event: Event) throws {
        guard let resource = event.resource else { return }
        let name: String
        switch event.type {
        case .created: name = "created"
        case .destroyed: name = "destroyed"
        case .updated: name = "updated"
        default: return
        }
        switch format {
        case .yaml:
            print("---")
            print(try ResourceYAML.encode(resource, event: name), terminator: "")
        case .json:
            print(try json(resource, event: name))
        case .table:
            let marker = event.type == .created ? "+" : event.type == .destroyed ? "-" : " "
            CosiCLI.printTable([row(resource, marker: marker)])
        }
        fflush(nil)
    }

    func json(_ resource: Resource, event: String?) throws -> String {
        let object = try ResourceYAML.jsonObject(resource, event: event)
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

/// Reads YAML documents from a file or standard input; a document without a namespace goes to
/// "default".
func readResources(_ file: String) throws -> [Resource] {
    try readDocuments(file).map { resource in
        var resource = resource
        if resource.metadata.namespace.isEmpty { resource.metadata.namespace = "default" }
        return resource
    }
}

/// Reads YAML documents from a file or standard input.
func readDocuments(_ file: String) throws -> [Resource] {
    let text: String
    if file == "-" {
        text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
    } else {
        guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else { throw ValidationError("cannot read \(file)") }
        text = contents
    }
    do { return try ResourceYAML.decode(text) } catch { throw ValidationError("\(file): \(error)") }
}

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or update resources from YAML (several documents allowed).",
        discussion: "Example:\n  cosictl apply -f hostname.yaml\n  cat *.yaml | cosictl apply -f -"
    )
    @OptionGroup var connection: ConnectionOptions
    @Option(name: .shortAndLong, help: "A YAML file, or - for standard input.") var file: String

    func run() async throws {
        let resources = try readResources(file)
        try await connection.withClient { client in
            for var resource in resources {
                if let current = try? await client.get(namespace: resource.metadata.namespace, type: resource.metadata.type, id: resource.metadata.id) {
                    resource.metadata.version = current.metadata.version
                    if resource.spec.yamlSpec.isEmpty { resource.spec.protoSpec = current.spec.protoSpec }
                    let stored = try await client.update(resource, owner: current.metadata.owner)
                    print("\(stored.address) updated (version \(stored.metadata.version))")
                } else {
                    let stored = try await client.create(resource)
                    print("\(stored.address) created")
                }
            }
        }
    }
}

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create resources from YAML; existing ones are an error.", discussion: "Example:\n  cosictl create -f hostname.yaml")
    @OptionGroup var connection: ConnectionOptions
    @Option(name: .shortAndLong, help: "A YAML file, or - for standard input.") var file: String

    func run() async throws {
        let resources = try readResources(file)
        try await connection.withClient { client in
            for resource in resources {
                let stored = try await client.create(resource)
                print("\(stored.address) created")
            }
        }
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tear a resource down and destroy it once its finalizers are gone.",
        discussion: "Example:\n  cosictl delete HostnameSpecs.net.cosi.dev hostname -n network\n  cosictl delete ns staging --no-wait"
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument var type: String
    @Argument var id: String
    @Option(name: .shortAndLong) var namespace: String?
    @Flag(help: "Only tear down; do not wait for the finalizers.") var noWait = false
    @Option(help: "Seconds to wait for the finalizers.") var timeout = 300

    func run() async throws {
        try await connection.withClient { client in
            let (ns, resolved, _) = try await resolveKind(type, namespace: namespace, client: client)
            let current = try await client.get(namespace: ns, type: resolved, id: id)
            if noWait {
                let ready = try await client.teardown(namespace: ns, type: resolved, id: id, owner: current.metadata.owner)
                print(ready ? "\(ns)/\(resolved)/\(id) torn down, ready to destroy" : "\(ns)/\(resolved)/\(id) torn down; waiting on finalizers: \(current.metadata.finalizers.joined(separator: ", "))")
                return
            }
            if !current.metadata.finalizers.isEmpty {
                FileHandle.standardError.write(Data("waiting for finalizers \(current.metadata.finalizers.joined(separator: ", ")) ...\n".utf8))
            }
            try await client.teardownAndDestroy(namespace: ns, type: resolved, id: id, owner: current.metadata.owner, timeout: .seconds(timeout))
            print("\(ns)/\(resolved)/\(id) destroyed")
        }
    }
}

struct Teardown: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Move a resource to phase tearingDown.", discussion: "Example:\n  cosictl teardown HostnameSpecs.net.cosi.dev hostname -n network")
    @OptionGroup var connection: ConnectionOptions
    @Argument var type: String
    @Argument var id: String
    @Option(name: .shortAndLong) var namespace: String?

    func run() async throws {
        try await connection.withClient { client in
            let (ns, resolved, _) = try await resolveKind(type, namespace: namespace, client: client)
            let current = try await client.get(namespace: ns, type: resolved, id: id)
            let ready = try await client.teardown(namespace: ns, type: resolved, id: id, owner: current.metadata.owner)
            print(ready ? "ready to destroy" : "waiting on finalizers: \(try await client.get(namespace: ns, type: resolved, id: id).metadata.finalizers.joined(separator: ", "))")
        }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the server's version and who it thinks you are.",
        discussion: "Example:\n  cosictl info",
        aliases: ["whoami"]
    )
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        try await connection.withClient { client in
            let info = try await client.info()
            let address = client.configuration.unixSocketPath.map { "unix:\($0)" } ?? "\(client.configuration.host):\(client.configuration.port)"
            print("server:   cosid \(info.version) at \(address)")
            print("identity: \(info.identity)")
            print("roles:    \(info.roles.isEmpty ? "(none)" : info.roles.joined(separator: ", "))")
        }
    }
}

struct Edit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Edit a resource in $EDITOR; the change is saved with Update (retried on a version conflict).",
        discussion: "Example:\n  EDITOR=vi cosictl edit HostnameSpecs.net.cosi.dev hostname -n network"
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument var type: String
    @Argument var id: String
    @Option(name: .shortAndLong) var namespace: String?

    func run() async throws {
        try await connection.withClient { client in
            let (ns, resolved, _) = try await resolveKind(type, namespace: namespace, client: client)
            let editor = ProcessInfo.processInfo.environment["EDITOR"] ?? "vi"
            let path = NSTemporaryDirectory() + "cosictl-edit-\(getpid()).yaml"
            defer { try? FileManager.default.removeItem(atPath: path) }
            for attempt in 1...5 {
                let current: Resource
                current = try await client.get(namespace: ns, type: resolved, id: id)
                let original = try ResourceYAML.encode(current)
                try original.write(toFile: path, atomically: true, encoding: .utf8)
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/bin/sh")
                process.arguments = ["-c", "\(editor) \"$0\"", path]
                try process.run()
                process.waitUntilExit()
                guard process.terminationStatus == 0 else { throw ValidationError("the editor (\(editor)) failed; nothing was changed") }
                let edited = try String(contentsOfFile: path, encoding: .utf8)
                if edited == original {
                    print("no changes")
                    return
                }
                guard var resource = try ResourceYAML.decode(edited).first else { throw ValidationError("the edited file holds no resource") }
                guard resource.address == current.address else { throw ValidationError("namespace, type and id cannot be changed by edit") }
                resource.metadata.version = current.metadata.version
                if resource.spec.yamlSpec.isEmpty { resource.spec.protoSpec = current.spec.protoSpec }
                do {
                    let stored = try await client.update(resource, owner: current.metadata.owner)
                    print("\(stored.address) updated (version \(stored.metadata.version))")
                    return
                } catch let error as RPCError where error.code == .failedPrecondition && attempt < 5 {
                    FileHandle.standardError.write(Data("the resource changed while you edited it: editing the new version (\(error.message))\n".utf8))
                }
            }
        }
    }
}

struct Version: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show cosictl's version, and the server's when it can be reached.", discussion: "Example:\n  cosictl version")
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        print("client: cosictl \(Cosictl.configuration.version)")
        let server = try? await connection.withClient { try await $0.info().version }
        print(server.map { "server: cosid \($0)" } ?? "server: (not reachable)")
    }
}
