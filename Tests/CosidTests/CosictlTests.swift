import CosiClient
import CosiController
import CosiMessages
import CosiTesting
import Foundation
import Testing

/// cosictl end to end against a real cosid on 127.0.0.1.
@Suite("cosictl end to end", .serialized, .timeLimit(.minutes(2)))
struct CosictlTests {
    static var cosictl: URL { CosidProcessTests.executable.deletingLastPathComponent().appendingPathComponent("cosictl") }

    /// A running cosid with development certificates in `dir`, and a way to run cosictl in `dir`.
    final class Setup: @unchecked Sendable {
        let cosid: CosidProcess
        var dir: String { cosid.directory }
        var port: Int { cosid.port }
        var output: CosidProcessTests.Output { cosid.output }

        /// `controllers`: the built-in controllers to run, acting on the sandbox `dir/root`;
        /// `durable`: state in `dir/data` (a restart keeps it) instead of memory.
        init(controllers: String = "none", durable: Bool = false, extra: [String] = []) async throws {
            let directory = StateBackends.temporaryDirectory()
            cosid = try await CosidProcess(["--listen", "unix:" + directory + "/admin.sock"] + extra, certificates: .development, durable: durable, controllers: controllers, directory: directory)
        }

        /// Stops cosid (SIGTERM) and waits for it.
        func stop() { cosid.stop() }

        /// Starts it again on its port.
        func restart() async throws { try await cosid.restart() }

        /// A client with the development admin certificate.
        func client() async throws -> CosiClient {
            try await cosid.client()
        }

        /// Defines resource types (as an admin would), so cosictl knows them.
        func define(_ types: [String], namespace: String = "default") async throws {
            let client = try await client()
            for type in types {
                var spec = Meta.ResourceDefinitionSpec(resourceType: type, defaultNamespace: namespace)
                if type == "Links.net.test.dev" {
                    spec.printColumns = [.init(name: "MTU", jsonPath: "{.mtu}")]
                }
                _ = try await client.create(try MetaNamespace.definition(spec))
            }
            await client.close()
        }

        /// Runs cosictl with the given arguments in `dir` (so ./Certs is used); returns status and
        /// output.
        func run(_ arguments: [String], input: String? = nil, environment: [String: String] = [:], endpoint: Bool = true) async throws -> (status: Int32, out: String, err: String) {
            var args = arguments
            if endpoint { args += ["--endpoint", "127.0.0.1:\(port)"] }
            var env = ProcessInfo.processInfo.environment
            env["COSICONFIG"] = dir + "/no-config.yaml"
            env["XDG_CACHE_HOME"] = dir + "/cache"
            for (key, value) in environment { env[key] = value }
            return try await runProcess(CosictlTests.cosictl, args, directory: dir, environment: env, input: input)
        }

        /// Starts cosictl in the background, collecting its standard output and error.
        func start(_ arguments: [String]) throws -> (process: Process, out: CosidProcessTests.Output, err: CosidProcessTests.Output) {
            try startCosictl(arguments + ["--endpoint", "127.0.0.1:\(port)"], directory: dir)
        }
    }

    static let hostname = """
        metadata:
          namespace: network
          type: HostnameSpecs.net.talos.dev
          id: hostname
          labels:
            tier: node
        spec:
          hostname: talos-1
        ---
        metadata:
          namespace: network
          type: HostnameSpecs.net.talos.dev
          id: spare
        spec:
          hostname: spare
        """

    @Test func cosictlClosesItsConnectionWithGoAwayBeforeExiting() async throws {
        let setup = try await Setup()
        for command in [["info"], ["get", "rd"], ["version"]] {
            let before = setup.output.value.components(separatedBy: "the client sent GOAWAY").count
            let result = try await setup.run(command)
            #expect(result.status == 0, "\(command): \(result.err)")
            // The server logs the close as the client's GOAWAY, not as a dropped connection.
            try await CosidProcessTests.waitFor("the client sent GOAWAY", in: setup.output, after: before)
        }
    }

    @Test func controllersAndTheirGraph() async throws {
        let setup = try await Setup()
        // A remote controller, registered with the development admin certificate and connected.
        let client = try await CosiClient.connect(.development(directory: setup.dir + "/Certs", port: setup.port))
        let (first, _) = DerivingController.chain()
        let host = RemoteControllerHost(client: client, controller: first)
        let hosting = Task { try await host.run() }
        defer { hosting.cancel() }
        try await eventually("connected") { host.isConnected }
        try await eventually("published") {
            try await setup.run(["controllers"]).out.contains("ints-to-strings")
        }

        let listed = try await setup.run(["controllers"])
        #expect(listed.status == 0, "\(listed.err)")
        let rows = listed.out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.first == ["NAME", "ORIGIN", "IDENTITY", "RUNNING", "RESTARTS", "LAST", "ERROR"])
        #expect(rows.dropFirst().first == ["ints-to-strings", "remote", "admin", "yes", "0", "-"])

        let graph = try await setup.run(["graph"])
        let edges = graph.out.split(separator: "\n").dropFirst().map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(edges == [
            ["ints-to-strings", "output", "exclusive", "*", "Strings.test.dev", "*"],
            ["ints-to-strings", "input", "strong", "default", "Ints.test.dev", "*"],
            ["ints-to-strings", "input", "destroyReady", "default", "Strings.test.dev", "*"],
        ], "\(graph.out)")

        let dot = try await setup.run(["graph", "--dot"])
        #expect(dot.out.hasPrefix("digraph controllers {"))
        #expect(dot.out.contains("\"resource:default/Ints.test.dev\" -> \"controller:ints-to-strings\" [label=\"strong\", style=bold];"))
        #expect(dot.out.contains("\"controller:ints-to-strings\" -> \"resource:Strings.test.dev\" [label=\"exclusive\"];"))

        let png = try await setup.run(["graph", "-o", "png", "graph.png"])
        #expect(png.status == 0, "\(png.err)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: setup.dir + "/graph.png"))
        #expect(bytes.prefix(4) == Data([0x89, 0x50, 0x4e, 0x47]), "a PNG")
        hosting.cancel()
        _ = try? await hosting.value
        await client.close()
    }

    @Test func applyGetInEveryFormatAndDelete() async throws {
        let setup = try await Setup()
        try await setup.define(["HostnameSpecs.net.talos.dev"], namespace: "network")
        let applied = try await setup.run(["apply", "-f", "-"], input: Self.hostname)
        #expect(applied.status == 0, "\(applied.err)")
        #expect(applied.out.contains("network/HostnameSpecs.net.talos.dev/hostname created"))
        // The same YAML again changes nothing and writes nothing.
        let again = try await setup.run(["apply", "-f", "-"], input: Self.hostname)
        #expect(again.out.contains("hostname unchanged"), "\(again.out)")

        let table = try await setup.run(["get", "HostnameSpecs.net.talos.dev", "-n", "network"])
        let lines = table.out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(lines.first == ["NAMESPACE", "TYPE", "ID", "VERSION"])
        #expect(lines.dropFirst().map { $0[2] } == ["hostname", "spare"])
        #expect(lines.dropFirst().map { $0[3] } == ["1", "1"], "nothing was rewritten")

        let yaml = try await setup.run(["get", "HostnameSpecs.net.talos.dev", "hostname", "-n", "network", "-o", "yaml"])
        let keys = yaml.out.split(separator: "\n").filter { $0.hasPrefix("  ") && !$0.hasPrefix("    ") }.map { $0.split(separator: ":")[0].trimmingCharacters(in: .whitespaces) }
        #expect(keys == ["namespace", "type", "id", "version", "phase", "created", "updated", "labels", "hostname"], "\(yaml.out)")
        #expect(yaml.out.contains("spec:\n  hostname: talos-1"))

        // One resource by id: the object; a list: {"items": [...]}.
        let one = try await setup.run(["get", "HostnameSpecs.net.talos.dev", "hostname", "-n", "network", "-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(one.out.utf8)) as? [String: Any]
        #expect((object?["metadata"] as? [String: Any])?["id"] as? String == "hostname")
        #expect((object?["metadata"] as? [String: Any])?["version"] as? String == "1")
        let json = try await setup.run(["get", "HostnameSpecs.net.talos.dev", "-n", "network", "-l", "tier=node", "-o", "json"])
        let list = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any]
        let items = list?["items"] as? [[String: Any]]
        #expect(items?.count == 1)
        #expect((items?.first?["metadata"] as? [String: Any])?["id"] as? String == "hostname")

        // Aliases of the meta types resolve case-insensitively.
        let rd = try await setup.run(["get", "RD"])
        #expect(rd.out.contains("resourcedefinitions.meta.cosi.dev"))

        let deleted = try await setup.run(["delete", "HostnameSpecs.net.talos.dev", "spare", "-n", "network"])
        #expect(deleted.out.contains("destroyed"))
        let missing = try await setup.run(["get", "HostnameSpecs.net.talos.dev", "spare", "-n", "network"])
        #expect(missing.status == 1)
        #expect(missing.err.contains("NOT_FOUND"))
        #expect(!missing.err.contains("Usage:"), "a failed call prints no usage: \(missing.err)")
    }

    @Test func deleteWaitsForFinalizers() async throws {
        let setup = try await Setup()
        try await setup.define(["Things.test.dev"])
        let held = """
            metadata:
              namespace: default
              type: Things.test.dev
              id: held
              finalizers: [guard]
            spec:
              a: 1
            """
        _ = try await setup.run(["apply", "-f", "-"], input: held)
        let port = setup.port, dir = setup.dir
        let deleting = Task.detached { try await setup.run(["delete", "Things.test.dev", "held"]) }
        // Remove the finalizer from the side, as a controller would.
        let client = try await CosiClient.connect(.development(directory: dir + "/Certs", port: port))
        try await eventually("delete tore it down") {
            try await client.get(namespace: "default", type: "Things.test.dev", id: "held").metadata.phase == "tearingDown"
        }
        var resource = try await client.get(namespace: "default", type: "Things.test.dev", id: "held")
        resource.metadata.finalizers = []
        _ = try await client.update(resource)
        let result = try await deleting.value
        #expect(result.status == 0, "\(result.err)")
        #expect(result.err.contains("waiting for finalizers: guard (no controller of that name is registered)"), "\(result.err)")
        #expect(result.out.contains("destroyed"))
        await client.close()
    }

    @Test func watchPrintsChangesWithMarkers() async throws {
        let setup = try await Setup()
        try await setup.define(["Things.test.dev"])
        let (watcher, collected, _) = try setup.start(["get", "Things.test.dev", "--watch"])
        defer { watcher.terminate() }
        try await CosidProcessTests.waitFor("NAMESPACE", in: collected)
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata:\n  type: Things.test.dev\n  id: w\nspec:\n  v: 1\n")
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata:\n  type: Things.test.dev\n  id: w\nspec:\n  v: 2\n")
        _ = try await setup.run(["delete", "Things.test.dev", "w"])
        try await CosidProcessTests.waitFor("-   default", in: collected)
        let lines = collected.value.split(separator: "\n").map { String($0) }
        let header = lines[0]
        // The event column has a header, PHASE is a column, and every row lines up with it.
        #expect(header.hasPrefix("*   NAMESPACE"), "\(header)")
        #expect(header.contains("PHASE"))
        let rows = Array(lines.dropFirst())
        #expect(rows.map { String($0.prefix(1)) } == ["+", " ", " ", "-"], "\(rows)")
        for row in rows {
            for column in ["TYPE", "ID", "VERSION", "PHASE"] {
                let at = header.range(of: column)!.lowerBound.utf16Offset(in: header)
                let cell = row.dropFirst(at)
                #expect(row.count > at && row[row.index(row.startIndex, offsetBy: at - 1)] == " " && cell.first != " ", "\(column) lines up: \(header) / \(row)")
            }
        }
        #expect(rows[2].contains("tearingDown"), "the teardown shows in PHASE: \(rows)")
    }

    @Test func genAndConfigGiveAWorkingContext() async throws {
        let setup = try await Setup()
        let config = setup.dir + "/config.yaml"
        let env = ["COSICONFIG": config]
        // A reader certificate from the development CA.
        let client = try await setup.run(["gen", "client", "--ca", "Certs/ca", "--name", "alice", "--role", "os:reader", "--days", "10", "--out", "alice"], environment: env, endpoint: false)
        #expect(client.status == 0, "\(client.err)")
        let attributes = try FileManager.default.attributesOfItem(atPath: setup.dir + "/alice.key")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let written = try await setup.run(["gen", "config", "--name", "alice", "--ca-cert", "Certs/ca.crt", "--cert", "alice.crt", "--key", "alice.key", "--endpoint", "127.0.0.1:\(setup.port)"], environment: env, endpoint: false)
        #expect(written.status == 0, "\(written.err)")
        let whoami = try await setup.run(["whoami"], environment: env, endpoint: false)
        #expect(whoami.out.contains("identity: alice"), "\(whoami.out) \(whoami.err)")
        #expect(whoami.out.contains("os:reader"))
        // The reader may not write: a clear refusal naming the role.
        let refused = try await setup.run(["apply", "-f", "-", "--allow-undefined-type"], input: "metadata:\n  type: Things.test.dev\n  id: x\nspec:\n  v: 1\n", environment: env, endpoint: false)
        #expect(refused.status != 0)
        #expect(refused.err.contains("PERMISSION_DENIED") && refused.err.contains("os:operator"), "\(refused.err)")
    }

    @Test func theLocalAdminSocketKnowsRootByItsCredentials() async throws {
        let setup = try await Setup()
        let socket = setup.dir + "/admin.sock"
        try await CosidProcessTests.waitFor("[UDS]", in: setup.output)
        let attributes = try FileManager.default.attributesOfItem(atPath: socket)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let whoami = try await setup.run(["whoami", "--endpoint", "unix:" + socket], endpoint: false)
        #expect(whoami.status == 0, "\(whoami.err)")
        #expect(whoami.out.contains("unix:" + socket))
        if getuid() == 0 {
            #expect(whoami.out.contains("identity: root"))
            #expect(whoami.out.contains("os:admin"))
        } else {
            #expect(whoami.out.contains("identity: uid:\(getuid())"))
        }
    }

    @Test func errorsAreOneClearSentence() async throws {
        let setup = try await Setup()
        let missingCA = try await setup.run(["info", "--ca", "/nonexistent/ca.crt"])
        #expect(missingCA.status != 0)
        #expect(missingCA.err.contains("cannot read the CA file /nonexistent/ca.crt"), "\(missingCA.err)")

        _ = try await setup.run(["gen", "ca", "--out", "other", "--days", "5"], endpoint: false)
        _ = try await setup.run(["gen", "client", "--ca", "other", "--name", "mallory", "--out", "mallory"], endpoint: false)
        let refused = try await setup.run(["info", "--cert", "mallory.crt", "--key", "mallory.key"])
        #expect(refused.status != 0)
        #expect(refused.err.contains("refused this client's certificate"), "\(refused.err)")
        #expect(refused.err.split(separator: "\n").count <= 3, "one sentence, not a stack: \(refused.err)")

        let pki = try TestPKI()
        let expired = try pki.client(expired: true)
        if case .pem(let certificate) = expired.certificateChain, case .pem(let key) = expired.privateKey {
            try certificate.write(toFile: setup.dir + "/old.crt", atomically: true, encoding: .utf8)
            try key.write(toFile: setup.dir + "/old.key", atomically: true, encoding: .utf8)
        }
        let stale = try await setup.run(["info", "--cert", "old.crt", "--key", "old.key"])
        #expect(stale.status != 0)
        #expect(stale.err.contains("has expired"), "\(stale.err)")
    }
}

@Suite("cosictl edit", .timeLimit(.minutes(1)))
struct CosictlEditTests {
    @Test func aScriptedEditorChangesTheSpec() async throws {
        let setup = try await CosictlTests.Setup()
        try await setup.define(["Things.test.dev"])
        _ = try await setup.run(["apply", "-f", "-"], input: "metadata:\n  type: Things.test.dev\n  id: e\nspec:\n  color: red\n")
        // The "editor" is a sed script that changes the spec in place.
        let editor = setup.dir + "/editor.sh"
        try "#!/bin/sh\nsed -i 's/color: red/color: blue/' \"$1\"\n".write(toFile: editor, atomically: true, encoding: .utf8)
        chmod(editor, 0o755)
        let edited = try await setup.run(["edit", "Things.test.dev", "e"], environment: ["EDITOR": editor])
        #expect(edited.status == 0, "\(edited.err)")
        #expect(edited.out.contains("updated (version 2)"))
        let yaml = try await setup.run(["get", "Things.test.dev", "e", "-o", "yaml"])
        #expect(yaml.out.contains("color: blue"))
        // An editor that changes nothing changes nothing.
        let unchanged = try await setup.run(["edit", "Things.test.dev", "e"], environment: ["EDITOR": "true"])
        #expect(unchanged.out.contains("no changes"))
    }
}

/// cosictl's output formats, compared with golden files (timestamps normalised). Regenerate
/// with COSI_UPDATE_GOLDEN=1 swift test --filter CosictlGoldenTests.
@Suite("cosictl output (golden files)", .timeLimit(.minutes(1)))
struct CosictlGoldenTests {
    static let resources = """
        metadata:
          namespace: network
          type: Links.net.test.dev
          id: eth0
          labels:
            kind: physical
            zone: a
          annotations:
            note: uplink
          finalizers: [network.LinkController]
        spec:
          mtu: 1500
          up: true
          addresses:
            - 10.0.0.2/24
        ---
        metadata:
          namespace: network
          type: Links.net.test.dev
          id: lo
        spec:
          mtu: 65536
          up: true
        """

    static func normalise(_ text: String) -> String {
        text.replacingOccurrences(of: #"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"#, with: "<time>", options: .regularExpression)
    }

    static func compare(_ name: String, _ actual: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/\(name)")
        let text = normalise(actual)
        if ProcessInfo.processInfo.environment["COSI_UPDATE_GOLDEN"] == "1" {
            try text.write(to: golden, atomically: true, encoding: .utf8)
            return
        }
        let expected = try String(contentsOf: golden, encoding: .utf8)
        #expect(text == expected, "\(name) differs from its golden file:\n\(text)", sourceLocation: sourceLocation)
    }

    @Test func tableYAMLAndJSON() async throws {
        let setup = try await CosictlTests.Setup()
        try await setup.define(["Links.net.test.dev"], namespace: "network")
        let applied = try await setup.run(["apply", "-f", "-"], input: Self.resources)
        #expect(applied.status == 0, "\(applied.err)")
        try Self.compare("get-table.txt", try await setup.run(["get", "Links.net.test.dev", "-n", "network"]).out)
        try Self.compare("get-yaml.txt", try await setup.run(["get", "Links.net.test.dev", "-n", "network", "-o", "yaml"]).out)
        try Self.compare("get-json.txt", try await setup.run(["get", "Links.net.test.dev", "eth0", "-n", "network", "-o", "json"]).out)
        try Self.compare("get-wide.txt", try await setup.run(["get", "Links.net.test.dev", "-o", "wide"]).out)
        try Self.compare("get-name.txt", try await setup.run(["get", "Links.net.test.dev", "-o", "name"]).out)
        try Self.compare("get-rd-yaml.txt", try await setup.run(["get", "rd", "namespaces.meta.cosi.dev", "-o", "yaml"]).out)
    }
}
