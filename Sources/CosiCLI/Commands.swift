import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import Foundation
import Yams

/// The options of a command that acts on one resource: TYPE ID (or TYPE/ID) and a namespace.
struct OneResource: ParsableArguments, Sendable {
    @Argument(help: "Type, or a short name of one, or TYPE/ID.", completion: .custom(completeTypes)) var type: String
    @Argument(help: "The resource's id.") var id: String?
    @Option(name: .shortAndLong, help: "Namespace (default: the type's default namespace).") var namespace: String?

    func validate() throws {
        if id == nil, !type.contains("/") { throw ValidationError("give the resource: TYPE ID (or TYPE/ID)") }
    }

    /// The resource, resolved, and the stored resource.
    func fetch(_ client: CosiClient, catalog: TypeCatalog) async throws -> (Selection, Resource) {
        let selection = try Selection(type, id, namespace: namespace, catalog: catalog)
        do {
            return (selection, try await client.get(namespace: selection.namespace, type: selection.type, id: selection.id!))
        } catch let error as RPCError where error.code == .notFound {
            if case .undefined = selection.resolution { throw catalog.unknown(selection.typed) }
            throw error
        }
    }
}

struct Delete: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Tear a resource down and destroy it once its finalizers are gone.",
        discussion: """
        While finalizers hold the resource, delete says which controllers hold them and whether
        each is connected. A resource a controller owns can be deleted only by that controller.

        Examples:
          cosictl delete hsp hostname
          cosictl delete ns staging --no-wait
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var target: OneResource
    @Flag(help: "Only tear down; do not wait for the finalizers.") var noWait = false

    func run() async throws {
        let timeout = try connection.timeoutDuration() ?? .seconds(300)
        try await connection.eachNode(bounded: false) { client in
            let catalog = try await TypeCatalog.load(client)
            let (selection, current) = try await target.fetch(client, catalog: catalog)
            let (ns, type, id) = (selection.namespace, selection.type, selection.id!)
            if noWait {
                let ready = try await client.teardown(namespace: ns, type: type, id: id)
                if ready {
                    out("\(selection.address) torn down, ready to destroy")
                } else {
                    let holders = await ControllerDirectory.load(client)
                    out("\(selection.address) torn down; waiting on finalizers: \(current.metadata.finalizers.map(holders.describe).joined(separator: ", "))")
                }
                return
            }
            if !current.metadata.finalizers.isEmpty {
                let holders = await ControllerDirectory.load(client)
                note("waiting for finalizers: \(current.metadata.finalizers.map(holders.describe).joined(separator: ", ")) ...")
            }
            do {
                try await client.teardownAndDestroy(namespace: ns, type: type, id: id, timeout: timeout)
            } catch let error as RPCError where error.code == .deadlineExceeded {
                let left = (try? await client.get(namespace: ns, type: type, id: id))?.metadata.finalizers ?? []
                let holders = await ControllerDirectory.load(client)
                throw CLIError("DEADLINE_EXCEEDED: \(selection.address) is still held after \(spoken(timeout)) by \(left.map(holders.describe).joined(separator: ", ")); it stays tearing down")
            }
            out("\(selection.address) destroyed")
        }
    }
}

struct Teardown: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(abstract: "Move a resource to phase tearingDown.", discussion: "Example:\n  cosictl teardown hsp hostname")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var target: OneResource

    func run() async throws {
        try await connection.eachNode { client in
            let catalog = try await TypeCatalog.load(client)
            let (selection, _) = try await target.fetch(client, catalog: catalog)
            let ready = try await client.teardown(namespace: selection.namespace, type: selection.type, id: selection.id!)
            if ready {
                out("\(selection.address) ready to destroy")
            } else {
                let finalizers = try await client.get(namespace: selection.namespace, type: selection.type, id: selection.id!).metadata.finalizers
                let holders = await ControllerDirectory.load(client)
                out("\(selection.address) waiting on finalizers: \(finalizers.map(holders.describe).joined(separator: ", "))")
            }
        }
    }
}

struct Edit: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Edit a resource in $EDITOR; spec, labels and annotations are saved with Update.",
        discussion: """
        Owner, phase and finalizers are kept as stored. When the resource changed while you edited,
        you edit the new version.

        Example:
          EDITOR=vi cosictl edit hsp hostname
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var target: OneResource

    func run() async throws {
        // One editor session edits one machine's resource.
        var connection = self.connection
        let nodes = try connection.fleetNodes()
        guard nodes.count <= 1 else {
            throw ValidationError("edit works on one node at a time (\(nodes.count) are given): pass --nodes with one node, or use apply -f with --nodes")
        }
        if let node = nodes.first {
            connection.endpoint = node.description
            connection.nodes = []
        }
        try await connection.withClient { client in
            let catalog = try await TypeCatalog.load(client)
            let fetched = try await target.fetch(client, catalog: catalog)
            let selection = fetched.0
            var current = fetched.1
            let editor = ProcessInfo.processInfo.environment["EDITOR"] ?? "vi"
            let path = NSTemporaryDirectory() + "cosictl-edit-\(getpid()).yaml"
            defer { try? FileManager.default.removeItem(atPath: path) }
            for attempt in 1...5 {
                if attempt > 1 { current = try await client.get(namespace: selection.namespace, type: selection.type, id: selection.id!) }
                let original = try ResourceYAML.encode(current)
                try original.write(toFile: path, atomically: true, encoding: .utf8)
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/bin/sh")
                process.arguments = ["-c", "\(editor) \"$0\"", path]
                try process.run()
                process.waitUntilExit()
                guard process.terminationStatus == 0 else { throw CLIError("the editor (\(editor)) failed; nothing was changed") }
                let edited = try String(contentsOfFile: path, encoding: .utf8)
                if edited == original {
                    out("no changes")
                    return
                }
                let resources: [Resource]
                do { resources = try ResourceYAML.decode(edited) } catch { throw CLIError("the edited file does not read: \(error); nothing was changed") }
                guard var document = resources.first, resources.count == 1 else { throw CLIError("the edited file must hold the one resource; nothing was changed") }
                if document.metadata.namespace.isEmpty { document.metadata.namespace = selection.namespace }
                guard document.address == current.address else { throw CLIError("namespace, type and id cannot be changed by edit; nothing was changed") }
                let step = try await ApplyStep.plan(document, client: client)
                guard step.action != .unchanged else {
                    out("no changes")
                    return
                }
                do {
                    let stored = try await step.write(client: client)
                    out("\(stored.address) updated (version \(stored.metadata.version))")
                    return
                } catch let error as CLIError where error.message.contains("changed since cosictl read it") && attempt < 5 {
                    note("the resource changed while you edited it: editing the new version")
                }
            }
        }
    }
}

struct Describe: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Show one resource in full: metadata, spec, who owns it, who holds its finalizers, and its status.",
        discussion: """
        The status is the resource of the matching status type (HostnameSpecs -> HostnameStatuses)
        with the same namespace and id, when that type is defined.

        Example:
          cosictl describe hsp hostname
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var target: OneResource

    func run() async throws {
        try await connection.eachNode { client in
            let catalog = try await TypeCatalog.load(client)
            let (selection, resource) = try await target.fetch(client, catalog: catalog)
            let controllers = await ControllerDirectory.load(client)
            let m = resource.metadata
            var rows: [(String, String)] = [
                ("Namespace", m.namespace), ("Type", m.type), ("ID", m.id), ("Version", m.version), ("Phase", m.phase),
                ("Owner", m.owner.isEmpty ? "- (written through the State service)" : controllers.describe(m.owner)),
                ("Created", m.created.map(ResourceYAML.iso8601) ?? "-"), ("Updated", m.updated.map(ResourceYAML.iso8601) ?? "-"),
                ("Labels", m.labels.isEmpty ? "-" : m.labels.keys.sorted().map { "\($0)=\(m.labels[$0]!)" }.joined(separator: ", ")),
                ("Annotations", m.annotations.isEmpty ? "-" : m.annotations.keys.sorted().map { "\($0)=\(m.annotations[$0]!)" }.joined(separator: ", ")),
                ("Finalizers", m.finalizers.isEmpty ? "-" : m.finalizers.map(controllers.describe).joined(separator: ", ")),
            ]
            if case .undefined = selection.resolution { rows.append(("Definition", "none: no ResourceDefinition defines \(m.type)")) }
            let width = rows.map(\.0.count).max()! + 2
            for (name, value) in rows { out((name + ":").padding(toLength: width, withPad: " ", startingAt: 0) + value) }
            out("Spec:")
            out(Self.indented(try Yams.serialize(node: ResourceYAML.specNode(resource))), terminator: "")
            guard let statusType = catalog.statusType(of: m.type) else { return }
            guard let status = try? await client.get(namespace: m.namespace, type: statusType.resourceType, id: m.id) else {
                out("Status:".padding(toLength: width, withPad: " ", startingAt: 0) + "none yet (\(m.namespace)/\(statusType.resourceType)/\(m.id))")
                return
            }
            let reported = status.metadata.annotations["cosi.dev/spec-version"]
            let note = reported.map { $0 == m.version ? "reports this version" : "reports version \($0) of the spec" } ?? "reports no spec version"
            out("Status:".padding(toLength: width, withPad: " ", startingAt: 0)
                + "\(status.metadata.namespace)/\(status.metadata.type)/\(status.metadata.id) version \(status.metadata.version), \(note), by \(controllers.describe(status.metadata.owner))")
            out(Self.indented(try Yams.serialize(node: ResourceYAML.specNode(status))), terminator: "")
        }
    }

    static func indented(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.isEmpty ? "" : "  " + $0 }.joined(separator: "\n")
    }
}

struct Wait: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Wait until a resource meets a condition (kubectl wait).",
        discussion: """
        Conditions (--for):
          created | deleted          the resource exists / no longer exists
          phase=running | phase=tearingDown
          status                     its status (HostnameSpecs -> HostnameStatuses) reports this
                                     version of the spec, without an error (an error fails)
          PATH=VALUE                 a field equals VALUE: spec.hostname=node-1,
                                     metadata.labels.tier=web, or jsonpath={.spec.mtu}=1500

        Examples:
          cosictl wait hsp hostname --for status
          cosictl wait Names.example.cosi.dev ada --for deleted --timeout 60
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var target: OneResource
    @Option(name: .customLong("for"), help: "The condition: created, deleted, phase=PHASE, status, or PATH=VALUE.") var condition: String

    enum Condition: Sendable {
        case created
        case deleted
        case phase(String)
        case status
        case field(JSONPathTemplate, String)
    }

    static func parse(_ text: String) throws -> Condition {
        switch text {
        case "created", "exists": return .created
        case "deleted", "delete": return .deleted
        case "status": return .status
        default: break
        }
        if text.hasPrefix("phase=") {
            let phase = String(text.dropFirst(6))
            guard [Phase.running, Phase.tearingDown].contains(phase) else { throw ValidationError("--for phase=\(phase): the phases are running and tearingDown") }
            return .phase(phase)
        }
        var body = text
        if body.hasPrefix("jsonpath=") { body = String(body.dropFirst(9)) }
        guard let equals = body.lastIndex(of: "="), equals != body.startIndex else {
            throw ValidationError("--for \(text): give created, deleted, phase=PHASE, status, or PATH=VALUE")
        }
        var path = String(body[..<equals])
        if !path.hasPrefix("{"), !path.hasPrefix(".") { path = "." + path }
        do { return .field(try JSONPathTemplate.path(path), String(body[body.index(after: equals)...])) } catch {
            throw ValidationError("--for \(text): \(error)")
        }
    }

    func validate() throws {
        _ = try Self.parse(condition)
    }

    func run() async throws {
        let parsed = try Self.parse(condition)
        let described = condition
        let seconds = try connection.timeoutDuration() ?? .seconds(30)
        try await connection.eachNode(bounded: false) { client in
            let catalog = try await TypeCatalog.load(client)
            let selection = try Selection(target.type, target.id, namespace: target.namespace, catalog: catalog)
            let (ns, type, id) = (selection.namespace, selection.type, selection.id!)
            if case .status = parsed {
                guard let statusType = catalog.statusType(of: type) else { throw CLIError("no status type reports \(type)") }
                let spec = try await client.get(namespace: ns, type: type, id: id)
                let status = try await StatusWait.wait(for: spec, statusType: statusType.resourceType, client: client, timeout: seconds)
                out("\(status.address) reports version \(spec.metadata.version)")
                return
            }
            var request = WatchRequest(namespace: ns, type: type, id: id, apiVersion: 1)
            request.options = WatchOptions()
            let watch = client.watch(request)
            let address = selection.address
            try await withDeadline(seconds, what: "waiting for \(address): \(described)") {
                for try await event in watch {
                    let exists = event.type != .destroyed && event.resource.map { $0.metadata.version != "undefined" } ?? false
                    if Self.met(parsed, resource: exists ? event.resource : nil) { return }
                }
                throw CLIError("the watch of \(address) ended")
            }
            out("\(address): \(described)")
        }
    }

    static func met(_ condition: Condition, resource: Resource?) -> Bool {
        switch condition {
        case .created: return resource != nil
        case .deleted: return resource == nil
        case .phase(let phase): return resource?.metadata.phase == phase
        case .status: return false
        case .field(let path, let value):
            guard let resource else { return false }
            return path.values(ResourceYAML.json(resource)).contains { $0.text == value }
        }
    }
}

struct Info: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Show the server's version and who it thinks you are.",
        discussion: "Example:\n  cosictl info",
        aliases: ["whoami"]
    )
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        try await connection.eachNode { client in
            let info = try await client.info()
            let address = client.configuration.unixSocketPath.map { "unix:\($0)" } ?? "\(client.configuration.host):\(client.configuration.port)"
            out("server:   cosid \(info.version) at \(address)")
            out("identity: \(info.identity)")
            out("roles:    \(info.roles.isEmpty ? "(none)" : info.roles.joined(separator: ", "))")
        }
    }
}

struct Version: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(abstract: "Show cosictl's version, and the server's when it can be reached.", discussion: "Example:\n  cosictl version")
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        out("client: cosictl \(cosiVersion)")
        let nodes = try connection.fleetNodes()
        if !nodes.isEmpty {
            // As for one server: a node that cannot be reached says so, and is not a failure.
            let outcomes = try await connection.runOnNodes(nodes) { client in try await client.info().version }
            let width = nodes.map(\.description.count).max() ?? 0
            for outcome in outcomes {
                let server = (try? outcome.result.get()).map { "server: cosid \($0)" } ?? "server: (not reachable)"
                out(outcome.node.description.padding(toLength: width + 3, withPad: " ", startingAt: 0) + server)
            }
            return
        }
        let server = try? await connection.withClient { try await $0.info().version }
        out(server.map { "server: cosid \($0)" } ?? "server: (not reachable)")
    }
}
