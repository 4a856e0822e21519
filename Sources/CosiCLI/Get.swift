import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import Foundation

struct Get: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Show resources of a type (or one resource), optionally watching for changes.",
        discussion: """
        TYPE is a type (HostnameSpecs.net.cosi.dev) or one of its short names (`cosictl get rd`
        lists them); TYPE/ID (as -o name prints it) selects one resource. An unknown or ambiguous
        type is an error naming the candidates.

        Output (-o): table (default), wide (adds phase, owner, created, updated, labels), yaml
        (documents `apply -f` reads back), json ({"items": [...]} for a list, the object for one
        resource), name (type/id), jsonpath=TEMPLATE (kubectl's JSONPath, against the JSON).
        While watching, the first column (*) marks + created, - destroyed, blank updated; json
        prints one object per line with an "event" key.

        Examples:
          cosictl get rd
          cosictl get hsp -o yaml
          cosictl get kernelparamstatuses -o jsonpath='{range .items[*]}{.metadata.id}={.spec.value}{"\\n"}{end}'
          cosictl get Links.net.example.dev -l 'kind=physical,mtu>=1500' --sort-by .spec.mtu
          cosictl get hostnamestatuses --watch
        """
    )

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Type, or a short name of one (rd, ns, hsp, ...), or TYPE/ID.", completion: .custom(completeTypes)) var type: String
    @Argument(help: "One resource's id.") var id: String?
    @Option(name: .shortAndLong, help: "Namespace (default: the type's default namespace, or \"default\").") var namespace: String?
    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "Every namespace registered in meta.") var allNamespaces = false
    @Option(name: .shortAndLong, help: "Output format: table, wide, yaml, json, name, jsonpath=TEMPLATE.") var output: String = "table"
    @Option(name: [.customShort("l"), .customLong("selector")], help: "Label selector: k=v, k!=v, k, !k, k in (a,b), k notin (a,b), k<v, k<=v, k>v, k>=v; comma for AND.") var selector: String?
    @Option(help: "Regular expression the id must match (RE2 syntax).") var idRegexp: String?
    @Option(help: "Sort by a JSONPath expression (.spec.mtu, {.metadata.updated}) or id, version, created, updated.") var sortBy: String?
    @Flag(help: "Add a LABELS column.") var showLabels = false
    @Flag(name: .shortAndLong, help: "Print the current resources, then every change as it happens; a lost connection is resumed from the last event.") var watch = false

    func validate() throws {
        _ = try OutputFormat.parse(output)
        if allNamespaces, namespace != nil { throw ValidationError("give -n or -A, not both") }
        if allNamespaces, watch { throw ValidationError("--watch follows one namespace: give -n instead of -A") }
        if sortBy != nil, watch { throw ValidationError("--sort-by does not apply to --watch") }
        if let selector { do { _ = try LabelSelector.parse(selector) } catch { throw ValidationError("-l: \(error)") } }
    }

    func run() async throws {
        let format = try OutputFormat.parse(output)
        let nodes = try connection.fleetNodes()
        if !nodes.isEmpty {
            try await watch ? watchFleet(nodes, format: format) : getFleet(nodes, format: format)
            return
        }
        try await connection.withClient { client in
            let catalog = try await TypeCatalog.load(client)
            let selection = try Selection(type, id, namespace: namespace, catalog: catalog)
            let labelQueries = try selector.map { [try LabelSelector.parse($0)] } ?? []
            let idQuery = idRegexp.map { IDQuery(regexp: $0) }
            var printer = Printer(format: format, catalog: catalog, showLabels: showLabels, definition: selection.resolution.definition)
            printer.expectedNamespace = selection.namespace
            printer.expectedType = selection.type
            if watch {
                try await Self.watch(selection, labelQueries: labelQueries, idQuery: idQuery, printer: printer, catalog: catalog, client: client)
                return
            }
            let fetched = try await fetch(client, catalog: catalog, progress: true)
            if fetched.resources.isEmpty, selection.id == nil, format == .table || format == .wide {
                note(emptyNote(selection, anyNode: false))
                return
            }
            var table = TableWriter()
            try printer.printList(fetched.resources, single: selection.id != nil, table: &table)
        }
    }

    /// Says that nothing was found, and in which namespaces.
    func emptyNote(_ selection: Selection, anyNode: Bool) -> String {
        let filtered = selector == nil && idRegexp == nil ? "" : " matching the selection"
        return "no \(selection.type) in \(allNamespaces ? "any namespace" : "namespace \(selection.namespace)")\(filtered)" + (anyNode ? " on any node that answered" : "")
    }

    /// What one node of `--nodes` answered.
    struct Fetched: Sendable {
        var catalog: TypeCatalog
        var selection: Selection
        var resources: [Resource]
    }

    /// The resources of one server, as `get` selects them (`progress`: a long list shows its
    /// progress on a terminal).
    func fetch(_ client: CosiClient, catalog known: TypeCatalog? = nil, progress: Bool = false) async throws -> Fetched {
        let catalog: TypeCatalog
        if let known { catalog = known } else { catalog = try await TypeCatalog.load(client) }
        let selection = try Selection(type, id, namespace: namespace, catalog: catalog)
        let labelQueries = try selector.map { [try LabelSelector.parse($0)] } ?? []
        let idQuery = idRegexp.map { IDQuery(regexp: $0) }
        var resources: [Resource] = []
        if let id = selection.id {
            do {
                resources = [try await client.get(namespace: selection.namespace, type: selection.type, id: id)]
            } catch let error as RPCError where error.code == .notFound {
                if case .undefined = selection.resolution { throw catalog.unknown(selection.typed) }
                throw error
            }
        } else {
            let namespaces = allNamespaces
                ? try await client.list(namespace: MetaNamespace.namespace, type: MetaNamespace.namespaceType).map(\.metadata.id)
                : [selection.namespace]
            for namespace in namespaces {
                resources += try await Self.list(client, namespace: namespace, type: selection.type, labelQueries: labelQueries, idQuery: idQuery, progress: progress)
            }
            if resources.isEmpty, case .undefined = selection.resolution { throw catalog.unknown(selection.typed) }
        }
        if let sortBy { resources = try sortResources(resources, by: sortBy) }
        return Fetched(catalog: catalog, selection: selection, resources: resources)
    }

    /// `get --nodes`: every node's resources in one table (NODE first) or one YAML/JSON stream
    /// (`node` in each), in the nodes' order; a node that fails is an error row.
    func getFleet(_ nodes: [CosiNode], format: OutputFormat) async throws {
        let outcomes = try await connection.runOnNodes(nodes) { client in try await self.fetch(client) }
        var resources: [Resource] = []
        var names: [String] = []
        var first: Fetched?
        for outcome in outcomes {
            guard case .success(let fetched) = outcome.result else { continue }
            if first == nil { first = fetched }
            resources += fetched.resources
            names += fetched.resources.map { _ in outcome.node.description }
        }
        if let first {
            var printer = Printer(format: format, catalog: first.catalog, showLabels: showLabels, definition: first.selection.resolution.definition)
            printer.nodeColumn = true
            if resources.isEmpty, first.selection.id == nil, format == .table || format == .wide {
                note(emptyNote(first.selection, anyNode: true))
            } else {
                var table = TableWriter()
                try printer.printList(resources, single: first.selection.id != nil, table: &table, nodes: names)
            }
        }
        if connection.report(outcomes) > 0 { throw ExitCode(1) }
    }

    /// `get --watch --nodes`: one watch per node, merged; each node's current resources when its
    /// watch starts, then its events, under NODE. A node that cannot be reached is said on
    /// standard error and tried again; each resumes from its own last event.
    func watchFleet(_ nodes: [CosiNode], format: OutputFormat) async throws {
        let fleet = try connection.fleet(nodes)
        do {
            try await watchFleet(fleet, format: format)
        } catch {
            await fleet.close()
            throw error
        }
        await fleet.close()
    }

    private func watchFleet(_ fleet: CosiFleet, format: OutputFormat) async throws {
        let nodes = fleet.nodes
        // The type is resolved by the first node that answers; the watch then starts on all.
        let catalog = await withTaskGroup(of: TypeCatalog?.self) { group -> TypeCatalog? in
            for node in nodes {
                group.addTask { try? await TypeCatalog.load(try await fleet.client(node)) }
            }
            for await answer in group {
                if let answer {
                    group.cancelAll()
                    return answer
                }
            }
            return nil
        }
        guard let catalog else {
            let outcomes = try await connection.runOnNodes(nodes) { client in try await TypeCatalog.load(client) }
            connection.report(outcomes)
            throw ExitCode(1)
        }
        let selection = try Selection(type, id, namespace: namespace, catalog: catalog)
        let labelQueries = try selector.map { [try LabelSelector.parse($0)] } ?? []
        var request = WatchRequest(namespace: selection.namespace, type: selection.type, id: selection.id, apiVersion: 1)
        request.options = selection.id == nil
            ? WatchOptions(bootstrapContents: true, labelQuery: labelQueries, idQuery: idRegexp.map { IDQuery(regexp: $0) })
            : WatchOptions()
        var printer = Printer(format: format, catalog: catalog, showLabels: showLabels, definition: selection.resolution.definition)
        printer.expectedNamespace = selection.namespace
        printer.expectedType = selection.type
        printer.nodeColumn = true
        printer.nodeWidth = nodes.map(\.description.count).max() ?? 0
        let watch = fleet.watch(request).onStateChange { node, state in
            switch state {
            case .reconnecting, .failed: note("\(node): \(state)")
            case .connected, .connecting, .ended: break
            }
        }
        var table = TableWriter()
        try printer.printList([], table: &table, watching: true)
        // Per node: its bootstrap, collected until it says bootstrapped.
        var pending: [CosiNode: [String: Resource]] = [:]
        var bootstrapped = Set<CosiNode>(selection.id != nil ? nodes : [])
        var bootstrapRows = 0
        for try await tagged in watch {
            let node = tagged.node, event = tagged.event
            if !bootstrapped.contains(node) {
                if event.type == .bootstrapped {
                    bootstrapped.insert(node)
                    let rows = pending.removeValue(forKey: node) ?? [:]
                    bootstrapRows += rows.count
                    // Every node bootstrapped empty, and no definition knows the type: a typo.
                    if bootstrapped.count == nodes.count, bootstrapRows == 0, case .undefined = selection.resolution {
                        throw catalog.unknown(selection.typed)
                    }
                    try printer.printRows(rows.keys.sorted().map { rows[$0]! }, node: node.description, table: table)
                } else if let resource = event.resource {
                    pending[node, default: [:]][resource.metadata.id] = resource
                }
                continue
            }
            try printer.printEvent(event, table: table, node: node.description)
        }
        let failed = watch.states.filter { if case .failed = $0.state { true } else { false } }
        if !failed.isEmpty { throw ExitCode(1) }
    }

    /// Streams a List, showing progress on a terminal when it is long.
    static func list(_ client: CosiClient, namespace: String, type: String, labelQueries: [LabelQuery], idQuery: IDQuery?, progress: Bool) async throws -> [Resource] {
        let request = ListRequest(namespace: namespace, type: type, options: ListOptions(labelQuery: labelQueries, idQuery: idQuery))
        let showProgress = progress && isatty(2) != 0
        var resources: [Resource] = []
        for try await response in client.serverStream("/cosi.resource.State/List", request, as: ListResponse.self, timeout: .seconds(300)) {
            if let resource = response.resource { resources.append(resource) }
            if showProgress, resources.count % 5000 == 0 {
                FileHandle.standardError.write(Data("\rreceived \(resources.count) resources...".utf8))
            }
        }
        if showProgress, resources.count >= 5000 { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        return resources
    }

    /// The current resources, then every change; a lost server is said on stderr and the watch
    /// resumes from its last bookmark.
    static func watch(_ selection: Selection, labelQueries: [LabelQuery], idQuery: IDQuery?, printer: Printer, catalog: TypeCatalog, client: CosiClient) async throws {
        var request = WatchRequest(namespace: selection.namespace, type: selection.type, id: selection.id, apiVersion: 1)
        if selection.id == nil {
            request.options = WatchOptions(bootstrapContents: true, labelQuery: labelQueries, idQuery: idQuery)
        } else {
            request.options = WatchOptions()
        }
        let watch = client.watch(request) { change in
            switch change {
            case .lost(let error): note("connection lost (\(error.code): \(error.message)), reconnecting...")
            case .resumed(let fromBookmark): note(fromBookmark ? "reconnected: resuming from the last event seen" : "reconnected")
            }
        }
        var table = TableWriter()
        var bootstrapped = selection.id != nil
        if bootstrapped { try printer.printList([], table: &table, watching: true) }
        // Bootstrap events by id: a watch that reconnects before it bootstrapped starts over.
        var pending: [String: Resource] = [:]
        for try await event in watch {
            if !bootstrapped {
                if event.type == .bootstrapped {
                    bootstrapped = true
                    if pending.isEmpty, case .undefined = selection.resolution { throw catalog.unknown(selection.typed) }
                    try printer.printList(pending.keys.sorted().map { pending[$0]! }, table: &table, watching: true)
                } else if let resource = event.resource {
                    pending[resource.metadata.id] = resource
                }
                continue
            }
            try printer.printEvent(event, table: table)
        }
    }
}

/// Type names for shell completion: those the last connected server defined (cached by
/// ``TypeCatalog/load(_:)``), else the built-in ones.
@Sendable func completeTypes(_ arguments: [String], _ index: Int, _ prefix: String) -> [String] {
    TypeCache.names().filter { $0.hasPrefix(prefix.lowercased()) || $0.hasPrefix(prefix) }
}
