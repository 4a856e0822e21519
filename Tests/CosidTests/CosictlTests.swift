import CosiClient
import CosiController
import CosiTesting
import Foundation
import Testing

/// cosictl end to end against a real cosid on 127.0.0.1.
@Suite("cosictl end to end", .serialized, .timeLimit(.minutes(2)))
struct CosictlTests {
    static var cosictl: URL { CosidProcessTests.executable.deletingLastPathComponent().appendingPathComponent("cosictl") }

    /// A running cosid with development certificates in `dir`, and a way to run cosictl in `dir`.
    final class Setup: @unchecked Sendable {
        let dir = StateBackends.temporaryDirectory()
        let process = Process()
        let output = CosidProcessTests.Output()
        var port = 0

        init() async throws {
            process.executableURL = CosidProcessTests.executable
            process.arguments = ["--listen", "127.0.0.1:0", "--listen", "unix:" + dir + "/admin.sock", "--in-memory", "--certs-dir", dir + "/Certs", "--controllers", "none"]
            let pipe = Pipe()
            process.standardError = pipe
            let output = self.output
            pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
            try process.run()
            port = try await CosidProcessTests.port(from: output)
        }

        deinit {
            if process.isRunning { process.terminate() }
            try? FileManager.default.removeItem(atPath: dir)
        }

        /// Runs cosictl with the given arguments in `dir` (so ./Certs is used); returns status and output.
        func run(_ arguments: [String], input: String? = nil, environment: [String: String] = [:], endpoint: Bool = true) throws -> (status: Int32, out: String, err: String) {
            let process = Process()
            process.executableURL = CosictlTests.cosictl
            process.currentDirectoryURL = URL(fileURLWithPath: dir)
            var args = arguments
            if endpoint { args += ["--endpoint", "127.0.0.1:\(port)"] }
            process.arguments = args
            var env = ProcessInfo.processInfo.environment
            env["COSICONFIG"] = dir + "/no-config.yaml"
            for (key, value) in environment { env[key] = value }
            process.environment = env
            let out = Pipe(), err = Pipe(), stdin = Pipe()
            process.standardOutput = out
            process.standardError = err
            process.standardInput = stdin
            try process.run()
            if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
            try stdin.fileHandleForWriting.close()
            let outData = out.fileHandleForReading.readDataToEndOfFile()
            let errData = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
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
            let result = try setup.run(command)
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
            try setup.run(["controllers"]).out.contains("ints-to-strings")
        }

        let listed = try setup.run(["controllers"])
        #expect(listed.status == 0, "\(listed.err)")
        let rows = listed.out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.first == ["NAME", "ORIGIN", "IDENTITY", "RUNNING", "RESTARTS", "LAST", "ERROR"])
        #expect(rows.dropFirst().first == ["ints-to-strings", "remote", "admin", "yes", "0", "-"])

        let graph = try setup.run(["graph"])
        let edges = graph.out.split(separator: "\n").dropFirst().map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(edges == [
            ["ints-to-strings", "output", "exclusive", "*", "Strings.test.dev", "*"],
            ["ints-to-strings", "input", "strong", "default", "Ints.test.dev", "*"],
            ["ints-to-strings", "input", "destroyReady", "default", "Strings.test.dev", "*"],
        ], "\(graph.out)")

        let dot = try setup.run(["graph", "--dot"])
        #expect(dot.out.hasPrefix("digraph controllers {"))
        #expect(dot.out.contains("\"resource:default/Ints.test.dev\" -> \"controller:ints-to-strings\" [label=\"strong\", style=bold];"))
        #expect(dot.out.contains("\"controller:ints-to-strings\" -> \"resource:Strings.test.dev\" [label=\"exclusive\"];"))

        let png = try setup.run(["graph", "-o", "png", "graph.png"])
        #expect(png.status == 0, "\(png.err)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: setup.dir + "/graph.png"))
        #expect(bytes.prefix(4) == Data([0x89, 0x50, 0x4e, 0x47]), "a PNG")
        hosting.cancel()
        _ = try? await hosting.value
        await client.close()
    }

    @Test func applyGetInEveryFormatAndDelete() async throws {
        let setup = try await Setup()
        let applied = try setup.run(["apply", "-f", "-"], input: Self.hostname)
        #expect(applied.status == 0, "\(applied.err)")
        #expect(applied.out.contains("network/HostnameSpecs.net.talos.dev/hostname created"))
        let again = try setup.run(["apply", "-f", "-"], input: Self.hostname)
        #expect(again.out.contains("hostname updated (version 2)"))

        let table = try setup.run(["get", "HostnameSpecs.net.talos.dev", "-n", "network"])
        let lines = table.out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(lines.first == ["NAMESPACE", "TYPE", "ID", "VERSION"])
        #expect(lines.dropFirst().map { $0[2] } == ["hostname", "spare"])

        let yaml = try setup.run(["get", "HostnameSpecs.net.talos.dev", "hostname", "-n", "network", "-o", "yaml"])
        let keys = yaml.out.split(separator: "\n").filter { $0.hasPrefix("  ") && !$0.hasPrefix("    ") }.map { $0.split(separator: ":")[0].trimmingCharacters(in: .whitespaces) }
        #expect(keys == ["namespace", "type", "id", "version", "phase", "created", "updated", "labels", "hostname"], "\(yaml.out)")
        #expect(yaml.out.contains("spec:\n  hostname: talos-1"))

        let json = try setup.run(["get", "HostnameSpecs.net.talos.dev", "-n", "network", "-l", "tier=node", "-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any]
        #expect((object?["metadata"] as? [String: Any])?["id"] as? String == "hostname")
        #expect((object?["metadata"] as? [String: Any])?["version"] as? String == "2")

        // Aliases of the meta types resolve case-insensitively.
        let rd = try setup.run(["get", "RD"])
        #expect(rd.out.contains("resourcedefinitions.meta.cosi.dev"))

        let deleted = try setup.run(["delete", "HostnameSpecs.net.talos.dev", "spare", "-n", "network"])
        #expect(deleted.out.contains("destroyed"))
        let missing = try setup.run(["get", "HostnameSpecs.net.talos.dev", "spare", "-n", "network"])
        #expect(missing.status != 0)
        #expect(missing.err.contains("NOT_FOUND"))
    }

    @Test func deleteWaitsForFinalizers() async throws {
        let setup = try await Setup()
        let held = """
            metadata:
              namespace: default
              type: Things.test.dev
              id: held
              finalizers: [guard]
            spec:
              a: 1
            """
        _ = try setup.run(["apply", "-f", "-"], input: held)
        let port = setup.port, dir = setup.dir
        let deleting = Task.detached { try setup.run(["delete", "Things.test.dev", "held"]) }
        // Remove the finalizer from the side, as a controller would.
        let client = try await CosiClient.connect(.development(directory: dir + "/Certs", port: port))
        var resource = try await client.get(namespace: "default", type: "Things.test.dev", id: "held")
        for _ in 0..<100 where resource.metadata.phase != "tearingDown" {
            try await Task.sleep(for: .milliseconds(20))
            resource = try await client.get(namespace: "default", type: "Things.test.dev", id: "held")
        }
        resource.metadata.finalizers = []
        _ = try await client.update(resource)
        let result = try await deleting.value
        #expect(result.status == 0, "\(result.err)")
        #expect(result.err.contains("waiting for finalizers guard"))
        #expect(result.out.contains("destroyed"))
        await client.close()
    }

    @Test func watchPrintsChangesWithMarkers() async throws {
        let setup = try await Setup()
        let watcher = Process()
        watcher.executableURL = Self.cosictl
        watcher.currentDirectoryURL = URL(fileURLWithPath: setup.dir)
        watcher.arguments = ["get", "Things.test.dev", "--watch", "--endpoint", "127.0.0.1:\(setup.port)"]
        watcher.environment = ["COSICONFIG": setup.dir + "/none.yaml", "HOME": setup.dir]
        let out = Pipe()
        let collected = CosidProcessTests.Output()
        watcher.standardOutput = out
        out.fileHandleForReading.readabilityHandler = { collected.append($0.availableData) }
        try watcher.run()
        defer { watcher.terminate() }
        try await CosidProcessTests.waitFor("NAMESPACE", in: collected)
        _ = try setup.run(["apply", "-f", "-"], input: "metadata:\n  type: Things.test.dev\n  id: w\nspec:\n  v: 1\n")
        _ = try setup.run(["apply", "-f", "-"], input: "metadata:\n  type: Things.test.dev\n  id: w\nspec:\n  v: 2\n")
        _ = try setup.run(["delete", "Things.test.dev", "w"])
        try await CosidProcessTests.waitFor("-   default", in: collected)
        let rows = collected.value.split(separator: "\n").dropFirst().map { String($0) }
        #expect(rows.first?.hasPrefix("+") == true, "\(rows)")
        #expect(rows.dropFirst().first?.hasPrefix(" ") == true, "\(rows)")
        #expect(rows.last?.hasPrefix("-") == true, "\(rows)")
    }

    @Test func genAndConfigGiveAWorkingContext() async throws {
        let setup = try await Setup()
        let config = setup.dir + "/config.yaml"
        let env = ["COSICONFIG": config]
        // A reader certificate from the development CA.
        let client = try setup.run(["gen", "client", "--ca", "Certs/ca", "--name", "alice", "--role", "os:reader", "--days", "10", "--out", "alice"], environment: env, endpoint: false)
        #expect(client.status == 0, "\(client.err)")
        let attributes = try FileManager.default.attributesOfItem(atPath: setup.dir + "/alice.key")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let written = try setup.run(["gen", "config", "--name", "alice", "--ca-cert", "Certs/ca.crt", "--cert", "alice.crt", "--key", "alice.key", "--endpoint", "127.0.0.1:\(setup.port)"], environment: env, endpoint: false)
        #expect(written.status == 0, "\(written.err)")
        let whoami = try setup.run(["whoami"], environment: env, endpoint: false)
        #expect(whoami.out.contains("identity: alice"), "\(whoami.out) \(whoami.err)")
        #expect(whoami.out.contains("os:reader"))
        // The reader may not write: a clear refusal naming the role.
        let refused = try setup.run(["apply", "-f", "-"], input: "metadata:\n  type: Things.test.dev\n  id: x\nspec:\n  v: 1\n", environment: env, endpoint: false)
        #expect(refused.status != 0)
        #expect(refused.err.contains("PERMISSION_DENIED") && refused.err.contains("os:operator"), "\(refused.err)")
    }

    @Test func theLocalAdminSocketKnowsRootByItsCredentials() async throws {
        let setup = try await Setup()
        let socket = setup.dir + "/admin.sock"
        try await CosidProcessTests.waitFor("[UDS]", in: setup.output)
        let attributes = try FileManager.default.attributesOfItem(atPath: socket)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let whoami = try setup.run(["whoami", "--endpoint", "unix:" + socket], endpoint: false)
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
        let missingCA = try setup.run(["info", "--ca", "/nonexistent/ca.crt"])
        #expect(missingCA.status != 0)
        #expect(missingCA.err.contains("cannot read the CA file /nonexistent/ca.crt"), "\(missingCA.err)")

        _ = try setup.run(["gen", "ca", "--out", "other", "--days", "5"], endpoint: false)
        _ = try setup.run(["gen", "client", "--ca", "other", "--name", "mallory", "--out", "mallory"], endpoint: false)
        let refused = try setup.run(["info", "--cert", "mallory.crt", "--key", "mallory.key"])
        #expect(refused.status != 0)
        #expect(refused.err.contains("refused this client's certificate"), "\(refused.err)")
        #expect(refused.err.split(separator: "\n").count <= 3, "one sentence, not a stack: \(refused.err)")

        let pki = try TestPKI()
        let expired = try pki.client(expired: true)
        if case .pem(let certificate) = expired.certificateChain, case .pem(let key) = expired.privateKey {
            try certificate.write(toFile: setup.dir + "/old.crt", atomically: true, encoding: .utf8)
            try key.write(toFile: setup.dir + "/old.key", atomically: true, encoding: .utf8)
        }
        let stale = try setup.run(["info", "--cert", "old.crt", "--key", "old.key"])
        #expect(stale.status != 0)
        #expect(stale.err.contains("has expired"), "\(stale.err)")
    }
}

@Suite("cosictl edit", .timeLimit(.minutes(1)))
struct CosictlEditTests {
    @Test func aScriptedEditorChangesTheSpec() async throws {
        let setup = try await CosictlTests.Setup()
        _ = try setup.run(["apply", "-f", "-"], input: "metadata:\n  type: Things.test.dev\n  id: e\nspec:\n  color: red\n")
        // The "editor" is a sed script that changes the spec in place.
        let editor = setup.dir + "/editor.sh"
        try "#!/bin/sh\nsed -i 's/color: red/color: blue/' \"$1\"\n".write(toFile: editor, atomically: true, encoding: .utf8)
        chmod(editor, 0o755)
        let edited = try setup.run(["edit", "Things.test.dev", "e"], environment: ["EDITOR": editor])
        #expect(edited.status == 0, "\(edited.err)")
        #expect(edited.out.contains("updated (version 2)"))
        let yaml = try setup.run(["get", "Things.test.dev", "e", "-o", "yaml"])
        #expect(yaml.out.contains("color: blue"))
        // An editor that changes nothing changes nothing.
        let unchanged = try setup.run(["edit", "Things.test.dev", "e"], environment: ["EDITOR": "true"])
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
        let applied = try setup.run(["apply", "-f", "-"], input: Self.resources)
        #expect(applied.status == 0, "\(applied.err)")
        try Self.compare("get-table.txt", try setup.run(["get", "Links.net.test.dev", "-n", "network"]).out)
        try Self.compare("get-yaml.txt", try setup.run(["get", "Links.net.test.dev", "-n", "network", "-o", "yaml"]).out)
        try Self.compare("get-json.txt", try setup.run(["get", "Links.net.test.dev", "eth0", "-n", "network", "-o", "json"]).out)
        try Self.compare("get-rd-yaml.txt", try setup.run(["get", "rd", "namespaces.meta.cosi.dev", "-o", "yaml"]).out)
    }
}
