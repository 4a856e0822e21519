import CosiClient
import CosiController
import CosiMessages
import CosiRPC
import CosiTesting
import Foundation
import Testing
import Yams

/// cosictl never prints an empty table for a typo, never changes what the user did not write, and
/// fails clearly (each test here failed before these were fixed).
@Suite("cosictl correctness", .serialized, .timeLimit(.minutes(2)))
struct CosictlCorrectnessTests {
    typealias Setup = CosictlTests.Setup

    @Test func unknownTypesAreErrorsNamingTheClosest() async throws {
        let setup = try await Setup()
        for arguments in [["get", "hostnamespecz"], ["get", "hostnamespecz", "--watch"], ["delete", "hostnamespecz", "x"],
                          ["teardown", "hostnamespecz", "x"], ["edit", "hostnamespecz", "x"], ["describe", "hostnamespecz", "x"]] {
            let result = try await setup.run(arguments, environment: ["EDITOR": "true"])
            #expect(result.status == 1, "\(arguments): \(result.out) \(result.err)")
            #expect(result.out.isEmpty, "\(arguments): no table: \(result.out)")
            #expect(result.err.contains("no resource type \"hostnamespecz\"; did you mean hostnamespecs?"), "\(arguments): \(result.err)")
        }
        let all = try await setup.run(["get", "all"])
        #expect(all.status == 1 && all.err.contains("no resource type \"all\""), "\(all.err)")
        // A full type name nothing defines and nothing uses: the example the help once gave.
        let undefined = try await setup.run(["get", "Hostnames.net.cosi.dev"])
        #expect(undefined.status == 1, "\(undefined.out)")
        #expect(undefined.err.contains("did you mean hostnamespecs or ") && undefined.err.contains("hostnamestatuses?"), "\(undefined.err)")
        let applied = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: hostnamespecz, id: x}\nspec: {a: 1}\n")
        #expect(applied.status == 1 && applied.err.contains("did you mean hostnamespecs?"), "\(applied.err)")
        let help = try await setup.run(["--help"], endpoint: false)
        #expect(!help.out.contains("Hostnames.net.cosi.dev"), "the help's example is a type that exists")
    }

    @Test func applyResolvesAliasesAndRefusesUndefinedTypes() async throws {
        let setup = try await Setup()
        let applied = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: hsp, id: hostname}\nspec: {hostname: node-1}\n")
        #expect(applied.status == 0, "\(applied.err)")
        #expect(applied.out.contains("network/HostnameSpecs.net.cosi.dev/hostname created"), "\(applied.out)")
        let got = try await setup.run(["get", "hsp", "hostname", "-o", "name"])
        #expect(got.out == "hostnamespecs.net.cosi.dev/hostname\n", "\(got.out) \(got.err)")
        // No orphan under the alias.
        let client = try await setup.client()
        await #expect(throws: RPCError.self) { _ = try await client.get(namespace: "default", type: "hsp", id: "hostname") }
        await client.close()

        let undefined = "metadata: {type: Widgets.test.dev, id: w}\nspec: {a: 1}\n"
        let refused = try await setup.run(["apply", "-f", "-"], input: undefined)
        #expect(refused.status == 1)
        #expect(refused.err.contains("--allow-undefined-type"), "\(refused.err)")
        let allowed = try await setup.run(["apply", "-f", "-", "--allow-undefined-type"], input: undefined)
        #expect(allowed.status == 0, "\(allowed.err)")
        // An undefined type that has resources can be read.
        let listed = try await setup.run(["get", "Widgets.test.dev"])
        #expect(listed.status == 0 && listed.out.contains("Widgets.test.dev"), "\(listed.err)")
    }

    @Test func anAmbiguousAliasIsAnErrorListingTheCandidates() async throws {
        let setup = try await Setup()
        let client = try await setup.client()
        for type in ["Pears.fruit.test.dev", "Plums.fruit.test.dev"] {
            _ = try await client.create(try MetaNamespace.definition(Meta.ResourceDefinitionSpec(resourceType: type, aliases: ["p"])))
        }
        await client.close()
        let result = try await setup.run(["get", "p"])
        #expect(result.status == 1)
        #expect(result.err.contains("\"p\" is ambiguous: it names Pears.fruit.test.dev (p), Plums.fruit.test.dev (p)"), "\(result.err)")
        // The built-in types' short names are distinct: `hs` is no longer one.
        let hs = try await setup.run(["get", "hs"])
        #expect(hs.status == 1 && !hs.err.contains("ambiguous"), "\(hs.err)")
        for alias in ["hsp", "hst", "rsp", "rst", "shsp", "shst", "kpsp", "kpst", "tssp", "tsst", "hostname", "resolvers"] {
            let one = try await setup.run(["get", alias])
            #expect(one.status == 0, "\(alias): \(one.err)")
        }
    }

    @Test func controllerOutputsCannotBeForged() async throws {
        let setup = try await Setup(controllers: "hostname")
        let applied = try await setup.run(["apply", "-f", "-", "--wait"], input: "metadata: {type: hsp, id: hostname}\nspec: {hostname: node-1}\n")
        #expect(applied.status == 0, "\(applied.err)")
        // The status is the controller's: neither apply nor delete touches it.
        let forged = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: hostnamestatuses, id: hostname}\nspec: {hostname: forged}\n")
        #expect(forged.status == 1)
        #expect(forged.err.contains("PERMISSION_DENIED") && forged.err.contains("owned by controller hostname"), "\(forged.err)")
        let deleted = try await setup.run(["delete", "hostnamestatuses", "hostname"])
        #expect(deleted.status == 1)
        #expect(deleted.err.contains("owned by controller hostname"), "\(deleted.err)")
        let status = try await setup.run(["get", "hst", "hostname", "-o", "jsonpath={.spec.hostname} {.metadata.phase}"])
        #expect(status.out == "node-1 running\n", "\(status.out) \(status.err)")
    }

    @Test func applyNeverTouchesFinalizersAndSaysUnchanged() async throws {
        let setup = try await Setup(controllers: "hostname")
        let yaml = "metadata: {type: hsp, id: hostname, labels: {tier: node}}\nspec: {hostname: node-1}\n"
        #expect(try await setup.run(["apply", "-f", "-", "--wait"], input: yaml).status == 0)
        let before = try await setup.run(["get", "hsp", "hostname", "-o", "jsonpath={.metadata.version} {.metadata.finalizers}"]).out
        #expect(before.hasSuffix(" hostname\n"), "the controller's finalizer: \(before)")
        let again = try await setup.run(["apply", "-f", "-"], input: yaml)
        #expect(again.out.contains("hostname unchanged"), "\(again.out)")
        // A document without finalizers keeps the stored ones.
        let changed = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: hsp, id: hostname, labels: {tier: node}}\nspec: {hostname: node-2}\n")
        #expect(changed.out.contains("updated"), "\(changed.out)")
        let client = try await setup.client()
        let stored = try await client.get(namespace: "network", type: "HostnameSpecs.net.cosi.dev", id: "hostname")
        #expect(stored.metadata.finalizers == ["hostname"])
        #expect(stored.metadata.owner == "")
        #expect(stored.metadata.labels == ["tier": "node"])
        // Its history: created, the controller's finalizer, our one update; never a version without it.
        #expect(stored.metadata.version == String(Int(before.split(separator: " ")[0])! + 1))
        await client.close()
    }

    @Test func applyOfAResourceTearingDownIsAnError() async throws {
        let setup = try await Setup()
        try await setup.define(["Things.test.dev"])
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: held, finalizers: [guard]}\nspec: {v: 1}\n")
        let torn = try await setup.run(["teardown", "Things.test.dev", "held"])
        #expect(torn.out.contains("waiting on finalizers: guard"), "\(torn.out)")
        let applied = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: held}\nspec: {v: 2}\n")
        #expect(applied.status == 1)
        #expect(applied.err.contains("is tearing down (waiting on finalizers: guard) and cannot be updated"), "\(applied.err)")
        #expect(!applied.out.contains("updated"))
    }

    @Test func labelComparisonsAllMatch() async throws {
        let setup = try await Setup()
        try await setup.define(["Things.test.dev"])
        for (id, weight) in [("light", "3"), ("middle", "5"), ("heavy", "10")] {
            _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: \(id), labels: {weight: '\(weight)'}}\nspec: {v: 1}\n")
        }
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: none}\nspec: {v: 1}\n")
        func ids(_ selector: String) async throws -> [String] {
            try await setup.run(["get", "Things.test.dev", "-l", selector, "-o", "name"]).out.split(separator: "\n").map { String($0.split(separator: "/")[1]) }
        }
        #expect(try await ids("weight>5") == ["heavy"])
        #expect(try await ids("weight>=5") == ["heavy", "middle"])
        #expect(try await ids("weight<5") == ["light"])
        #expect(try await ids("weight<=5") == ["light", "middle"])
        #expect(try await ids("weight>3,weight<10") == ["middle"])
    }

    @Test func stringsStayStringsAndYAMLReadsBackUnchanged() async throws {
        let setup = try await Setup()
        try await setup.define(["Things.test.dev"])
        let yaml = "metadata: {type: Things.test.dev, id: a, labels: {zip: '007', ver: '1.10', flag: 'true'}}\nspec: {n: 3, s: '007', b: true}\n---\nmetadata: {type: Things.test.dev, id: b}\nspec: {n: 4}\n"
        #expect(try await setup.run(["apply", "-f", "-"], input: yaml).status == 0)
        let json = try await setup.run(["get", "Things.test.dev", "-o", "json"])
        let items = try #require((try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any])?["items"] as? [[String: Any]])
        let labels = (items[0]["metadata"] as? [String: Any])?["labels"] as? [String: Any]
        #expect(labels?["zip"] as? String == "007")
        #expect(labels?["ver"] as? String == "1.10")
        #expect(labels?["flag"] as? String == "true")
        #expect((items[0]["metadata"] as? [String: Any])?["version"] as? String == "1")
        let spec = items[0]["spec"] as? [String: Any]
        #expect(spec?["s"] as? String == "007")
        #expect(spec?["n"] as? Int == 3)

        let listed = try await setup.run(["get", "Things.test.dev", "-o", "yaml"])
        let documents = try Yams.load_all(yaml: listed.out).map { $0 as? [String: Any] }
        #expect(documents.count == 2)
        let metadata = documents[0]?["metadata"] as? [String: Any]
        #expect((metadata?["labels"] as? [String: Any])?["zip"] as? String == "007", "YAML readers see a string")
        #expect(metadata?["version"] as? String == "1", "the version is a string in YAML too")
        // What -o yaml prints, apply reads back as it is.
        let back = try await setup.run(["apply", "-f", "-"], input: listed.out)
        #expect(back.status == 0, "\(back.err)")
        #expect(back.out == "default/Things.test.dev/a unchanged\ndefault/Things.test.dev/b unchanged\n", "\(back.out)")
    }

    @Test func aWatchSaysItLostTheServerAndResumes() async throws {
        let setup = try await Setup(durable: true)
        try await setup.define(["Things.test.dev"])
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: w}\nspec: {v: 1}\n")
        let (watcher, out, err) = try setup.start(["get", "Things.test.dev", "--watch"])
        defer { watcher.terminate() }
        try await CosidProcessTests.waitFor("default", in: out)
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: w}\nspec: {v: 2}\n")
        try await eventually("the update") { out.value.split(separator: "\n").count == 3 }
        setup.stop()
        try await eventually("the loss said") { err.value.contains("connection lost") && err.value.contains("reconnecting") }
        try await setup.restart()
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: w}\nspec: {v: 3}\n")
        try await eventually("the change after the restart") { out.value.split(separator: "\n").count == 4 }
        #expect(err.value.contains("reconnected: resuming from the last event seen"), "\(err.value)")
        let versions = out.value.split(separator: "\n").dropFirst().map { $0.split(separator: " ", omittingEmptySubsequences: true)[3] }
        #expect(versions == ["1", "2", "3"], "every version once: \(out.value)")
    }

    @Test func builtInSpecsAreValidated() async throws {
        let setup = try await Setup()
        let bad = "metadata: {type: hsp, id: hostname}\nspec: {hostnam: x}\n"
        let applied = try await setup.run(["apply", "-f", "-"], input: bad)
        #expect(applied.status == 1)
        #expect(applied.err.contains("INVALID_ARGUMENT") && applied.err.contains("unknown field \"hostnam\" (fields: domainname, hostname)"), "\(applied.err)")
        let dry = try await setup.run(["apply", "--dry-run", "-f", "-"], input: bad)
        #expect(dry.status == 2, "diff(1): trouble")
        #expect(dry.err.contains("unknown field \"hostnam\""), "\(dry.err)")
        let wrongKind = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: rsp, id: resolvers}\nspec: {dnsServers: {a: 1}}\n")
        #expect(wrongKind.err.contains("field dnsServers must be a list of values"), "\(wrongKind.err)")
        #expect(try await setup.run(["get", "hsp"]).err.contains("no HostnameSpecs.net.cosi.dev in namespace network"), "nothing was stored")
    }

    @Test func dryRunAndDiffFollowDiff1() async throws {
        let setup = try await Setup()
        let yaml = "metadata: {type: hsp, id: hostname}\nspec: {hostname: node-1}\n"
        let new = try await setup.run(["diff", "-f", "-"], input: yaml)
        #expect(new.status == 1, "differences: \(new.err)")
        #expect(new.out.contains("network/HostnameSpecs.net.cosi.dev/hostname: create\n--- /dev/null\n"), "\(new.out)")
        #expect(new.out.contains("+  hostname: node-1"), "\(new.out)")
        #expect(try await setup.run(["get", "hsp"]).out.isEmpty, "a dry run writes nothing")
        _ = try await setup.run(["apply", "-f", "-"], input: yaml)
        let same = try await setup.run(["apply", "--dry-run", "-f", "-"], input: yaml)
        #expect(same.status == 0)
        #expect(same.out == "network/HostnameSpecs.net.cosi.dev/hostname: unchanged\n", "\(same.out)")
        let changed = try await setup.run(["apply", "--dry-run", "-f", "-"], input: "metadata: {type: hsp, id: hostname}\nspec: {hostname: node-2}\n")
        #expect(changed.status == 1)
        #expect(changed.out.contains("-  hostname: node-1\n+  hostname: node-2\n"), "\(changed.out)")
        #expect(try await setup.run(["get", "hsp", "hostname", "-o", "jsonpath={.spec.hostname}"]).out == "node-1\n")
    }

    @Test func exitCodesAndGlobalFlags() async throws {
        let setup = try await Setup()
        let usage = try await setup.run(["get"])
        #expect(usage.status == 64, "a usage error: \(usage.err)")
        let unknown = try await setup.run(["NOSUCH", "--help"], endpoint: false)
        #expect(unknown.status == 64)
        #expect(unknown.err.contains("unknown command \"NOSUCH\""), "\(unknown.err)")
        let close = try await setup.run(["gett", "rd"], endpoint: false)
        #expect(close.err.contains("did you mean get"), "\(close.err)")
        let refused = try await setup.run(["get", "hsp", "missing"])
        #expect(refused.status == 1)
        #expect(refused.err.hasPrefix("Error: NOT_FOUND: "), "\(refused.err)")
        #expect(!refused.err.contains("Usage"), "\(refused.err)")
        // Global flags before the command, as talosctl and kubectl take them.
        let config = setup.dir + "/config.yaml"
        _ = try await setup.run(["gen", "config", "--name", "local", "--ca-cert", "Certs/ca.crt", "--cert", "Certs/admin.crt", "--key", "Certs/admin.key", "--endpoint", "127.0.0.1:\(setup.port)"], environment: ["COSICONFIG": config], endpoint: false)
        let before = try await setup.run(["--context", "local", "get", "ns"], environment: ["COSICONFIG": config], endpoint: false)
        #expect(before.status == 0, "\(before.err)")
        let endpointFirst = try await setup.run(["--endpoint", "127.0.0.1:\(setup.port)", "info"], endpoint: false)
        #expect(endpointFirst.status == 0, "\(endpointFirst.err)")
    }

    @Test func theNamespacesCosidUsesAreRegistered() async throws {
        let setup = try await Setup()
        let namespaces = try await setup.run(["get", "ns", "-o", "name"])
        #expect(namespaces.out.split(separator: "\n").map { String($0.split(separator: "/")[1]) } == ["default", "meta", "network", "runtime"], "\(namespaces.out)")
    }

    @Test func graphInstallsNothingAndSaysHow() async throws {
        let setup = try await Setup()
        let empty = setup.dir + "/empty-path"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let result = try await setup.run(["graph", "-o", "png", "graph.png"], environment: ["PATH": empty])
        #expect(result.status == 1)
        #expect(result.err.contains("install Graphviz") && result.err.contains("apt-get install graphviz"), "\(result.err)")
        #expect(!result.err.contains("installing"))
        #expect(!FileManager.default.fileExists(atPath: setup.dir + "/graph.png"))
    }

    @Test func clientAndServerPrintOneVersion() async throws {
        let setup = try await Setup()
        let version = try await setup.run(["version"])
        let lines = version.out.split(separator: "\n").map { $0.split(separator: " ").last.map(String.init) ?? "" }
        #expect(lines.count == 2 && lines[0] == lines[1] && lines[0] == cosiVersion, "\(version.out)")
        let flag = try await setup.run(["--version"], endpoint: false)
        #expect(flag.out == cosiVersion + "\n")
    }
}

@Suite("CosiClient across a restart", .timeLimit(.minutes(1)))
struct ClientReconnectTests {
    /// Server-streaming calls reconnect after a dropped connection, as unary calls do.
    @Test func listAndGetWorkAfterTheServerRestarts() async throws {
        let setup = try await CosictlTests.Setup(durable: true)
        try await setup.define(["Things.test.dev"])
        let client = try await setup.client()
        _ = try await client.create(Resource(metadata: Metadata(namespace: "default", type: "Things.test.dev", id: "a"), spec: Spec(yamlSpec: "v: 1\n")))
        setup.stop()
        try await setup.restart()
        #expect(try await client.list(namespace: "default", type: "Things.test.dev").map(\.metadata.id) == ["a"])
        #expect(try await client.get(namespace: "default", type: "Things.test.dev", id: "a").metadata.version == "1")
        await client.close()
    }
}
