import ArgumentParser
import CosiClient
import CosiMessages
import CosiOSControllers
import CosiRPC
import CosiServer
import CosiState
import CosiTLS
import Foundation
import Histogram
import Logging

/// `cosi-bench os-controllers`: the built-in controllers acting on a sandbox root, as `cosid`
/// runs them (a cosid server in this process, SQLite with `--sync full`, every built-in
/// controller registered, clients over mutual TLS on 127.0.0.1).
///
/// - Hostname: the time from an apply of a hostname spec to `etc/hostname` holding the new name
///   and the status reporting it (seen by a watcher), over `--applies` sequential applies, made
///   with the client library, and with the `cosictl` executable when one is found (process start,
///   handshake and all).
/// - Kernel parameters: `--params` specs applied at once (64 in flight), the time until every
///   one is reconciled (file written, status reporting the value); then all destroyed at once,
///   the time until every value is restored and no spec is left.
struct OSControllersBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "os-controllers",
        abstract: "Built-in controllers on a sandbox root: hostname apply-to-file-and-status latency, and 1,000 kernel parameters at once."
    )

    @Option(help: "Sequential hostname applies to time.") var applies = 200
    @Option(help: "Kernel parameter specs applied at once.") var params = 1000
    @Option(help: "The cosictl executable to time applies with (default: next to cosi-bench; none to skip).") var cosictl: String?

    func run() async throws {
        let sibling = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cosictl").path
        let executable = cosictl == "none" ? nil : (cosictl ?? (FileManager.default.isExecutableFile(atPath: sibling) ? sibling : nil))
        for line in try await Self.measure(applies: applies, params: params, cosictl: executable) { print(line) }
    }

    static func measure(applies: Int, params: Int, cosictl: String?) async throws -> [String] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cosi-bench-os-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let certificates = DevelopmentCertificates(directory: dir + "/Certs")
        try certificates.ensure()
        let tls = try TLSContext(role: .server, configuration: TLSConfiguration(
            certificateChain: .file(certificates.serverCertificate), privateKey: .file(certificates.serverKey), trustRoots: .file(certificates.caCertificate)
        ))
        let root = MachineRoot(dir + "/root")
        try root.makeDirectories(root.path)
        try BuiltInControllers.seedSandbox(root)
        for index in 0..<params { try root.replace(paramPath(index), with: "0\n") }

        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let engine = try StateEngine(storage: SQLiteStorage(directory: dir + "/data", sync: .full), logger: logger)
        let server = CosiServer(configuration: RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: tls), engine: engine, logger: logger, audit: logger)
        for setting in BuiltInControllers.settings {
            for definition in BuiltInControllers.definitions(setting) {
                _ = try await engine.create(try MetaNamespace.definition(definition), owner: "cosid")
            }
            try server.controllers.register(MachineController(setting, root: root))
        }

        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let port = try await server.rpc.listeningAddress.port!
            var configuration = CosiClientConfiguration.development(directory: certificates.directory, port: port)
            configuration.defaultTimeout = nil
            let lines = try await withCosiClient(configuration) { client in
                var lines = [try await hostname(client, root: root, applies: applies, prefix: "lib")]
                if let cosictl {
                    lines.append(try await hostname(client, root: root, applies: applies, prefix: "ctl") { yaml in
                        try runCosictl(cosictl, yaml: yaml, port: port, certificates: certificates, dir: dir)
                    })
                }
                lines.append(try await kernelParameters(client, engine: engine, root: root, count: params))
                return lines
            }
            group.cancelAll()
            server.rpc.beginGracefulShutdown()
            try? await group.waitForAll()
            return lines
        }
    }

    static func paramPath(_ index: Int) -> String { String(format: "proc/sys/bench/p%04d", index) }
    static func paramKey(_ index: Int) -> String { String(format: "bench.p%04d", index) }

    static func hostnameSpec(_ name: String) -> String {
        "metadata: {namespace: network, type: HostnameSpecs.net.cosi.dev, id: hostname}\nspec: {hostname: \(name), domainname: bench.test}\n"
    }

    /// `applies` sequential hostname changes; each is timed from the start of the apply until the
    /// file holds the name and a watcher has seen the status report it.
    static func hostname(
        _ client: CosiClient, root: MachineRoot, applies: Int, prefix: String,
        apply: ((String) throws -> Void)? = nil
    ) async throws -> String {
        let request = WatchRequest(namespace: "network", type: "HostnameStatuses.net.cosi.dev", options: WatchOptions(bootstrapContents: true), apiVersion: 1)
        var statuses = client.watch(request).makeAsyncIterator()
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000)
        let clock = ContinuousClock()
        for index in 0..<applies {
            let name = "\(prefix)-\(index)"
            let start = clock.now
            if let apply {
                try apply(hostnameSpec(name))
            } else {
                let spec = Spec(yamlSpec: "hostname: \(name)\ndomainname: bench.test\n")
                if var current = try? await client.get(namespace: "network", type: "HostnameSpecs.net.cosi.dev", id: "hostname") {
                    current.spec = spec
                    _ = try await client.update(current)
                } else {
                    _ = try await client.create(Resource(metadata: Metadata(namespace: "network", type: "HostnameSpecs.net.cosi.dev", id: "hostname"), spec: spec))
                }
            }
            // The status, then the file (written before the status, so normally already there).
            while let event = try await statuses.next() {
                if event.resource?.spec.yamlSpec.hasPrefix("hostname: \(name)\n") == true { break }
            }
            while (try root.read("etc/hostname")) != name + "\n" {
                try await Task.sleep(for: .microseconds(100))
            }
            _ = histogram.record(microseconds(clock.now - start))
        }
        let how = apply == nil ? "client library" : "cosictl apply (a process per apply)"
        return String(
            format: "hostname apply -> etc/hostname and status (%@, %d applies): p50 %.2f ms, p99 %.2f ms, max %.2f ms",
            how, applies, Double(histogram.valueAtPercentile(50)) / 1000, Double(histogram.valueAtPercentile(99)) / 1000, Double(histogram.max) / 1000
        )
    }

    static func runCosictl(_ executable: String, yaml: String, port: Int, certificates: DevelopmentCertificates, dir: String) throws {
        let file = dir + "/hostname.yaml"
        try yaml.write(toFile: file, atomically: false, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "apply", "-f", file, "--endpoint", "127.0.0.1:\(port)",
            "--ca", certificates.caCertificate, "--cert", certificates.adminCertificate, "--key", certificates.adminKey,
        ]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ValidationError("cosictl apply failed with status \(process.terminationStatus)") }
    }

    /// `count` kernel parameter specs applied at once, then destroyed at once.
    static func kernelParameters(_ client: CosiClient, engine: StateEngine, root: MachineRoot, count: Int) async throws -> String {
        let clock = ContinuousClock()
        let statusKind = ResourceKind(namespace: "runtime", type: "KernelParamStatuses.runtime.cosi.dev")
        let specKind = ResourceKind(namespace: "runtime", type: "KernelParamSpecs.runtime.cosi.dev")

        let start = clock.now
        try await inParallel(count) { index in
            _ = try await client.create(Resource(
                metadata: Metadata(namespace: "runtime", type: specKind.type, id: paramKey(index)),
                spec: Spec(yamlSpec: "value: \"1\"\n")
            ))
        }
        let written = clock.now - start
        try await until(timeout: .seconds(300)) {
            try engine.list(statusKind).filter { $0.spec.yamlSpec == "value: '1'\n" }.count == count
        }
        let applied = clock.now - start
        for index in 0..<count where try root.read(paramPath(index)) != "1\n" {
            throw ValidationError("\(paramPath(index)) was not written")
        }

        let teardownStart = clock.now
        try await inParallel(count) { index in
            try await client.teardownAndDestroy(namespace: "runtime", type: specKind.type, id: paramKey(index))
        }
        let destroyed = clock.now - teardownStart
        guard try engine.list(specKind).isEmpty, try engine.list(statusKind).isEmpty else { throw ValidationError("specs or statuses left after teardown") }
        for index in 0..<count where try root.read(paramPath(index)) != "0\n" {
            throw ValidationError("\(paramPath(index)) was not restored")
        }
        return String(
            format: "kernel parameters: %d specs applied at once (64 in flight): all written in %.2f s, all reconciled (files and statuses) in %.2f s; all torn down and destroyed at once (values restored, no status left) in %.2f s",
            count, seconds(written), seconds(applied), seconds(destroyed)
        )
    }

    static func seconds(_ duration: Duration) -> Double { Double(microseconds(duration)) / 1e6 }

    /// Runs `work` for 0..<count, 64 at a time.
    static func inParallel(_ count: Int, _ work: @escaping @Sendable (Int) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                if index >= 64 { try await group.next() }
                group.addTask { try await work(index) }
            }
            try await group.waitForAll()
        }
    }

    static func until(timeout: Duration, _ condition: () throws -> Bool) async throws {
        let end = ContinuousClock.now + timeout
        while try !condition() {
            guard ContinuousClock.now < end else { throw ValidationError("not reconciled within \(timeout)") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}
