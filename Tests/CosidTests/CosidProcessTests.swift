import CosiClient
import CosiMessages
import CosiTesting
import Foundation
import Testing
import Yams

/// Runs the real `cosid` executable: first-run certificates, Info over mutual TLS, logs, SIGTERM.
@Suite("cosid process", .timeLimit(.minutes(1)))
struct CosidProcessTests {
    /// The `cosid` built next to the test bundle.
    static var executable: URL {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // On Linux the test binary sits in the build directory; elsewhere inside a bundle.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("cosid").path), directory.path != "/" {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("cosid")
    }

    /// The port cosid logged it listens on.
    static func port(from output: Output) async throws -> Int {
        // The RPC listener's line ("... listening"), not the metrics endpoint's; in text and
        // JSON logs alike: the address's port.
        func logged() -> Int? {
            guard let line = output.value.split(separator: "\n").first(where: { $0.contains("listening") && !$0.contains("metrics endpoint") }),
                  let match = String(line).firstMatch(of: /127\.0\.0\.1:([0-9]+)/) else { return nil }
            return Int(match.1)
        }
        try await eventually("cosid logs its address: \(output.value)", timeout: .seconds(10)) { logged() != nil }
        return logged()!
    }

    /// Waits until cosid logs `text` (more than `after` times before).
    static func waitFor(_ text: String, in output: Output, after: Int = 1) async throws {
        do {
            try await eventually("cosid logs \"\(text)\"", timeout: .seconds(10)) { output.value.components(separatedBy: text).count > after }
        } catch {
            Issue.record("cosid did not log \"\(text)\": \(output.value)")
        }
    }

    final class Output: @unchecked Sendable {
        private let lock = NSLock()
        private var text = ""
        func append(_ data: Data) { lock.withLock { text += String(decoding: data, as: UTF8.self) } }
        var value: String { lock.withLock { text } }
    }

    @Test func firstRunServesInfoAndShutsDownOnSIGTERM() async throws {
        let cosid = try await CosidProcess(certificates: .development)
        // Development certificates were created, keys private.
        for name in ["ca.key", "server.key", "admin.key"] {
            let attributes = try FileManager.default.attributesOfItem(atPath: cosid.directory + "/Certs/" + name)
            #expect((attributes[.posixPermissions] as? Int) == 0o600, "\(name)")
        }

        let client = try await cosid.client()
        let info = try await client.info()
        #expect(info.identity == "admin")
        #expect(info.roles == ["os:admin"])
        #expect(info.methods.contains("/cosi.rpc.v1.Server/Info"))
        #expect(!info.version.isEmpty)

        // SIGTERM: the server says GOAWAY, the client connection ends, the process exits cleanly.
        cosid.terminate()
        try await client.connection.closeFuture.get()
        #expect(try await cosid.waitForExit() == 0)
        let log = cosid.output.value
        #expect(log.contains("connection open"), "\(log)")
        #expect(log.contains("peer=admin"), "\(log)")
        #expect(log.contains("stopped"), "\(log)")
    }

    @Test func builtInControllersActOnTheSandboxRoot() async throws {
        let cosid = try await CosidProcess(certificates: .development, controllers: "hostname,kernel-params")
        let directory = cosid.directory
        #expect(cosid.output.value.contains("built-in controllers acting on the sandbox \(directory)/root"), "\(cosid.output.value)")
        // The sandbox was created and seeded.
        #expect(FileManager.default.fileExists(atPath: directory + "/root/proc/sys/vm/swappiness"))

        try await withCosiClient(try cosid.clientConfiguration()) { client in
            _ = try await client.create(Resource(
                metadata: Metadata(namespace: "network", type: "HostnameSpecs.net.cosi.dev", id: "hostname"),
                spec: Spec(yamlSpec: "hostname: sandboxed\n")))
            func status() async throws -> Resource { try await client.get(namespace: "network", type: "HostnameStatuses.net.cosi.dev", id: "hostname") }
            try await eventually("the status") { (try? await status()) != nil }
            #expect(try await status().spec.yamlSpec == "hostname: sandboxed\ndomainname: ''\ndriftCorrections: 0\n")
            #expect(try String(contentsOfFile: directory + "/root/etc/hostname", encoding: .utf8) == "sandboxed\n")
            // Only the chosen controllers run; every built-in type is defined (a spec of a
            // controller that is off is kept until it runs).
            let controllers = try await client.list(namespace: "meta", type: "Controllers.meta.cosi.dev").map(\.metadata.id)
            #expect(controllers.contains("kernel-params") && !controllers.contains("resolvers"), "\(controllers)")
            let definitions = try await client.list(namespace: "meta", type: "ResourceDefinitions.meta.cosi.dev").map(\.metadata.id)
            #expect(definitions.contains("kernelparamspecs.runtime.cosi.dev"))
            #expect(definitions.contains("resolverspecs.net.cosi.dev"))
        }
    }

    @Test func builtInDefinitionsAreBroughtUpToDateAtStart() async throws {
        let id = "hostnamespecs.net.cosi.dev"
        let cosid = try await CosidProcess(certificates: .development, durable: true, controllers: "hostname")
        var started = true
        /// Runs cosid on the same state until `body` returns, then stops it with SIGTERM.
        func withCosid<R>(_ body: (CosiClient) async throws -> R) async throws -> R {
            if !started { try await cosid.restart() }
            started = false
            let result = try await withCosiClient(try cosid.clientConfiguration(), body)
            cosid.stop()
            return result
        }
        func definition(_ client: CosiClient) async throws -> (Resource, Meta.ResourceDefinitionSpec) {
            let resource = try await client.get(namespace: "meta", type: "ResourceDefinitions.meta.cosi.dev", id: id)
            return (resource, try Meta.ResourceDefinitionSpec(serializedBytes: resource.spec.protoSpec))
        }
        // An older cosid's definition: no print columns.
        let changed = try await withCosid { client in
            var (resource, spec) = try await definition(client)
            #expect(spec.printColumns.count == 2)
            spec.printColumns = []
            resource.spec = Spec(protoSpec: Array(buffer: spec.serializedBytes()))
            return try await client.update(resource, owner: "cosid").metadata.version
        }
        let restored = try await withCosid { client in
            let (resource, spec) = try await definition(client)
            #expect(spec.printColumns.map(\.name) == ["Hostname", "Domainname"], "brought up to date")
            return resource.metadata.version
        }
        #expect(restored != changed)
        let again = try await withCosid { client in try await definition(client).0.metadata.version }
        #expect(again == restored, "an up-to-date definition is left alone")
    }

    @Test func badCertificatePathIsOneClearError() async throws {
        let (status, _, log) = try await CosidProcess.run(["--listen", "127.0.0.1:0", "--ca", "/nonexistent/ca.crt", "--cert", "/nonexistent/s.crt", "--key", "/nonexistent/s.key"])
        #expect(status != 0)
        #expect(log.contains("cannot read certificate file /nonexistent/s.crt"), "\(log)")
    }
}

@Suite("cosid configuration file")
struct CosidConfigTests {
    func run(_ arguments: [String]) async throws -> (Int32, String, String) {
        try await CosidProcess.run(arguments)
    }

    func temporaryFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cosid-\(UUID().uuidString).yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func settingsComeFromTheFileAndFlagsWin() async throws {
        let path = try temporaryFile("""
            listen: 0.0.0.0:6000
            sync: normal
            retain-events: 500
            retain-seconds: 30
            in-memory: true
            data-dir: "/var/lib/cosi: test #1"
            resync-interval: 5
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, out, err) = try await run(["--config", path, "--print-config", "--retain-events", "7", "--resync-interval", "3"])
        #expect(status == 0, "\(err)")
        let printed = try #require(try Yams.load(yaml: out) as? [String: Any])
        #expect(printed["listen"] as? [String] == ["0.0.0.0:6000"], "one address or a list")
        #expect(printed["sync"] as? String == "normal")
        #expect(printed["in-memory"] as? Bool == true)
        #expect(printed["retain-events"] as? Int == 7, "the flag wins over the file")
        #expect(printed["retain-seconds"] as? Int == 30, "a flag not given leaves the file's optional setting alone")
        #expect(printed["data-dir"] as? String == "/var/lib/cosi: test #1", "values are quoted when YAML needs it")
        #expect(printed["log-level"] as? String == "info", "defaults fill the rest")
        #expect(printed["resync-interval"] as? Int == 3, "the resync interval is a setting like the others")
    }

    @Test func printedConfigurationReadsBackTheSame() async throws {
        let path = try temporaryFile("data-dir: \"a: b\"\nmetrics-listen: \"[::1]:9100\"\nlog-format: json\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, first, _) = try await run(["--config", path, "--print-config"])
        #expect(status == 0)
        let again = try temporaryFile(first)
        defer { try? FileManager.default.removeItem(atPath: again) }
        let (status2, second, err) = try await run(["--config", again, "--print-config"])
        #expect(status2 == 0, "\(err)")
        #expect(second == first)
    }

    @Test func unknownSettingsAndBadValuesAreClearErrors() async throws {
        for (text, message) in [
            ("lisen: 1\n", "unknown setting \"lisen\""),
            ("sync: sometimes\n", "sync must be one of full, normal"),
            ("keepalive: often\n", "keepalive must be a whole number"),
            ("in-memory: perhaps\n", "in-memory must be true or false"),
            ("- a\n- b\n", "must be a mapping of setting: value"),
            ("max-frame-size: 100\n", "max-frame-size must be within 16384...67108864"),
            ("controllers: hostname,bogus\n", "controllers: unknown controller \"bogus\": choose from hostname, resolvers, hosts, kernel-params, time-servers, mounts, links, addresses, routes, all or none"),
            // A network namespace that is not there, or a file that is not one: named at start.
            ("netns: /nonexistent/netns\n", "netns: cannot use --netns /nonexistent/netns: it does not exist"),
            ("netns: /etc/hostname\n", "netns: cannot use --netns /etc/hostname: it is not a namespace file"),
            ("root: \"\"\n", "root must be a directory"),
            ("resync-interval: 0\n", "resync-interval must be at least 1 second"),
        ] {
            let path = try temporaryFile(text)
            defer { try? FileManager.default.removeItem(atPath: path) }
            let (status, _, err) = try await run(["--config", path, "--print-config"])
            #expect(status != 0)
            #expect(err.contains(message), "\(text): \(err)")
        }
        let (status, _, err) = try await run(["--sync", "sometimes"])
        #expect(status != 0)
        #expect(err.contains("'sometimes' is invalid for '--sync"), "\(err)")
    }
}

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@Suite("cosid metrics", .timeLimit(.minutes(1)))
struct CosidMetricsTests {
    @Test func metricsAreExportedInThePrometheusFormat() async throws {
        let metricsPort = Int.random(in: 20_000...60_000)
        let cosid = try await CosidProcess(
            ["--metrics-listen", "127.0.0.1:\(metricsPort)", "--log-format", "json"], certificates: .development, controllers: "hostname"
        )
        let output = cosid.output
        try await CosidProcessTests.waitFor("metrics endpoint listening", in: output)
        let client = try await cosid.client()
        _ = try await client.info()
        _ = try? await client.get(namespace: "default", type: "Missing.test.dev", id: "x")
        _ = try await client.create(Resource(metadata: Metadata(namespace: "network", type: "HostnameSpecs.net.cosi.dev", id: "hostname"), spec: Spec(yamlSpec: "hostname: metered\n")))
        try await eventually("reconciled") { (try? await client.get(namespace: "network", type: "HostnameStatuses.net.cosi.dev", id: "hostname")) != nil }
        let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("cosi_connections 1"), "\(text.prefix(2000))")
        #expect(text.contains(#"cosi_calls_total{method="/cosi.resource.State/Get",code="NOT_FOUND"} "#))
        #expect(text.contains("cosi_state_revision") || text.contains("cosi_call_duration_seconds"))
        // Every family has its HELP and TYPE, HELP first.
        let lines = text.split(separator: "\n").map(String.init)
        for (index, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
            let name = line.split(separator: " ")[2]
            #expect(index > 0 && lines[index - 1].hasPrefix("# HELP \(name) ") && !lines[index - 1].hasSuffix("A cosid metric."), "\(name) has help")
        }
        // Controller metrics, process metrics, and buckets that fit (calls from 50 µs).
        #expect(text.contains(#"cosi_controller_reconciles_total{controller="hostname"}"#), "\(text)")
        #expect(text.contains(#"cosi_controller_reconcile_duration_seconds_count{controller="hostname"}"#))
        #expect(text.contains(#"cosi_controller_queue_wait_seconds_count{controller="hostname"}"#))
        for name in ["process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total", "process_max_fds", "process_start_time_seconds"] {
            let value = lines.first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
            #expect((value ?? 0) > 0 || name == "process_cpu_seconds_total" && value != nil, "\(name): \(String(describing: value))")
        }
        let callBuckets = lines.filter { $0.hasPrefix(#"cosi_call_duration_seconds_bucket{method="/cosi.rpc.v1.Server/Info""#) }
        #expect(callBuckets.count == 18, "17 bounds and +Inf: \(callBuckets)")
        #expect(callBuckets.first?.contains("le=\"5e-05\"") == true || callBuckets.first?.contains("le=\"0.00005\"") == true, "\(callBuckets.first ?? "")")
        // JSON logs write numbers as numbers.
        let loaded = output.value.split(separator: "\n").first { $0.contains("\"state loaded\"") }.map(String.init) ?? ""
        let object = try JSONSerialization.jsonObject(with: Data(loaded.utf8)) as? [String: Any]
        #expect(object?["resources"] is NSNumber && object?["revision"] is NSNumber, "\(loaded)")
        #expect(object?["sync"] as? String == "none")
        await client.close()
    }
}
