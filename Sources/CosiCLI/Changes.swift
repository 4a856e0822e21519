import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import Foundation
import Yams

/// How change commands print their results.
enum ChangeOutput {
    /// Prints what a change did; returns its id.
    @discardableResult
    static func printApplied(_ response: ApplyChangeResponse) -> String {
        for change in response.resources {
            guard let after = change.after else { continue }
            switch change.action {
            case "create": out("\(after.address) created")
            case "update": out("\(after.address) updated (version \(after.metadata.version))")
            default: out("\(after.address) unchanged")
            }
        }
        guard !response.id.isEmpty else { return "" }
        let fields = response.change.map(fields) ?? [:]
        if let deadline = fields["deadline"] as? String {
            out("change \(response.id) is being tried until \(deadline): cosictl confirm \(response.id) keeps it, cosictl revert \(response.id) reverts it now; unconfirmed, cosid reverts it at the deadline")
        } else {
            out("change \(response.id) applied")
        }
        fflush(nil)
        return response.id
    }

    /// After a change on several nodes (each gives it its own id), how to confirm or revert
    /// them all at once.
    static func printFleetHint(_ applied: [(node: CosiNode?, value: String)], tried: Bool) {
        let pairs = applied.compactMap { entry in entry.value.isEmpty ? nil : entry.node.map { "\($0)=\(entry.value)" } }
        guard tried, !pairs.isEmpty else { return }
        note("to keep the change on every node: cosictl confirm \(pairs.joined(separator: " ")); to revert it: cosictl revert \(pairs.joined(separator: " "))")
    }

    /// The fields of a Changes resource's spec.
    static func fields(_ change: Resource) -> [String: Any] {
        ((try? Yams.load(yaml: change.spec.yamlSpec)) as? [String: Any]) ?? [:]
    }
}

/// A duration as `90s`, `5m`, `1h`, `500ms` or a number of seconds.
func parseDuration(_ text: String, option: String) throws -> Duration {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    var number = Substring(text), scale = 1.0
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        number = text.dropLast(suffix.count)
        scale = factor
        break
    }
    guard let value = Double(number), value > 0, value * scale <= 7 * 86400 else {
        throw ValidationError("\(option) takes a duration such as 90s, 5m or 1h (at most 7 days), not \"\(text)\"")
    }
    return .milliseconds(Int64((value * scale * 1000).rounded()))
}

struct Confirm: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Keep a change being tried (apply --try): cosid will not revert it.",
        discussion: "Example:\n  cosictl confirm c42"
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The change's id (cosictl get changes); with several nodes, NODE=ID for each (apply --try prints them).") var ids: [String]

    func run() async throws {
        try await ChangeTargets(ids).run(connection) { client, id in
            do {
                _ = try await client.confirmChange(id)
                out("change \(id) confirmed")
            } catch { throw fail(error) }
        }
    }
}

struct Revert: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Revert a change being tried now: every resource back as it was, as new versions.",
        discussion: """
        Resources the change created are torn down and destroyed (once their finalizers are gone);
        updated ones get their spec, labels and annotations from before the change.

        Example:
          cosictl revert c42
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The change's id (cosictl get changes); with several nodes, NODE=ID for each (apply --try prints them).") var ids: [String]

    func run() async throws {
        try await ChangeTargets(ids).run(connection) { client, id in
            do {
                _ = try await client.revertChange(id)
                out("change \(id) reverted")
            } catch { throw fail(error) }
        }
    }
}

struct History: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "List the versions of a resource the event log still holds: who wrote each, in which change.",
        discussion: """
        Columns: VERSION, REVISION (the event's place in the log), TIME, EVENT (created, updated,
        teardown, destroyed), IDENTITY (the caller's certificate identity, a controller's name, or
        cosid) and CHANGE. `-o yaml` prints each version in full.

        Examples:
          cosictl history hsp hostname
          cosictl history hsp hostname -o yaml
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var target: OneResource
    @Option(name: .shortAndLong, help: "table or yaml.") var output = "table"

    func validate() throws {
        guard ["table", "yaml"].contains(output) else { throw ValidationError("-o takes table or yaml, not \(output)") }
    }

    func run() async throws {
        try await connection.eachNode { client in
            let catalog = try await TypeCatalog.load(client)
            let selection = try Selection(target.type, target.id, namespace: target.namespace, catalog: catalog)
            let response: HistoryResponse
            do { response = try await client.history(namespace: selection.namespace, type: selection.type, id: selection.id!) } catch { throw fail(error) }
            guard !response.entries.isEmpty else {
                throw CLIError("the event log (from revision \(response.oldestRevision)) holds no version of \(selection.namespace)/\(selection.type)/\(selection.id!)")
            }
            if output == "yaml" {
                let node = currentNode(client).map { [("node", $0)] } ?? []
                let documents = try response.entries.map { entry in
                    try Yams.serialize(node: ResourceYAML.node(entry.resource ?? Resource(metadata: Metadata()), extra: node + [
                        ("revision", String(entry.revision)), ("event", entry.event), ("time", Self.time(entry)),
                        ("identity", entry.identity), ("change", entry.changeID),
                    ]))
                }
                outDocument((node.isEmpty ? "" : "---\n") + documents.joined(separator: "---\n"))
                return
            }
            var table = TableWriter()
            table.start(["VERSION", "REVISION", "TIME", "EVENT", "IDENTITY", "CHANGE"], response.entries.map { entry in
                [entry.resource?.metadata.version ?? "", String(entry.revision), Self.time(entry), entry.event, entry.identity, entry.changeID]
            })
        }
    }

    static func time(_ entry: HistoryEntry) -> String {
        guard let time = entry.time else { return "" }
        return ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(time.seconds)))
    }
}

struct Rollback: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Apply an older version's spec, labels and annotations as a change.",
        discussion: """
        The version is read from the event log (cosictl history TYPE ID lists what it holds); a
        version older than the log's retention is an error naming the oldest version held. The
        rollback is a change like `apply`'s: --dry-run shows it, --try tries it.

        Examples:
          cosictl rollback hsp hostname --to-version 3 --dry-run
          cosictl rollback hsp hostname --to-version 3 --try 2m
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var target: OneResource
    @Option(help: "The version to go back to.") var toVersion: UInt64
    @Flag(help: "Write nothing: show what would change (exit 0 none, 1 some, 2 an error).") var dryRun = false
    @Option(name: .customLong("try"), help: "Revert the rollback after this long unless confirmed (90s, 5m, 1h).") var tryFor: String?
    @Flag(help: "With --try: revert at once when a status reports an error.") var revertOnError = false

    func validate() throws {
        if dryRun, tryFor != nil { throw ValidationError("--dry-run writes nothing to try") }
        if revertOnError, tryFor == nil { throw ValidationError("--revert-on-error needs --try DURATION") }
        if let tryFor { _ = try parseDuration(tryFor, option: "--try") }
    }

    /// The resource with version `toVersion`'s spec, labels and annotations.
    func document(_ client: CosiClient) async throws -> Resource {
        let catalog = try await TypeCatalog.load(client)
        let selection = try Selection(target.type, target.id, namespace: target.namespace, catalog: catalog)
        let address = "\(selection.namespace)/\(selection.type)/\(selection.id!)"
        let response: HistoryResponse
        do { response = try await client.history(namespace: selection.namespace, type: selection.type, id: selection.id!) } catch { throw fail(error) }
        var held = response.entries.compactMap { entry in entry.event == "destroyed" ? nil : entry.resource }
        // The current version is held too, by the state, even when the log no longer has its event.
        if let current = try? await client.get(namespace: selection.namespace, type: selection.type, id: selection.id!),
           !held.contains(where: { $0.metadata.version == current.metadata.version }) {
            held.append(current)
        }
        guard let version = held.last(where: { $0.metadata.version == String(toVersion) }) else {
            let versions = held.compactMap { UInt64($0.metadata.version) }
            guard let oldest = versions.min(), let newest = versions.max() else {
                throw CLIError("\(address) does not exist and the event log holds no version of it (it holds events from revision \(response.oldestRevision) on)")
            }
            if toVersion < oldest {
                throw CLIError("version \(toVersion) of \(address) is older than the event log's retention: the oldest version held is \(oldest)")
            }
            throw CLIError("\(address) has no version \(toVersion) in the event log (it holds versions \(oldest) to \(newest))")
        }
        var document = Resource(metadata: Metadata(namespace: selection.namespace, type: selection.type, id: selection.id!), spec: version.spec)
        document.metadata.labels = version.metadata.labels
        document.metadata.annotations = version.metadata.annotations
        return document
    }

    func run() async throws {
        if dryRun {
            try await Diff.run(connection: connection) { client in [try await document(client)] }
            return
        }
        let period = try tryFor.map { try parseDuration($0, option: "--try") }
        let applied = try await connection.eachNode { client in
            let resource = try await document(client)
            do {
                return ChangeOutput.printApplied(try await client.applyChange([resource], tryFor: period, revertOnError: revertOnError))
            } catch { throw fail(error) }
        }
        ChangeOutput.printFleetHint(applied, tried: period != nil)
    }
}

/// The changes `confirm` and `revert` act on: one id (on the one server, or on every node), or
/// `NODE=ID` for each node (a change has its own id on each node).
struct ChangeTargets {
    var plain: [String] = []
    var byNode: [(CosiNode, String)] = []

    init(_ arguments: [String]) throws {
        for argument in arguments {
            if let equals = argument.lastIndex(of: "="), equals != argument.startIndex {
                let node: CosiNode
                do { node = try CosiNode(parsing: String(argument[..<equals])) } catch { throw ValidationError("\(argument): \(error)") }
                byNode.append((node, String(argument[argument.index(after: equals)...])))
            } else {
                plain.append(argument)
            }
        }
        guard !(plain.isEmpty && byNode.isEmpty) else { throw ValidationError("give the change's id (cosictl get changes)") }
        guard plain.count <= 1 else { throw ValidationError("give one change id, or NODE=ID for each node (\(plain.joined(separator: ", ")) are several)") }
    }

    func run(_ connection: ConnectionOptions, _ body: @escaping @Sendable (CosiClient, String) async throws -> Void) async throws {
        var connection = connection
        var ids: [CosiNode: String] = [:]
        if !byNode.isEmpty {
            for (node, id) in byNode { ids[node] = id }
            // Every node named gets its id; the nodes listed (--nodes, the context) get the one
            // plain id when there is one, and without it each must be named.
            var listed = try connection.fleetNodes()
            if plain.isEmpty, let missing = listed.first(where: { ids[$0] == nil }) {
                throw ValidationError("no change id is given for \(missing): give \(missing)=ID, or one ID for every node")
            }
            for (node, _) in byNode where !listed.contains(node) { listed.append(node) }
            connection.nodes = listed.map(\.description)
        }
        let fallback = plain.first
        let named = ids
        try await connection.eachNode { client in
            let node = CosiNode(host: client.configuration.host, port: client.configuration.port)
            guard let id = named[node] ?? fallback else { throw CLIError("no change id is given for \(node)") }
            try await body(client, id)
        }
    }
}
