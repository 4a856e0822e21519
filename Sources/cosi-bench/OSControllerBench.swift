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
/// - Drift: `--drifts` hand rewrites of a kept file (`etc/hostname`), each timed until the file
///   is put back; the same for a kernel parameter at a 1 s resync interval; with `--mounts` (in a
///   mount namespace of the bench's own: `unshare --mount --propagation private cosi-bench ...`),
///   a tmpfs unmounted by hand until it is mounted again. Then `--params` kernel parameters kept:
///   the bench's CPU while idle over `--idle-seconds` at the default 10 s interval, and the
///   resident memory each kept parameter costs.
struct OSControllersBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "os-controllers",
        abstract: "Built-in controllers on a sandbox root: hostname apply-to-file-and-status latency, and 1,000 kernel parameters at once."
    )

    @Option(help: "Sequential hostname applies to time.") var applies = 200
    @Option(help: "Kernel parameter specs applied at once.") var params = 1000
    @Option(help: "The cosictl executable to time applies with (default: next to cosi-bench; none to skip).") var cosictl: String?
    @Option(help: "Hand changes to time until they are put back.") var drifts = 200
    @Flag(help: "Also time a mount unmounted by hand (needs root and a mount namespace of the bench's own).") var mounts = false
    @Option(help: "Seconds to measure idle CPU with --params kernel parameters kept.") var idleSeconds = 30
    @Option(help: "The kernel parameters' resync interval, in seconds (cosid's default is 10).") var resyncSeconds = 1

    func run() async throws {
        let sibling = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cosictl").path
        let executable = cosictl == "none" ? nil : (cosictl ?? (FileManager.default.isExecutableFile(atPath: sibling) ? sibling : nil))
        if mounts && !Namespaces.isOwn("mnt") {
            throw ValidationError("--mounts mounts in the bench's mount namespace: run it as root under unshare --mount --propagation private")
        }
        for line in try await Self.measure(applies: applies, params: params, cosictl: executable, drifts: drifts, mounts: mounts, idleSeconds: idleSeconds, resync: resyncSeconds) { print(line) }
    }

    static func measure(applies: Int, params: Int, cosictl: String?, drifts: Int = 0, mounts: Bool = false, idleSeconds: Int = 0, resync: Int = 1) async throws -> [String] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cosi-bench-os-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (certificates, tls) = try developmentTLS(dir)
        let root = MachineRoot(dir + "/root")
        try root.makeDirectories(root.path)
        try BuiltInControllers.seedSandbox(root)
        for index in 0..<params { try root.replace(paramPath(index), with: "0\n") }

        let (engine, server, logger) = try await benchServer(dir, tls: tls, defining: BuiltInControllers.settings)
        for setting in BuiltInControllers.settings {
            // The kernel parameters' resync at 1 s for the drift run; the idle run starts its own.
            try server.controllers.register(MachineController(setting, root: root, resyncInterval: setting is KernelParamSetting ? .seconds(resync) : .seconds(10), logger: logger,
                // Corrections in a row are what is timed: the flapping guard is off.
                ledger: DriftLedger(flips: .max)
            ))
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
                if drifts > 0 {
                    lines.append(try await drift(root: root, count: drifts, what: "a kept file (etc/hostname) rewritten by hand") { index in
                        try root.replace("etc/hostname", with: "hand-\(index)\n")
                    } restored: { try root.read("etc/hostname")?.hasPrefix("lib-") == true || root.read("etc/hostname")?.hasPrefix("ctl-") == true })
                    _ = try await client.create(Resource(
                        metadata: Metadata(namespace: "runtime", type: "KernelParamSpecs.runtime.cosi.dev", id: paramKey(0)), spec: Spec(yamlSpec: "value: \"1\"\n")
                    ))
                    try await until(timeout: .seconds(30)) { try root.read(paramPath(0)) == "1\n" }
                    lines.append(try await drift(root: root, count: min(drifts, 20), what: "a kernel parameter changed by hand (resync interval \(resync) s)") { _ in
                        try root.writeInPlace(paramPath(0), "7\n")
                    } restored: { try root.read(paramPath(0)) == "1\n" })
                    try await client.teardownAndDestroy(namespace: "runtime", type: "KernelParamSpecs.runtime.cosi.dev", id: paramKey(0))
                    if mounts {
                        let point = root.resolve("mnt/bench")
                        _ = try await client.create(Resource(
                            metadata: Metadata(namespace: "runtime", type: "MountSpecs.runtime.cosi.dev", id: "/mnt/bench"),
                            spec: Spec(yamlSpec: "source: bench\nfsType: tmpfs\noptions: [size=1m]\n")
                        ))
                        try await until(timeout: .seconds(30)) { MountTable.isMounted(point) }
                        lines.append(try await drift(root: root, count: drifts, what: "a tmpfs unmounted by hand") { _ in
                            guard umount2(point, 0) == 0 else { throw ValidationError("cannot unmount \(point): errno \(errno)") }
                        } restored: { MountTable.isMounted(point) })
                        try await client.teardownAndDestroy(namespace: "runtime", type: "MountSpecs.runtime.cosi.dev", id: "/mnt/bench")
                    }
                }
                if idleSeconds > 0 {
                    lines.append(try await idleKeeping(client, engine: engine, root: root, count: params, seconds: idleSeconds, resync: resync))
                }
                return lines
            }
            group.cancelAll()
            server.rpc.beginGracefulShutdown()
            try? await group.waitForAll()
            return lines
        }
    }

    /// Development certificates under `dir/Certs` and the server's TLS context with them.
    static func developmentTLS(_ dir: String) throws -> (DevelopmentCertificates, TLSContext) {
        let certificates = DevelopmentCertificates(directory: dir + "/Certs")
        try certificates.ensure()
        let tls = try TLSContext(role: .server, configuration: TLSConfiguration(
            certificateChain: .file(certificates.serverCertificate), privateKey: .file(certificates.serverKey), trustRoots: .file(certificates.caCertificate)
        ))
        return (certificates, tls)
    }

    /// A cosid server as the daemon assembles it (SQLite with `--sync full` under `dir/data`, on
    /// 127.0.0.1 with an ephemeral port), with the types of `settings` defined; quiet logs.
    static func benchServer(_ dir: String, tls: TLSContext, defining settings: [any BuiltInSetting]) async throws -> (StateEngine, CosiServer, Logger) {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let engine = try StateEngine(storage: SQLiteStorage(directory: dir + "/data", sync: .full), logger: logger)
        let server = CosiServer(configuration: RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: tls), engine: engine, logger: logger, audit: logger)
        for setting in settings {
            for definition in BuiltInControllers.definitions(setting) {
                _ = try await engine.create(try MetaNamespace.definition(definition), owner: "cosid")
            }
        }
        return (engine, server, logger)
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
            try engine.list(statusKind).filter { $0.spec.yamlSpec.hasPrefix("value: '1'\n") }.count == count
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

    /// `count` changes made by `change`, each timed until `restored` holds (polled every 50 µs).
    static func drift(root: MachineRoot, count: Int, what: String, _ change: (Int) throws -> Void, restored: () throws -> Bool) async throws -> String {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000)
        let clock = ContinuousClock()
        for index in 0..<count {
            let start = clock.now
            try change(index)
            let end = start + .seconds(30)
            while try !restored() {
                guard clock.now < end else { throw ValidationError("\(what): not put back within 30 s") }
                try await Task.sleep(for: .microseconds(50))
            }
            _ = histogram.record(microseconds(clock.now - start))
            // The controller's own write settles before the next change.
            try await Task.sleep(for: .milliseconds(20))
        }
        return String(
            format: "drift, %@ (%d times): put back in p50 %.2f ms, p99 %.2f ms, max %.2f ms",
            what, count, Double(histogram.valueAtPercentile(50)) / 1000, Double(histogram.valueAtPercentile(99)) / 1000, Double(histogram.max) / 1000
        )
    }

    /// A second server's worth of keeping: `count` kernel parameters applied and kept by a
    /// controller at the default 10 s interval, then the process's CPU over `seconds` of idleness
    /// and the resident memory per kept parameter.
    static func idleKeeping(_ client: CosiClient, engine: StateEngine, root: MachineRoot, count: Int, seconds: Int, resync: Int) async throws -> String {
        let before = residentBytes()
        try await inParallel(count) { index in
            _ = try await client.create(Resource(
                metadata: Metadata(namespace: "runtime", type: "KernelParamSpecs.runtime.cosi.dev", id: paramKey(index)), spec: Spec(yamlSpec: "value: \"1\"\n")
            ))
        }
        let statusKind = ResourceKind(namespace: "runtime", type: "KernelParamStatuses.runtime.cosi.dev")
        try await until(timeout: .seconds(300)) { try engine.list(statusKind).filter { $0.spec.yamlSpec.hasPrefix("value: '1'\n") }.count == count }
        try await Task.sleep(for: .seconds(2))
        let kept = residentBytes()
        let cpu0 = cpuSeconds()
        let clock = ContinuousClock()
        let start = clock.now
        try await Task.sleep(for: .seconds(seconds))
        let cpu = cpuSeconds() - cpu0
        let elapsed = Self.seconds(clock.now - start)
        return String(
            format: "kept: %d kernel parameters, resynced every %d s: CPU %.2f%% of one core while idle over %d s; resident memory %.1f KiB per kept parameter (spec, status, event log, controller)",
            count, resync, 100 * cpu / elapsed, seconds, Double(kept - before) / 1024 / Double(count)
        )
    }

    static func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return 0 }
        return kib * 1024
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
