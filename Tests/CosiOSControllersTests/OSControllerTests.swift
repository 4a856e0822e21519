import CosiController
import CosiControllerRuntime
import CosiMessages
import CosiOSControllers
import CosiState
import CosiTesting
import Foundation
import NIOConcurrencyHelpers
import Testing

/// The built-in controllers against a temporary root, on an in-process engine and runtime.
@Suite("Built-in OS controllers", .timeLimit(.minutes(2)))
struct OSControllerTests {
    /// A temporary root (seeded like a sandbox), an engine, and a running runtime with the
    /// built-in controllers, for the duration of `body`.
    func withMachine(
        engine givenEngine: StateEngine? = nil, root givenRoot: MachineRoot? = nil, timers: ManualTimers? = nil, log: LogCapture? = nil,
        _ body: (StateEngine, MachineRoot, ControllerRuntime) async throws -> Void
    ) async throws {
        let root = givenRoot ?? MachineRoot(StateBackends.temporaryDirectory())
        if givenRoot == nil { try BuiltInControllers.seedSandbox(root) }
        let engine = try givenEngine ?? StateEngine(storage: MemoryStorage(), logger: quietLogger("test"))
        defer {
            if givenEngine == nil { engine.shutdown() }
            if givenRoot == nil { try? FileManager.default.removeItem(atPath: root.path) }
        }
        var configuration = ControllerRuntimeConfiguration()
        configuration.backoffInitial = .milliseconds(20)
        let runtime = ControllerRuntime(engine: engine, configuration: configuration, logger: quietLogger("test"))
        for setting in BuiltInControllers.settings {
            for definition in BuiltInControllers.definitions(setting) {
                _ = try? await engine.create(try MetaNamespace.definition(definition), owner: "cosid")
            }
            let logger = log?.logger("cosid") ?? quietLogger("test")
            if let timers {
                try runtime.register(MachineController(setting, root: root, resyncInterval: .seconds(10), logger: logger, sleep: timers.sleep))
            } else {
                try runtime.register(MachineController(setting, root: root, resyncInterval: .seconds(10), logger: logger))
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await runtime.run() }
            try await body(engine, root, runtime)
            group.cancelAll()
        }
    }

    func apply(_ engine: StateEngine, _ namespace: String, _ type: String, _ id: String, _ yaml: String) async throws {
        let address = ResourceAddress(namespace: namespace, type: type, id: id)
        if var current = try? engine.get(address) {
            current.spec = Spec(yamlSpec: yaml)
            _ = try await engine.update(current, owner: "")
        } else {
            _ = try await engine.create(Resource(metadata: Metadata(namespace: namespace, type: type, id: id), spec: Spec(yamlSpec: yaml)), owner: "")
        }
    }

    func status(_ engine: StateEngine, _ namespace: String, _ type: String, _ id: String) -> String? {
        (try? engine.get(ResourceAddress(namespace: namespace, type: type, id: id)))?.spec.yamlSpec
    }

    func file(_ root: MachineRoot, _ relative: String) -> String? {
        try? String(contentsOfFile: root.resolve(relative), encoding: .utf8)
    }

    @Test func aHostnameSpecWritesTheFileAndReportsIt() async throws {
        try await withMachine { engine, root, _ in
            try await apply(engine, "network", "HostnameSpecs.net.cosi.dev", "hostname", "hostname: talos-1\ndomainname: example.org\ndriftCorrections: 0\n")
            try await eventually("the status") { status(engine, "network", "HostnameStatuses.net.cosi.dev", "hostname") != nil }
            #expect(file(root, "etc/hostname") == "talos-1\n")
            #expect(status(engine, "network", "HostnameStatuses.net.cosi.dev", "hostname") == "hostname: talos-1\ndomainname: example.org\ndriftCorrections: 0\n")
            #expect(try engine.get(ResourceAddress(namespace: "network", type: "HostnameSpecs.net.cosi.dev", id: "hostname")).metadata.finalizers == ["hostname"])
            // A bad name is reported, and the file stays as it was.
            try await apply(engine, "network", "HostnameSpecs.net.cosi.dev", "hostname", "hostname: -bad-\n")
            try await eventually("the error") { status(engine, "network", "HostnameStatuses.net.cosi.dev", "hostname")?.contains("error:") == true }
            #expect(file(root, "etc/hostname") == "talos-1\n")
        }
    }

    @Test func resolversAreRewrittenAtomically() async throws {
        try await withMachine { engine, root, _ in
            let versions = (0..<40).map { index in ["10.0.\(index).1", "10.0.\(index).2", "2001:db8::\(index)"] }
            func content(_ servers: [String]) -> String {
                "# Managed by cosid: edit the COSI resources, not this file.\n" + servers.map { "nameserver \($0)\n" }.joined()
            }
            let complete = Set(versions.map(content))
            try await apply(engine, "network", "ResolverSpecs.net.cosi.dev", "resolvers", "dnsServers: [\(versions[0].map { "\"\($0)\"" }.joined(separator: ", "))]\n")
            try await eventually("the first file") { file(root, "etc/resolv.conf") == content(versions[0]) }
            // A reader in a tight loop while the file is rewritten 39 times: it only ever sees
            // whole files.
            let partial = NIOLockedValueBox<[String]>([])
            let reads = NIOLockedValueBox(0)
            let stop = NIOLockedValueBox(false)
            let reader = Thread {
                while !stop.withLockedValue({ $0 }) {
                    guard let text = try? String(contentsOfFile: root.resolve("etc/resolv.conf"), encoding: .utf8) else { continue }
                    reads.withLockedValue { $0 += 1 }
                    if !complete.contains(text) { partial.withLockedValue { $0.append(text) } }
                }
            }
            reader.start()
            for servers in versions.dropFirst() {
                try await apply(engine, "network", "ResolverSpecs.net.cosi.dev", "resolvers", "dnsServers: [\(servers.map { "\"\($0)\"" }.joined(separator: ", "))]\n")
                try await eventually("version \(servers[0])") { file(root, "etc/resolv.conf") == content(servers) }
            }
            stop.withLockedValue { $0 = true }
            #expect(partial.withLockedValue { $0 }.isEmpty, "a reader saw a partial file")
            #expect(reads.withLockedValue { $0 } > 100)
            // The status follows the file.
            try await eventually("the last status") { status(engine, "network", "ResolverStatuses.net.cosi.dev", "resolvers") == "dnsServers:\n- 10.0.39.1\n- 10.0.39.2\n- 2001:db8::39\ndriftCorrections: 0\n" }
        }
    }

    @Test func staticHostsKeepForeignLines() async throws {
        let root = MachineRoot(StateBackends.temporaryDirectory())
        defer { try? FileManager.default.removeItem(atPath: root.path) }
        try BuiltInControllers.seedSandbox(root)
        let foreign = "127.0.0.1 localhost\n# a comment of the admin\n192.168.1.1 router\n"
        try root.replace("etc/hosts", with: foreign)
        try await withMachine(root: root) { engine, root, _ in
            try await apply(engine, "network", "StaticHostSpecs.net.cosi.dev", "10.0.0.5", "hostnames: [db, db.internal]\n")
            try await apply(engine, "network", "StaticHostSpecs.net.cosi.dev", "10.0.0.6", "hostnames: [cache]\n")
            try await eventually("both entries") { file(root, "etc/hosts")?.contains("10.0.0.6 cache") == true && file(root, "etc/hosts")?.contains("10.0.0.5 db db.internal") == true }
            #expect(file(root, "etc/hosts")?.hasPrefix(foreign) == true)
            try await eventually("the status") { status(engine, "network", "StaticHostStatuses.net.cosi.dev", "10.0.0.5") == "hostnames:\n- db\n- db.internal\ndriftCorrections: 0\n" }
            // Removed: its line goes, the foreign lines stay; the last one removes the block.
            try await engine.teardownAndDestroy(ResourceAddress(namespace: "network", type: "StaticHostSpecs.net.cosi.dev", id: "10.0.0.5"), owner: "")
            try await eventually("one entry") { file(root, "etc/hosts")?.contains("10.0.0.5") == false }
            #expect(file(root, "etc/hosts")?.contains("10.0.0.6 cache") == true)
            try await engine.teardownAndDestroy(ResourceAddress(namespace: "network", type: "StaticHostSpecs.net.cosi.dev", id: "10.0.0.6"), owner: "")
            try await eventually("the original file") { file(root, "etc/hosts") == foreign }
        }
    }

    @Test func aKernelParameterIsWrittenReadBackAndRestored() async throws {
        try await withMachine { engine, root, _ in
            #expect(file(root, "proc/sys/vm/swappiness") == "60\n")
            try await apply(engine, "runtime", "KernelParamSpecs.runtime.cosi.dev", "vm.swappiness", "value: \"10\"\n")
            try await eventually("written") { status(engine, "runtime", "KernelParamStatuses.runtime.cosi.dev", "vm.swappiness") == "value: '10'\ndriftCorrections: 0\n" }
            #expect(file(root, "proc/sys/vm/swappiness") == "10\n")
            try await apply(engine, "runtime", "KernelParamSpecs.runtime.cosi.dev", "vm.swappiness", "value: \"20\"\n")
            try await eventually("changed") { file(root, "proc/sys/vm/swappiness") == "20\n" }
            // Destroyed: the value found before the first write comes back.
            try await engine.teardownAndDestroy(ResourceAddress(namespace: "runtime", type: "KernelParamSpecs.runtime.cosi.dev", id: "vm.swappiness"), owner: "")
            #expect(file(root, "proc/sys/vm/swappiness") == "60\n")
        }
    }

    @Test func aParameterWithSeveralWordsComparesWordByWord() async throws {
        let root = MachineRoot(StateBackends.temporaryDirectory())
        defer { try? FileManager.default.removeItem(atPath: root.path) }
        try BuiltInControllers.seedSandbox(root)
        // As /proc/sys shows it: tabs between the words.
        try root.replace("proc/sys/net/ipv4/tcp_rmem", with: "4096\t131072\t6291456\n")
        // A modification time long past: a write would make it now.
        let before = Date(timeIntervalSince1970: 1_000_000_000)
        try FileManager.default.setAttributes([.modificationDate: before], ofItemAtPath: root.resolve("proc/sys/net/ipv4/tcp_rmem"))
        try await withMachine(root: root) { engine, root, _ in
            try await apply(engine, "runtime", "KernelParamSpecs.runtime.cosi.dev", "net.ipv4.tcp_rmem", "value: 4096 131072 6291456\ndriftCorrections: 0\n")
            try await eventually("reported") { status(engine, "runtime", "KernelParamStatuses.runtime.cosi.dev", "net.ipv4.tcp_rmem") == "value: 4096 131072 6291456\ndriftCorrections: 0\n" }
        }
        #expect(file(root, "proc/sys/net/ipv4/tcp_rmem") == "4096\t131072\t6291456\n", "the same value is not written again")
        #expect(try FileManager.default.attributesOfItem(atPath: root.resolve("proc/sys/net/ipv4/tcp_rmem"))[.modificationDate] as! Date == before)
    }

    @Test func failuresAreReportedAndTheControllerKeepsRunning() async throws {
        try await withMachine { engine, root, _ in
            // A parameter that does not exist: reported, nothing created.
            try await apply(engine, "runtime", "KernelParamSpecs.runtime.cosi.dev", "no.such.param", "value: \"1\"\n")
            try await eventually("reported") { status(engine, "runtime", "KernelParamStatuses.runtime.cosi.dev", "no.such.param")?.contains("no such kernel parameter") == true }
            #expect(file(root, "proc/sys/no/such/param") == nil)
            // An unwritable path (a directory where the file should be).
            try FileManager.default.createDirectory(atPath: root.resolve("etc/hostname"), withIntermediateDirectories: true)
            try await apply(engine, "network", "HostnameSpecs.net.cosi.dev", "hostname", "hostname: box\n")
            try await eventually("reported") { status(engine, "network", "HostnameStatuses.net.cosi.dev", "hostname")?.contains("error:") == true }
            // The controller still runs: once the path is fixed, the next change succeeds.
            try FileManager.default.removeItem(atPath: root.resolve("etc/hostname"))
            try await apply(engine, "network", "HostnameSpecs.net.cosi.dev", "hostname", "hostname: box2\n")
            try await eventually("written") { file(root, "etc/hostname") == "box2\n" }
            try await eventually("no error") { status(engine, "network", "HostnameStatuses.net.cosi.dev", "hostname") == "hostname: box2\ndomainname: ''\ndriftCorrections: 0\n" }
        }
    }

    @Test func teardownAndDestroyLeavesNoStatusAndNoFinalizer() async throws {
        try await withMachine { engine, root, _ in
            try await apply(engine, "network", "TimeServerSpecs.net.cosi.dev", "timeservers", "timeServers: [ntp.example.org]\n")
            try await eventually("the status") { status(engine, "network", "TimeServerStatuses.net.cosi.dev", "timeservers") != nil }
            #expect(file(root, "etc/systemd/timesyncd.conf.d/cosi.conf")?.contains("NTP=ntp.example.org") == true)
            try await engine.teardownAndDestroy(ResourceAddress(namespace: "network", type: "TimeServerSpecs.net.cosi.dev", id: "timeservers"), owner: "")
            #expect(status(engine, "network", "TimeServerStatuses.net.cosi.dev", "timeservers") == nil)
            #expect(try engine.list(ResourceKind(namespace: "network", type: "TimeServerSpecs.net.cosi.dev")).isEmpty)
            #expect(file(root, "etc/systemd/timesyncd.conf.d/cosi.conf") == nil, "its file goes with it")
        }
    }

    @Test func aRestartWithTheSpecsInPlaceChangesNothingOnDisk() async throws {
        let root = MachineRoot(StateBackends.temporaryDirectory())
        defer { try? FileManager.default.removeItem(atPath: root.path) }
        try BuiltInControllers.seedSandbox(root)
        let engine = try StateEngine(storage: MemoryStorage(), logger: quietLogger("test"))
        defer { engine.shutdown() }
        let files = ["etc/hostname", "etc/resolv.conf", "etc/hosts", "etc/systemd/timesyncd.conf.d/cosi.conf", "proc/sys/net/ipv4/ip_forward"]
        try await withMachine(engine: engine, root: root) { engine, _, _ in
            try await apply(engine, "network", "HostnameSpecs.net.cosi.dev", "hostname", "hostname: steady\n")
            try await apply(engine, "network", "ResolverSpecs.net.cosi.dev", "resolvers", "dnsServers: [9.9.9.9]\n")
            try await apply(engine, "network", "StaticHostSpecs.net.cosi.dev", "10.1.1.1", "hostnames: [a]\n")
            try await apply(engine, "network", "TimeServerSpecs.net.cosi.dev", "timeservers", "timeServers: [t]\n")
            try await apply(engine, "runtime", "KernelParamSpecs.runtime.cosi.dev", "net.ipv4.ip_forward", "value: \"1\"\n")
            try await eventually("every file") { files.allSatisfy { file(root, $0) != nil } && file(root, "proc/sys/net/ipv4/ip_forward") == "1\n" }
            try await eventually("every status") { try engine.list(ResourceKind(namespace: "network", type: "TimeServerStatuses.net.cosi.dev")).count == 1 }
        }
        func mtimes() throws -> [String: Date] {
            Dictionary(uniqueKeysWithValues: try files.map { ($0, try FileManager.default.attributesOfItem(atPath: root.resolve($0))[.modificationDate] as! Date) })
        }
        // Modification times long past: a write would make one now.
        for path in files {
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_000_000_000)], ofItemAtPath: root.resolve(path))
        }
        let before = try mtimes()
        let contents = files.map { file(root, $0) }
        // A new runtime (as after a restart of cosid) over the same state: it reconciles every
        // controller once, and must find nothing to change.
        try await withMachine(engine: engine, root: root) { _, _, runtime in
            // Each has reconciled its start event and waits for the next: whatever it would have
            // written is written.
            try await eventually("every controller reconciled its start event") {
                BuiltInControllers.settings.map(\.name).allSatisfy { name in
                    runtime.queue(of: name).map { $0.deliveredCount >= 1 && $0.isWaiting } ?? false
                }
            }
        }
        #expect(try mtimes() == before)
        #expect(files.map { file(root, $0) } == contents)
    }
}

@Suite("Built-in types")
struct BuiltInTypeTests {
    @Test func mountIDsAreAbsolutePathsInNormalForm() {
        let sandbox = MachineRoot("/srv/sandbox")
        #expect(MountSetting.mountPoint("/mnt/data", root: sandbox) == "/srv/sandbox/mnt/data")
        #expect(MountSetting.mountPoint("/mnt/data", root: MachineRoot("/")) == "/mnt/data")
        // Forms mountinfo would show otherwise (so never match) or that leave the root.
        for id in ["/", "//", "/mnt//data", "/mnt/data/", "mnt/data", "/mnt/../etc", "/mnt/./data", ""] {
            #expect(MountSetting.mountPoint(id, root: sandbox) == nil, "\(id)")
        }
    }

    @Test func shortNamesAreDistinct() throws {
        var seen: [String: String] = [:]
        for setting in BuiltInControllers.settings {
            for spec in BuiltInControllers.definitions(setting) {
                let definition = try MetaNamespace.definition(spec)
                let filled = try Meta.ResourceDefinitionSpec(serializedBytes: definition.spec.protoSpec)
                for alias in Set(filled.aliases + filled.allAliases + [filled.resourceType.lowercased()]) {
                    #expect(seen[alias] == nil, "\(alias) names \(seen[alias] ?? "") and \(filled.resourceType)")
                    seen[alias] = filled.resourceType
                }
            }
        }
        #expect(seen["hsp"] == "HostnameSpecs.net.cosi.dev" && seen["hst"] == "HostnameStatuses.net.cosi.dev")
    }

    @Test func specSchemasNameTheField() {
        let hostname = HostnameSetting().specSchema
        #expect(hostname.problem(in: "hostname: a\n") == nil)
        #expect(hostname.problem(in: "hostnam: x\n") == "unknown field \"hostnam\" (fields: domainname, hostname)")
        #expect(hostname.problem(in: "domainname: x\n") == "field hostname is required (fields: domainname, hostname)")
        #expect(hostname.problem(in: "hostname: [a, b]\n") == "field hostname must be a single value, not a list")
        #expect(hostname.problem(in: "- a\n") == "the spec must be a mapping of fields (domainname, hostname)")
        let resolvers = ResolverSetting().specSchema
        #expect(resolvers.problem(in: "") == nil)
        #expect(resolvers.problem(in: "dnsServers: 1.1.1.1\n") == nil, "one scalar reads as a list of one")
        #expect(resolvers.problem(in: "dnsServers: {a: 1}\n") == "field dnsServers must be a list of values, not a mapping")
    }
}
