import CosiClient
import CosiMessages
import CosiRPC
import CosiTLS
import CosiTesting
import Foundation
import Testing

/// Many machines from one place: three cosid processes on 127.0.0.1 (their own ports, data
/// directories and server certificates, from one CA), cosictl --nodes and CosiFleet.
@Suite("A fleet from one place", .serialized, .timeLimit(.minutes(3)))
struct FleetTests {
    /// Three cosids and a client certificate of their CA on disk, for cosictl.
    final class Fleet: @unchecked Sendable {
        let pki: TestPKI
        var machines: [CosidProcess] = []
        let dir = StateBackends.temporaryDirectory()

        init(count: Int = 3, durable: Bool = false) async throws {
            pki = try TestPKI()
            for index in 0..<count {
                machines.append(try await CosidProcess(certificates: .node(pki, name: "node-\(index)"), durable: durable, directory: dir + "/node-\(index)"))
            }
            let client = try pki.client(name: "fleet-admin", roles: ["os:admin"])
            try writeFile(pki.caPEM, to: dir + "/ca.crt", mode: 0o644)
            try writeFile(ReloadTests.pem(client.certificateChain), to: dir + "/admin.crt", mode: 0o644)
            try writeFile(ReloadTests.pem(client.privateKey), to: dir + "/admin.key", mode: 0o600)
        }

        deinit { StateBackends.removeDirectory(dir) }

        var nodes: [CosiNode] { machines.map { CosiNode(host: "127.0.0.1", port: $0.port) } }
        var nodeList: String { nodes.map(\.description).joined(separator: ",") }

        var configuration: CosiClientConfiguration {
            get throws { try machines[0].clientConfiguration(name: "fleet-admin") }
        }

        /// cosictl with the fleet's client certificate (and `--nodes` unless `nodes` is false).
        func cosictl(_ arguments: [String], nodes: Bool = true, input: String? = nil) async throws -> (status: Int32, out: String, err: String) {
            var args = arguments + ["--ca", dir + "/ca.crt", "--cert", dir + "/admin.crt", "--key", dir + "/admin.key"]
            if nodes { args += ["--nodes", nodeList] }
            var env = ProcessInfo.processInfo.environment
            env["COSICONFIG"] = dir + "/config.yaml"
            env["XDG_CACHE_HOME"] = dir + "/cache"
            return try await runProcess(CosictlTests.cosictl, args, directory: dir, environment: env, input: input)
        }
    }

    static func name(_ id: String, _ value: String) -> String {
        """
        metadata:
          namespace: default
          type: Names.fleet.test.dev
          id: \(id)
        spec:
          name: \(value)
        """
    }

    @Test func getApplyAndDeleteAcrossEveryNode() async throws {
        let fleet = try await Fleet()
        let applied = try await fleet.cosictl(["apply", "-f", "-", "--allow-undefined-type"], input: Self.name("ada", "ada"))
        #expect(applied.status == 0, "\(applied.err)")
        for node in fleet.nodes {
            #expect(applied.out.contains("\(node)   default/Names.fleet.test.dev/ada created"), "\(applied.out)")
        }
        #expect(applied.err.contains("3 nodes: 3 ok"), "\(applied.err)")

        // Each machine holds it: read back through each one's own client.
        for machine in fleet.machines {
            let client = try await machine.client(name: "fleet-admin")
            #expect(try await client.get(namespace: "default", type: "Names.fleet.test.dev", id: "ada").metadata.version == "1")
            await client.close()
        }

        let table = try await fleet.cosictl(["get", "Names.fleet.test.dev"])
        #expect(table.status == 0, "\(table.err)")
        let lines = table.out.split(separator: "\n")
        #expect(lines.first?.hasPrefix("NODE ") == true, "\(table.out)")
        #expect(lines.count == 4, "\(table.out)")
        for (line, node) in zip(lines.dropFirst(), fleet.nodes) {
            #expect(line.hasPrefix(node.description) && line.contains("ada"), "\(table.out)")
        }

        let yaml = try await fleet.cosictl(["get", "Names.fleet.test.dev", "ada", "-o", "yaml"])
        #expect(yaml.out.components(separatedBy: "node: 127.0.0.1:").count == 4, "\(yaml.out)")
        let json = try await fleet.cosictl(["get", "Names.fleet.test.dev", "-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any]
        let items = object?["items"] as? [[String: Any]] ?? []
        #expect(items.compactMap { $0["node"] as? String } == fleet.nodes.map(\.description), "\(json.out)")

        let deleted = try await fleet.cosictl(["delete", "Names.fleet.test.dev", "ada"])
        #expect(deleted.status == 0, "\(deleted.err)")
        #expect(deleted.out.components(separatedBy: "destroyed").count == 4, "\(deleted.out)")
        let after = try await fleet.cosictl(["get", "Names.fleet.test.dev", "ada"])
        #expect(after.status == 1)
        // The type was never defined: once its last resource is gone, each node says so.
        #expect(after.err.components(separatedBy: "no resource type \"Names.fleet.test.dev\" is defined").count == 4, "\(after.err)")
        #expect(after.err.contains("3 nodes: 0 ok, 3 failed"), "\(after.err)")
    }

    @Test func aNodeThatIsDownIsOneErrorRowAndTheOthersArePrinted() async throws {
        let fleet = try await Fleet()
        let down = fleet.nodes[1]
        fleet.machines[1].stop()
        let result = try await fleet.cosictl(["get", "ns"])
        #expect(result.status == 1)
        let rows = result.out.split(separator: "\n").dropFirst()
        #expect(rows.contains { $0.hasPrefix(fleet.nodes[0].description) }, "\(result.out)")
        #expect(rows.contains { $0.hasPrefix(fleet.nodes[2].description) }, "\(result.out)")
        #expect(!rows.contains { $0.hasPrefix(down.description) }, "\(result.out)")
        let errorRow = result.err.split(separator: "\n").first { $0.hasPrefix(down.description) }
        #expect(errorRow?.contains("UNAVAILABLE") == true && errorRow?.contains("connection refused") == true, "\(result.err)")
        #expect(result.err.contains("3 nodes: 2 ok, 1 failed"), "\(result.err)")

        // --fail-fast with one at a time: the first failure stops the rest, which are not run.
        let fast = try await fleet.cosictl(["info", "--parallel", "1", "--fail-fast"])
        #expect(fast.status == 1)
        #expect(fast.out.contains(fleet.nodes[0].description), "\(fast.out)")
        #expect(!fast.out.contains(fleet.nodes[2].description), "\(fast.out)")
        #expect(fast.err.contains("\(fleet.nodes[2])") && fast.err.contains("CANCELLED"), "\(fast.err)")
    }

    @Test func oneAtATimeGivesTheSameResultInOrder() async throws {
        let fleet = try await Fleet()
        for id in ["a", "b", "c"] {
            let applied = try await fleet.cosictl(["apply", "-f", "-", "--allow-undefined-type"], input: Self.name(id, id))
            #expect(applied.status == 0, "\(applied.err)")
        }
        for command in [["get", "Names.fleet.test.dev", "-o", "wide"], ["info"], ["history", "Names.fleet.test.dev", "b"], ["diff", "-f", "-", "--allow-undefined-type"]] {
            let input = command[0] == "diff" ? Self.name("b", "changed") : nil
            let parallel = try await fleet.cosictl(command, input: input)
            let serial = try await fleet.cosictl(command + ["--parallel", "1"], input: input)
            #expect(parallel.out == serial.out, "\(command)")
            #expect(parallel.status == serial.status, "\(command)")
            let order = fleet.nodes.map { serial.out.range(of: $0.description)?.lowerBound }
            #expect(order.allSatisfy { $0 != nil } && order == order.sorted { $0! < $1! }, "\(serial.out)")
        }
        // diff follows diff(1) across the fleet: differences on every node are exit 1.
        let differences = try await fleet.cosictl(["diff", "-f", "-", "--allow-undefined-type"], input: Self.name("b", "changed"))
        #expect(differences.status == 1)
        #expect(differences.out.components(separatedBy: "+  name: changed").count == 4, "\(differences.out)")
    }

    @Test func aTriedChangeIsConfirmedOnEveryNodeByItsOwnID() async throws {
        let fleet = try await Fleet()
        // The nodes have different histories, so the same change gets a different id on each.
        let client = try await fleet.machines[2].client(name: "fleet-admin")
        _ = try await client.create(Resource(metadata: Metadata(namespace: "default", type: "Other.fleet.test.dev", id: "x"), spec: Spec(yamlSpec: "a: 1\n")))
        await client.close()
        let tried = try await fleet.cosictl(["apply", "-f", "-", "--allow-undefined-type", "--try", "5m"], input: Self.name("ada", "ada"))
        #expect(tried.status == 0, "\(tried.err)")
        let hint = try #require(tried.err.split(separator: "\n").first { $0.contains("cosictl confirm ") }, "\(tried.err)")
        let confirmPart = hint.components(separatedBy: "cosictl confirm ")[1].components(separatedBy: ";")[0]
        let pairs = confirmPart.split(separator: " ").map(String.init)
        #expect(pairs.count == 3, "\(hint)")
        #expect(Set(pairs.map { $0.split(separator: "=")[1] }).count == 2, "\(pairs)")
        // Only the pairs: the nodes come from them.
        let confirmed = try await fleet.cosictl(["confirm"] + pairs, nodes: false)
        #expect(confirmed.status == 0, "\(confirmed.err)")
        #expect(confirmed.out.components(separatedBy: "confirmed").count == 4, "\(confirmed.out)")
        let changes = try await fleet.cosictl(["get", "changes", "-o", "json"])
        #expect(changes.out.components(separatedBy: "\"cosi.dev/phase\": \"confirmed\"").count == 4, "\(changes.out)")
    }

    @Test func aContextListsItsNodes() async throws {
        let fleet = try await Fleet()
        var env = ProcessInfo.processInfo.environment
        env["COSICONFIG"] = fleet.dir + "/config.yaml"
        let generated = try await runProcess(CosictlTests.cosictl, [
            "gen", "config", "--name", "fleet", "--ca-cert", fleet.dir + "/ca.crt", "--cert", fleet.dir + "/admin.crt", "--key", fleet.dir + "/admin.key",
            "--nodes", fleet.nodeList,
        ], directory: fleet.dir, environment: env)
        #expect(generated.status == 0, "\(generated.err)")
        let info = try await runProcess(CosictlTests.cosictl, ["info"], directory: fleet.dir, environment: env)
        #expect(info.status == 0, "\(info.err)")
        #expect(info.out.components(separatedBy: "identity: fleet-admin").count == 4, "\(info.out)")
        // --endpoint overrides the context's nodes: one server, no NODE column.
        let one = try await runProcess(CosictlTests.cosictl, ["info", "--endpoint", fleet.nodes[1].description], directory: fleet.dir, environment: env)
        #expect(one.out.hasPrefix("server:"), "\(one.out)")
        // edit takes one node.
        let edit = try await runProcess(CosictlTests.cosictl, ["edit", "ns", "default"], directory: fleet.dir, environment: env)
        #expect(edit.status == 64 && edit.err.contains("edit works on one node"), "\(edit.err)")
    }

    @Test func aNodeThatNeverAnswersIsBoundedByTimeout() async throws {
        let fleet = try await Fleet(count: 2)
        // A listener that accepts TCP but never speaks TLS.
        let silent = try SilentListener()
        let started = ContinuousClock.now
        let result = try await fleet.cosictl(["info", "--timeout", "1s", "--nodes", "127.0.0.1:\(silent.port)"])
        let elapsed = ContinuousClock.now - started
        #expect(result.status == 1)
        let row = result.err.split(separator: "\n").first { $0.hasPrefix("127.0.0.1:\(silent.port)") }
        #expect(row?.contains("DEADLINE_EXCEEDED") == true || row?.contains("UNAVAILABLE") == true, "\(result.err)")
        #expect(result.err.contains("3 nodes: 2 ok, 1 failed"), "\(result.err)")
        #expect(elapsed < .seconds(8), "\(elapsed)")
    }

    @Test func aMergedWatchResumesEachNodeFromItsOwnBookmark() async throws {
        let fleet = try await Fleet(durable: true)
        let cosiFleet = CosiFleet(nodes: fleet.nodes, configuration: try fleet.configuration)
        let states = StateLog()
        var request = WatchRequest(namespace: "default", type: "Counters.fleet.test.dev", apiVersion: 1)
        request.options = WatchOptions()
        let watch = cosiFleet.watch(request, maximumBackoff: .milliseconds(200))
            .onStateChange { node, state in states.append(node, state) }
        let received = Received()
        let reader = Task {
            for try await tagged in watch {
                guard let resource = tagged.event.resource else { continue }
                received.append(tagged.node, resource.spec.yamlSpec)
            }
        }
        try await eventually("every node's watch is connected") { fleet.nodes.allSatisfy { watch.state(of: $0).map { "\($0)" == "connected" } ?? false } }

        func write(_ node: Int, _ value: Int) async throws {
            let client = try await cosiFleet.client(fleet.nodes[node])
            let resource = Resource(metadata: Metadata(namespace: "default", type: "Counters.fleet.test.dev", id: "n"), spec: Spec(yamlSpec: "value: \(value)\n"))
            if value == 0 {
                _ = try await client.create(resource)
            } else {
                var current = try await client.get(namespace: "default", type: "Counters.fleet.test.dev", id: "n")
                current.spec = resource.spec
                _ = try await client.update(current)
            }
        }
        for node in 0..<3 {
            for value in 0..<5 { try await write(node, value) }
        }
        try await eventually("the first writes arrived") { received.count == 15 }

        // Node 1 restarts: the other nodes' events go on while it is down, and its own after the
        // restart arrive once each, in order (its watch resumes from its bookmark).
        fleet.machines[1].stop()
        try await eventually("node 1 is reconnecting") { watch.state(of: fleet.nodes[1]).map { "\($0)".hasPrefix("reconnecting") } ?? false }
        for value in 5..<8 { try await write(0, value) }
        try await fleet.machines[1].restart()
        for value in 5..<10 { try await write(1, value) }
        try await eventually("every event arrived") { received.count == 15 + 3 + 5 }
        #expect(received.values(fleet.nodes[0]) == (0..<8).map { "value: \($0)\n" })
        #expect(received.values(fleet.nodes[1]) == (0..<10).map { "value: \($0)\n" })
        #expect(received.values(fleet.nodes[2]) == (0..<5).map { "value: \($0)\n" })
        try await eventually("node 1 is connected again") { watch.state(of: fleet.nodes[1]).map { "\($0)" == "connected" } ?? false }
        let seen = states.kinds(fleet.nodes[1])
        #expect(seen.contains("connected") && seen.contains { $0.hasPrefix("reconnecting") }, "\(seen)")
        // Nothing more: no duplicate was in flight.
        #expect(received.count == 23)
        reader.cancel()
        _ = await reader.result
        await cosiFleet.close()
    }

    @Test func cosictlWatchesEveryNodeInOneStream() async throws {
        let fleet = try await Fleet(durable: true)
        for machine in fleet.machines {
            let client = try await machine.client(name: "fleet-admin")
            _ = try await client.create(Resource(metadata: Metadata(namespace: "default", type: "Names.fleet.test.dev", id: "boot"), spec: Spec(yamlSpec: "name: boot\n")))
            await client.close()
        }
        let (process, printed, errors) = try startCosictl([
            "get", "Names.fleet.test.dev", "--watch", "--nodes", fleet.nodeList,
            "--ca", fleet.dir + "/ca.crt", "--cert", fleet.dir + "/admin.crt", "--key", fleet.dir + "/admin.key",
        ], directory: fleet.dir)
        defer { if process.isRunning { process.terminate() } }
        func rows(_ text: String) -> [String] { printed.value.split(separator: "\n").map(String.init).filter { $0.contains(text) } }
        try await eventually("every node's bootstrap row") { rows("boot").count == 3 }
        #expect(printed.value.hasPrefix("NODE "), "\(printed.value)")
        for node in fleet.nodes { #expect(rows("boot").contains { $0.hasPrefix(node.description) }, "\(printed.value)") }

        fleet.machines[2].stop()
        try await eventually("the lost node is said on stderr") { errors.value.contains("\(fleet.nodes[2]): reconnecting") }
        try await fleet.machines[2].restart()
        for (index, machine) in fleet.machines.enumerated() {
            let client = try await machine.client(name: "fleet-admin")
            _ = try await client.create(Resource(metadata: Metadata(namespace: "default", type: "Names.fleet.test.dev", id: "late-\(index)"), spec: Spec(yamlSpec: "name: late\n")))
            await client.close()
        }
        try await eventually("every node's created row") { rows("late-").count == 3 }
        for (index, node) in fleet.nodes.enumerated() {
            let row = rows("late-\(index)")
            #expect(row.count == 1 && row[0].hasPrefix(node.description) && row[0].contains(" + "), "\(printed.value)")
        }
        // The restarted node's bootstrap is not printed again: it resumed from its bookmark.
        #expect(rows("boot").count == 3, "\(printed.value)")
    }

    @Test func fanOutReportsEachNodeAndStopsAtTheFirstFailureWhenAsked() async throws {
        let fleet = try await Fleet()
        let cosiFleet = CosiFleet(nodes: fleet.nodes + [CosiNode(host: "127.0.0.1", port: 1)], configuration: try fleet.configuration)
        let answers = await cosiFleet.fanOut { node, client in try await client.info().identity }
        #expect(answers.map(\.node) == cosiFleet.nodes)
        #expect(answers.prefix(3).allSatisfy { $0.value == "fleet-admin" })
        #expect(answers[3].status?.code == .unavailable)
        let listed = await cosiFleet.list(namespace: MetaNamespace.namespace, type: MetaNamespace.namespaceType)
        #expect(listed.prefix(3).allSatisfy { ($0.value?.count ?? 0) > 0 })
        await cosiFleet.close()
        // Closed: no new connection is made.
        let closed = await cosiFleet.fanOut { _, client in try await client.info().identity }
        #expect(closed.allSatisfy { $0.status?.code == .cancelled }, "\(closed.map { "\($0.status as Any)" })")

        // Fail fast, one at a time, the unreachable node first: the rest are not run.
        let failing = CosiFleet(nodes: [CosiNode(host: "127.0.0.1", port: 1)] + fleet.nodes, configuration: try fleet.configuration)
        let stopped = await failing.fanOut(parallel: 1, failFast: true) { _, client in try await client.info().identity }
        #expect(stopped[0].status?.code == .unavailable)
        #expect(stopped.dropFirst().allSatisfy { $0.status?.code == .cancelled }, "\(stopped.map { "\($0.status as Any)" })")
        await failing.close()

        // The deadline answers even while the connection attempt (10 s) goes on.
        let silent = try SilentListener()
        let slow = CosiFleet(nodes: [CosiNode(host: "127.0.0.1", port: silent.port), fleet.nodes[0]], configuration: try fleet.configuration)
        let began = ContinuousClock.now
        let bounded = await slow.fanOut(timeout: .milliseconds(500)) { _, client in try await client.info().identity }
        #expect(ContinuousClock.now - began < .seconds(5))
        #expect(bounded[0].status?.code == .deadlineExceeded, "\(bounded[0].status as Any)")
        #expect(bounded[1].value == "fleet-admin")
        await slow.close()
    }
}

/// A TCP listener on 127.0.0.1 that never reads or answers (the kernel completes the handshake).
final class SilentListener: @unchecked Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 16) == 0 else { throw ConformanceFailure("cannot listen") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(fd) }
}

/// The events a watch delivered, per node.
final class Received: @unchecked Sendable {
    private let lock = NSLock()
    private var byNode: [CosiNode: [String]] = [:]

    func append(_ node: CosiNode, _ value: String) { lock.withLock { byNode[node, default: []].append(value) } }
    var count: Int { lock.withLock { byNode.values.map(\.count).reduce(0, +) } }
    func values(_ node: CosiNode) -> [String] { lock.withLock { byNode[node] ?? [] } }
}

/// The states a fleet watch reported, per node.
final class StateLog: @unchecked Sendable {
    private let lock = NSLock()
    private var byNode: [CosiNode: [String]] = [:]

    func append(_ node: CosiNode, _ state: FleetNodeState) { lock.withLock { byNode[node, default: []].append("\(state)") } }
    func kinds(_ node: CosiNode) -> [String] { lock.withLock { byNode[node] ?? [] } }
}
