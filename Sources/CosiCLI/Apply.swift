import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import Foundation
import Yams

/// What applying one document does.
struct ApplyStep {
    enum Action: String { case create, update, unchanged }

    /// The resource to write: for an update, the stored one with the document's spec, labels and
    /// annotations (owner, phase and finalizers as stored), at the stored version.
    var resource: Resource
    var current: Resource?
    var action: Action

    var address: String { resource.address.description }
}

/// How `apply`, `create` and `diff` read their documents: types resolved as `get` resolves them,
/// namespaces defaulted to the type's, and what cosictl must never send left out.
struct DocumentReader {
    var catalog: TypeCatalog
    var allowUndefined: Bool

    /// The documents, checked all before anything is written.
    func read(_ file: String) throws -> [Resource] {
        try readDocuments(file).enumerated().map { index, document in
            var resource = document
            let typed = resource.metadata.type
            let resolution: TypeCatalog.Resolution
            do { resolution = try catalog.resolve(typed) } catch let error as CLIError { throw CLIError("\(file), document \(index + 1): \(error.message)") }
            if case .undefined = resolution, !allowUndefined {
                throw CLIError("\(file), document \(index + 1): \(catalog.unknown(typed).message) (to write a type no ResourceDefinition defines, pass --allow-undefined-type)")
            }
            resource.metadata.type = resolution.type
            if resource.metadata.namespace.isEmpty { resource.metadata.namespace = resolution.defaultNamespace }
            // Never sent: the owner (controller outputs belong to their controller), the phase,
            // the version (the stored one is used) and the timestamps.
            resource.metadata.owner = ""
            resource.metadata.phase = ""
            resource.metadata.version = ""
            resource.metadata.created = nil
            resource.metadata.updated = nil
            return resource
        }
    }
}

extension ApplyStep {
    /// Plans one document: create when missing, else an update of spec, labels and annotations,
    /// or unchanged when they are as stored.
    static func plan(_ document: Resource, client: CosiClient) async throws -> ApplyStep {
        let current: Resource
        do {
            current = try await client.get(namespace: document.metadata.namespace, type: document.metadata.type, id: document.metadata.id)
        } catch let error as RPCError where error.code == .notFound {
            return ApplyStep(resource: document, current: nil, action: .create)
        }
        var updated = current
        // A document without a spec keeps the stored one.
        if !document.spec.yamlSpec.isEmpty || !document.spec.protoSpec.isEmpty { updated.spec = document.spec }
        updated.metadata.labels = document.metadata.labels
        updated.metadata.annotations = document.metadata.annotations
        let same = ResourceYAML.canonicalSpec(updated.spec) == ResourceYAML.canonicalSpec(current.spec)
            && updated.spec.protoSpec == current.spec.protoSpec
            && updated.metadata.labels == current.metadata.labels && updated.metadata.annotations == current.metadata.annotations
        return ApplyStep(resource: updated, current: current, action: same ? .unchanged : .update)
    }

    /// Writes the step (nothing for unchanged); returns the resource as stored.
    func write(client: CosiClient, dryRun: Bool = false) async throws -> Resource {
        switch action {
        case .unchanged:
            return current!
        case .create:
            return try await client.create(resource, dryRun: dryRun)
        case .update:
            let current = current!
            if current.metadata.phase == Phase.tearingDown {
                let waiting = current.metadata.finalizers.isEmpty ? "" : " (waiting on finalizers: \(current.metadata.finalizers.joined(separator: ", ")))"
                throw CLIError("\(address) is tearing down\(waiting) and cannot be updated: nothing was written")
            }
            do {
                return try await client.update(resource, expectedPhase: Phase.running, dryRun: dryRun)
            } catch let error as RPCError where error.code == .failedPrecondition && error.message.contains("is at version") {
                throw CLIError("\(address) changed since cosictl read it at version \(current.metadata.version) (\(error.message)): nothing was written; apply again to update the new version")
            } catch let error as RPCError where error.code == .invalidArgument && error.message.contains("is in phase") {
                throw CLIError("\(address) started tearing down: nothing was written")
            }
        }
    }

    /// The YAML the dry run compares: spec, labels and annotations.
    static func comparable(_ resource: Resource?) -> String {
        guard let resource else { return "" }
        var pairs: [(Node, Node)] = []
        if !resource.metadata.labels.isEmpty { pairs.append(("labels", ResourceYAML.sortedMapping(resource.metadata.labels))) }
        if !resource.metadata.annotations.isEmpty { pairs.append(("annotations", ResourceYAML.sortedMapping(resource.metadata.annotations))) }
        pairs.append(("spec", ResourceYAML.specNode(resource)))
        return (try? Yams.serialize(node: Node(pairs))) ?? ""
    }

    /// A unified diff of what the step changes.
    var diff: String {
        let before = action == .create ? "" : Self.comparable(current)
        let after = Self.comparable(resource)
        let old = action == .create ? "/dev/null" : "\(address) (version \(current!.metadata.version))"
        return unifiedDiff(before, after, from: old, to: "\(address) (applied)")
    }
}

struct Apply: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Create or update resources from YAML as one change (several documents allowed).",
        discussion: """
        The documents are one change, made by cosid in one commit: all or nothing. Each is created
        when missing, else its spec, labels and annotations replace the stored ones: owner, phase
        and finalizers are never touched. A document that changes nothing is `unchanged` and
        nothing is written for it. A refusal (access, limits, a controller's output, a resource
        tearing down or held by a change being tried) names the resource and nothing is written.
        Every change is recorded as a Changes resource (`cosictl get changes`). Types resolve as
        `get` resolves them (short names included); a type no ResourceDefinition defines needs
        --allow-undefined-type.

        --dry-run writes nothing: cosid checks the change exactly as it would make it, and cosictl
        prints create/update/unchanged with a unified diff of spec, labels and annotations. Its
        exit code follows diff(1): 0 no differences, 1 differences, 2 an error.

        --try DURATION (90s, 5m, 1h): cosid reverts the change by itself when DURATION has passed,
        unless `cosictl confirm ID` comes first, even with no client connected and across a restart
        of cosid. While it is tried, other writes to its resources are refused.
        --revert-on-error also reverts it at once when a status of one of its resources (the
        built-in controllers') reports an error.

        Examples:
          cosictl apply -f hostname.yaml
          cosictl apply -f hostname.yaml --wait          # until the controller's status reports it
          cosictl apply -f route.yaml --try 60s          # then: cosictl confirm c42
          cosictl apply -f sysctl.yaml --try 5m --revert-on-error
          cat *.yaml | cosictl apply -f - --dry-run
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @Option(name: .shortAndLong, help: "A YAML file, or - for standard input.") var file: String
    @Flag(help: "Write a type no ResourceDefinition defines, as written.") var allowUndefinedType = false
    @Flag(help: "Write nothing: show what would change (exit 0 none, 1 some, 2 an error).") var dryRun = false
    @Option(name: .customLong("try"), help: "Revert the change after this long unless confirmed (90s, 5m, 1h).") var tryFor: String?
    @Flag(help: "With --try: revert at once when a status of a resource of the change reports an error.") var revertOnError = false
    @Flag(help: "Wait until each written resource's status (the built-in controller's) reports it (--timeout: how long, 30s by default).") var wait = false

    func validate() throws {
        if dryRun, wait { throw ValidationError("--dry-run writes nothing to wait for") }
        if dryRun, tryFor != nil { throw ValidationError("--dry-run writes nothing to try") }
        if revertOnError, tryFor == nil { throw ValidationError("--revert-on-error needs --try DURATION") }
        if let tryFor { _ = try parseDuration(tryFor, option: "--try") }
    }

    func run() async throws {
        if dryRun {
            try await Diff.run(file: file, allowUndefinedType: allowUndefinedType, connection: connection)
            return
        }
        let period = try tryFor.map { try parseDuration($0, option: "--try") }
        let timeout = try connection.timeoutDuration() ?? .seconds(30)
        let applied = try await connection.eachNode(bounded: !wait) { client in
            let catalog = try await TypeCatalog.load(client)
            let documents = try DocumentReader(catalog: catalog, allowUndefined: allowUndefinedType).read(file)
            let response: ApplyChangeResponse
            do {
                response = try await client.applyChange(documents, tryFor: period, revertOnError: revertOnError)
            } catch {
                throw fail(error)
            }
            let id = ChangeOutput.printApplied(response)
            guard wait else { return id }
            var failures = 0
            for change in response.resources where change.action != "unchanged" {
                guard let resource = change.after else { continue }
                guard let status = catalog.statusType(of: resource.metadata.type) else {
                    note("\(resource.address): no status type reports \(resource.metadata.type); not waiting for it")
                    continue
                }
                do {
                    let report = try await StatusWait.wait(for: resource, statusType: status.resourceType, client: client, timeout: timeout)
                    out("\(report.address) reports version \(resource.metadata.version)")
                } catch {
                    let message = (fail(error) as? CLIError)?.message ?? "\(error)"
                    note("\(resource.address): \(message)")
                    failures += 1
                }
            }
            if failures > 0 { throw CLIError("\(failures) of \(response.resources.count) resources did not report their version") }
            return id
        }
        ChangeOutput.printFleetHint(applied, tried: period != nil)
    }
}

struct Diff: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Show what applying YAML would change, writing nothing (apply --dry-run).",
        discussion: """
        cosid checks the documents exactly as `apply` would make the change (access, limits,
        owners, phases, a change being tried) and writes nothing. Exit code as diff(1): 0 no
        differences, 1 differences, 2 an error (a change the server would refuse, an unknown
        type, a file that does not read).

        Example:
          cosictl diff -f hostname.yaml
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @Option(name: .shortAndLong, help: "A YAML file, or - for standard input.") var file: String
    @Flag(help: "Allow a type no ResourceDefinition defines.") var allowUndefinedType = false

    func run() async throws {
        try await Self.run(file: file, allowUndefinedType: allowUndefinedType, connection: connection)
    }

    static func run(file: String, allowUndefinedType: Bool, connection: ConnectionOptions) async throws {
        try await run(connection: connection) { client in
            let catalog = try await TypeCatalog.load(client)
            return try DocumentReader(catalog: catalog, allowUndefined: allowUndefinedType).read(file)
        }
    }

    /// Dry-runs the documents `read` gives and prints each step and its diff; exits as diff(1).
    static func run(connection: ConnectionOptions, read: @escaping @Sendable (CosiClient) async throws -> [Resource]) async throws {
        if try !connection.fleetNodes().isEmpty {
            // Every node's differences under its name; an error on any node is exit 2.
            let answers = try await connection.eachNode(failureExitCode: 2) { client in
                try await dryRun(client, read: read)
            }
            if answers.contains(where: \.value) { throw ExitCode(1) }
            return
        }
        var differences = false
        do {
            differences = try await connection.withClient { client in try await dryRun(client, read: read) }
        } catch let error as CLIError {
            throw CLIError(error.message, exitCode: 2)
        } catch let error as ValidationError {
            throw CLIError(error.message, exitCode: 2)
        } catch {
            throw CLIError("\((fail(error) as? CLIError)?.message ?? "\(error)")", exitCode: 2)
        }
        if differences { throw ExitCode(1) }
    }

    /// One server's dry run, printed; whether it found differences.
    static func dryRun(_ client: CosiClient, read: (CosiClient) async throws -> [Resource]) async throws -> Bool {
        let documents = try await read(client)
        let response: ApplyChangeResponse
        do { response = try await client.applyChange(documents, dryRun: true) } catch { throw fail(error) }
        var differences = false
        for change in response.resources {
            guard let after = change.after else { continue }
            let step = ApplyStep(resource: after, current: change.before, action: ApplyStep.Action(rawValue: change.action) ?? .update)
            out("\(step.address): \(step.action.rawValue)")
            if step.action != .unchanged {
                differences = true
                out(step.diff, terminator: "")
            }
        }
        return differences
    }
}

struct Create: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Create resources from YAML; existing ones are an error.",
        discussion: "Types resolve as `get` resolves them; owner and phase are never sent.\n\nExample:\n  cosictl create -f hostname.yaml"
    )
    @OptionGroup var connection: ConnectionOptions
    @Option(name: .shortAndLong, help: "A YAML file, or - for standard input.") var file: String
    @Flag(help: "Write a type no ResourceDefinition defines, as written.") var allowUndefinedType = false

    func run() async throws {
        try await connection.eachNode { client in
            let catalog = try await TypeCatalog.load(client)
            for resource in try DocumentReader(catalog: catalog, allowUndefined: allowUndefinedType).read(file) {
                let stored = try await client.create(resource)
                out("\(stored.address) created")
            }
        }
    }
}

/// Waits until the status of a spec (same namespace and id) reports the spec's version.
enum StatusWait {
    /// Returns the status once its `cosi.dev/spec-version` annotation reaches the spec's version
    /// without an error; a status that reports an error for that version is a failure.
    static func wait(for spec: Resource, statusType: String, client: CosiClient, timeout: Duration) async throws -> Resource {
        let wanted = UInt64(spec.metadata.version) ?? 0
        var request = WatchRequest(namespace: spec.metadata.namespace, type: statusType, id: spec.metadata.id, apiVersion: 1)
        request.options = WatchOptions()
        let watch = client.watch(request)
        let address = "\(spec.metadata.namespace)/\(statusType)/\(spec.metadata.id)"
        return try await withDeadline(timeout, what: "waiting for \(address) to report version \(spec.metadata.version)") {
            for try await event in watch {
                guard let status = event.resource, event.type != .destroyed else { continue }
                let reported = status.metadata.annotations["cosi.dev/spec-version"].flatMap { UInt64($0) } ?? 0
                guard reported >= wanted else { continue }
                let fields = JSONValue.from((try? Yams.compose(yaml: status.spec.yamlSpec)) ?? Node(""))
                if let error = fields["error"], !error.text.isEmpty {
                    throw CLIError("\(address) reports an error for version \(spec.metadata.version): \(error.text)")
                }
                return status
            }
            throw CLIError("the watch of \(address) ended")
        }
    }
}

/// Runs `body`, failing with a clear error when it takes longer than `timeout`.
func withDeadline<T: Sendable>(_ timeout: Duration, what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw CLIError("DEADLINE_EXCEEDED: timed out after \(spoken(timeout)) \(what)")
        }
        return value
    }
}

/// A duration as cosictl says it: `30 s`, `1.5 s`.
func spoken(_ duration: Duration) -> String {
    let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    return "\(seconds.rounded() == seconds ? String(Int(seconds)) : String(seconds)) s"
}

/// A unified diff of two texts by lines (three lines of context), as diff -u prints it.
func unifiedDiff(_ old: String, _ new: String, from: String, to: String) -> String {
    let a = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).dropLastEmpty()
    let b = new.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).dropLastEmpty()
    // Longest common subsequence table (resources are small).
    var lcs = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in stride(from: a.count - 1, through: 0, by: -1) {
        for j in stride(from: b.count - 1, through: 0, by: -1) {
            lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : max(lcs[i + 1][j], lcs[i][j + 1])
        }
    }
    enum Line { case same(String), removed(String), added(String) }
    var lines: [Line] = []
    var i = 0, j = 0
    while i < a.count || j < b.count {
        if i < a.count, j < b.count, a[i] == b[j] {
            lines.append(.same(a[i])); i += 1; j += 1
        } else if i < a.count, j == b.count || lcs[i + 1][j] >= lcs[i][j + 1] {
            lines.append(.removed(a[i])); i += 1
        } else {
            lines.append(.added(b[j])); j += 1
        }
    }
    // Hunks: changed lines with up to three lines of context around them.
    let changed = lines.indices.filter { if case .same = lines[$0] { false } else { true } }
    guard !changed.isEmpty else { return "" }
    var out = "--- \(from)\n+++ \(to)\n"
    var start = 0
    while start < changed.count {
        var end = start
        while end + 1 < changed.count, changed[end + 1] - changed[end] <= 7 { end += 1 }
        let lower = max(changed[start] - 3, 0), upper = min(changed[end] + 3, lines.count - 1)
        var oldStart = 1, newStart = 1
        for line in lines[..<lower] {
            switch line {
            case .same: oldStart += 1; newStart += 1
            case .removed: oldStart += 1
            case .added: newStart += 1
            }
        }
        var oldCount = 0, newCount = 0, body = ""
        for line in lines[lower...upper] {
            switch line {
            case .same(let text): oldCount += 1; newCount += 1; body += " \(text)\n"
            case .removed(let text): oldCount += 1; body += "-\(text)\n"
            case .added(let text): newCount += 1; body += "+\(text)\n"
            }
        }
        out += "@@ -\(oldCount == 0 ? oldStart - 1 : oldStart),\(oldCount) +\(newCount == 0 ? newStart - 1 : newStart),\(newCount) @@\n" + body
        start = end + 1
    }
    return out
}

extension Array where Element == String {
    fileprivate func dropLastEmpty() -> [String] {
        last == "" ? Array(dropLast()) : self
    }
}
