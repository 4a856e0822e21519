import CosiClient
import CosiController
import CosiMessages
import CosiTesting
import Foundation
import Testing

/// What a kubectl or talosctl user reaches for: describe, wait, apply --wait, the output forms,
/// contexts and completion.
@Suite("cosictl features", .serialized, .timeLimit(.minutes(2)))
struct CosictlFeatureTests {
    typealias Setup = CosictlTests.Setup

    @Test func applyWaitsForTheStatusAndDescribeShowsItAll() async throws {
        let setup = try await Setup(controllers: "hostname")
        let applied = try await setup.run(["apply", "-f", "-", "--wait"], input: "metadata: {type: hsp, id: hostname, labels: {tier: node}}\nspec: {hostname: node-7}\n")
        #expect(applied.status == 0, "\(applied.err)")
        #expect(applied.out.contains("network/HostnameStatuses.net.cosi.dev/hostname reports version 1"), "\(applied.out)")
        // No race between apply and reading what the controller did.
        let status = try await setup.run(["get", "hst", "hostname", "-o", "jsonpath={.spec.hostname}"])
        #expect(status.out == "node-7\n")
        #expect(try String(contentsOfFile: setup.dir + "/root/etc/hostname", encoding: .utf8) == "node-7\n")

        let described = try await setup.run(["describe", "hsp", "hostname"])
        #expect(described.status == 0, "\(described.err)")
        for line in ["Type:        HostnameSpecs.net.cosi.dev", "Phase:       running", "Owner:       - (written through the State service)",
                     "Labels:      tier=node", "Finalizers:  hostname (built-in controller, running)", "Spec:\n  hostname: node-7",
                     "Status:      network/HostnameStatuses.net.cosi.dev/hostname", "reports this version, by hostname (built-in controller, running)"] {
            #expect(described.out.contains(line), "\(line) in:\n\(described.out)")
        }
        // A status that reports an error fails the wait, with the error.
        let bad = try await setup.run(["apply", "-f", "-", "--wait", "--timeout", "10"], input: "metadata: {type: hsp, id: hostname}\nspec: {hostname: -bad-}\n")
        #expect(bad.status == 1)
        #expect(bad.err.contains("reports an error for version") && bad.err.contains("hostname must be"), "\(bad.err)")
    }

    @Test func waitForConditions() async throws {
        let setup = try await Setup()
        try await setup.define(["Things.test.dev"])
        let (created, _, _) = try setup.start(["wait", "Things.test.dev", "t", "--for", "spec.color=blue", "--timeout", "20"])
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: t}\nspec: {color: red}\n")
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: t}\nspec: {color: blue}\n")
        try await eventually("the wait ends") { !created.isRunning }
        #expect(created.terminationStatus == 0)
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: t, finalizers: [f]}\nspec: {color: blue}\n")
        let (deleted, _, _) = try setup.start(["wait", "Things.test.dev/t", "--for", "deleted", "--timeout", "20"])
        _ = try await setup.run(["delete", "Things.test.dev", "t"])
        try await eventually("the wait ends") { !deleted.isRunning }
        #expect(deleted.terminationStatus == 0)
        let timedOut = try await setup.run(["wait", "Things.test.dev", "never", "--for", "created", "--timeout", "1"])
        #expect(timedOut.status == 1)
        #expect(timedOut.err.contains("DEADLINE_EXCEEDED: timed out after 1 s waiting for default/Things.test.dev/never: created"), "\(timedOut.err)")
        let badCondition = try await setup.run(["wait", "Things.test.dev", "t", "--for", "phase=sleeping"])
        #expect(badCondition.status == 64)
    }

    @Test func outputFormsSortingAndNamespaces() async throws {
        let setup = try await Setup()
        try await setup.define(["Things.test.dev"])
        for (namespace, id, size) in [("default", "b", 10), ("default", "a", 9), ("network", "c", 100)] {
            _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {namespace: \(namespace), type: Things.test.dev, id: \(id), labels: {size: '\(size)'}}\nspec: {size: \(size)}\n")
        }
        let names = try await setup.run(["get", "Things.test.dev", "-o", "name"])
        #expect(names.out == "things.test.dev/a\nthings.test.dev/b\n")
        let sorted = try await setup.run(["get", "Things.test.dev", "--sort-by", ".spec.size", "-o", "jsonpath={range .items[*]}{.metadata.id}{\" \"}{end}"])
        #expect(sorted.out == "a b \n", "numbers sort as numbers: \(sorted.out)")
        let everywhere = try await setup.run(["get", "Things.test.dev", "-A", "-o", "jsonpath={.items[*].metadata.id}"])
        #expect(everywhere.out == "a b c\n", "\(everywhere.out) \(everywhere.err)")
        let filtered = try await setup.run(["get", "Things.test.dev", "-A", "-o", "jsonpath={.items[?(@.spec.size>9)].metadata.id}"])
        #expect(filtered.out == "b c\n", "\(filtered.out)")
        let labels = try await setup.run(["get", "Things.test.dev", "--show-labels"])
        #expect(labels.out.split(separator: "\n").first?.hasSuffix("LABELS") == true)
        #expect(labels.out.contains("size=9"))
        let one = try await setup.run(["get", "Things.test.dev/a", "-o", "jsonpath={.metadata.labels.size}"])
        #expect(one.out == "9\n")
        let badFormat = try await setup.run(["get", "Things.test.dev", "-o", "xml"])
        #expect(badFormat.status == 64 && badFormat.err.contains("choose table, wide, yaml, json, name or jsonpath=TEMPLATE"), "\(badFormat.err)")
    }

    @Test func contextsAreListedAndChosen() async throws {
        let setup = try await Setup()
        let env = ["COSICONFIG": setup.dir + "/config.yaml"]
        let gen = { (name: String) async throws in
            try await setup.run(["gen", "config", "--name", name, "--ca-cert", "Certs/ca.crt", "--cert", "Certs/admin.crt", "--key", "Certs/admin.key", "--endpoint", "127.0.0.1:\(setup.port)"], environment: env, endpoint: false)
        }
        #expect(try await gen("one").out.contains("the current context is now \"one\""))
        let second = try await gen("two")
        #expect(second.out.contains("the current context is now \"two\" (it was \"one\""), "\(second.out)")
        let listed = try await setup.run(["config", "get-contexts"], environment: env, endpoint: false)
        let rows = listed.out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.first == ["CURRENT", "NAME", "ENDPOINTS", "NODES", "IDENTITY"])
        #expect(rows.dropFirst().map { $0.prefix(2).joined(separator: " ") } == ["one 127.0.0.1:\(setup.port)", "* two"], "\(listed.out)")
        #expect(try await setup.run(["config", "use-context", "one"], environment: env, endpoint: false).out.contains("switched to context \"one\" (was \"two\")"))
        #expect(try await setup.run(["config", "current-context"], environment: env, endpoint: false).out == "one\n")
        let missing = try await setup.run(["config", "use-context", "three"], environment: env, endpoint: false)
        #expect(missing.status == 1 && missing.err.contains("has no context \"three\" (it has: one, two)"), "\(missing.err)")
    }

    @Test func completionScriptsCompleteTypesFromTheServer() async throws {
        let setup = try await Setup()
        for shell in ["bash", "zsh", "fish"] {
            let script = try await setup.run(["completion", shell], endpoint: false)
            #expect(script.status == 0 && script.out.contains("describe") && script.out.contains("---completion"), "\(shell)")
        }
        // Any command that reads the types caches their names; completion answers from the cache.
        #expect(try await setup.run(["get", "rd"]).status == 0)
        let completed = try await setup.run(["---completion", "get", "--", "positional@0", "2", "3", "cosictl", "get", "hos"], endpoint: false)
        #expect(completed.out.contains("hostnamespecs.net.cosi.dev") && completed.out.contains("hostnamestatus"), "\(completed.out) \(completed.err)")
        #expect(!completed.out.contains("kernelparamspecs"))
    }

    @Test func deleteSaysWhoHoldsTheFinalizers() async throws {
        let setup = try await Setup()
        let client = try await setup.client()
        let (first, _) = DerivingController.chain()
        try await setup.define(["Ints.test.dev", "Strings.test.dev"])
        let host = RemoteControllerHost(client: client, controller: first)
        let hosting = Task { try await host.run() }
        defer { hosting.cancel() }
        try await eventually("connected") { host.isConnected }
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Ints.test.dev, id: one}\nspec: {value: 1}\n")
        try await eventually("the finalizer") { try await client.get(namespace: "default", type: "Ints.test.dev", id: "one").metadata.finalizers == ["ints-to-strings"] }
        let deleted = try await setup.run(["delete", "Ints.test.dev", "one", "--timeout", "20"])
        #expect(deleted.status == 0, "\(deleted.err)")
        #expect(deleted.err.contains("waiting for finalizers: ints-to-strings (remote controller of admin, connected)"), "\(deleted.err)")
        hosting.cancel()
        _ = try? await hosting.value
        await client.close()
    }
}
