import CosiController
import CosiControllerRuntime
import CosiMessages
import CosiNetlink
import CosiOSControllers
import CosiState
import CosiTesting
import Foundation
import NIOConcurrencyHelpers
import Testing

/// A network namespace made for one test (`ip netns add`), deleted after it.
struct TestNetns {
    let name: String
    var path: String { "/run/netns/\(name)" }

    init() throws {
        name = "cosi-t-" + String(UInt32.random(in: 0 ... .max), radix: 16)
        try Self.run(["netns", "add", name])
        try ip("link", "set", "lo", "up")
    }

    func delete() { _ = try? Self.run(["netns", "del", name]) }

    /// `ip -n NAME ARGS...`; its output. Throws with ip's message when it fails.
    @discardableResult
    func ip(_ arguments: String...) throws -> String { try Self.run(["-n", name] + arguments) }

    /// `ip -j -n NAME ARGS...`, parsed.
    func json(_ arguments: String...) throws -> [[String: Any]] {
        let text = try Self.run(["-j", "-n", name] + arguments)
        return (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]]) ?? []
    }

    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestFailure("ip \(arguments.joined(separator: " ")): \(String(decoding: error, as: UTF8.self))")
        }
        return String(decoding: output, as: UTF8.self)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Links, addresses and routes kept over rtnetlink, in network namespaces the tests make.
@Suite("Network controllers", .timeLimit(.minutes(2)), .enabled(if: getuid() == 0, "needs root to make network namespaces (ip netns add); CI runs as root"))
struct NetworkTests {
    let support = OSControllerTests()

    /// An engine and a runtime running the three network controllers in a new namespace.
    func withNetwork(timers: ManualTimers? = nil, _ body: (StateEngine, TestNetns, ControllerRuntime, [String: NetworkController]) async throws -> Void) async throws {
        let netns = try TestNetns()
        defer { netns.delete() }
        let engine = try StateEngine(storage: MemoryStorage(), logger: quietLogger("test"))
        defer { engine.shutdown() }
        var configuration = ControllerRuntimeConfiguration()
        configuration.backoffInitial = .milliseconds(20)
        let runtime = ControllerRuntime(engine: engine, configuration: configuration, logger: quietLogger("test"))
        let namespace = try NetworkNamespace(path: netns.path)
        var controllers: [String: NetworkController] = [:]
        for setting in BuiltInControllers.network {
            for definition in BuiltInControllers.definitions(setting) {
                _ = try? await engine.create(try MetaNamespace.definition(definition), owner: "cosid")
            }
            let controller = if let timers {
                try NetworkController(setting, namespace: namespace, logger: quietLogger("test"), sleep: timers.sleep)
            } else {
                try NetworkController(setting, namespace: namespace, logger: quietLogger("test"))
            }
            controllers[setting.name] = controller
            try runtime.register(controller)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await runtime.run() }
            try await body(engine, netns, runtime, controllers)
            group.cancelAll()
        }
    }

    func apply(_ engine: StateEngine, _ type: String, _ id: String, _ yaml: String = "{}\n") async throws {
        try await support.apply(engine, "network", type, id, yaml)
    }

    func destroy(_ engine: StateEngine, _ type: String, _ id: String) async throws {
        let address = ResourceAddress(namespace: "network", type: type, id: id)
        _ = try await engine.teardown(address, owner: "")
        try await eventually("\(id): released by its controller") { (try? engine.get(address))?.metadata.finalizers.isEmpty ?? true }
        try await engine.destroy(address, owner: "")
    }

    func status(_ engine: StateEngine, _ type: String, _ id: String) -> String {
        support.status(engine, "network", type, id) ?? ""
    }

    func statusIDs(_ engine: StateEngine, _ type: String) throws -> Set<String> {
        Set(try engine.list(ResourceKind(namespace: "network", type: type)).map(\.metadata.id))
    }

    func idle(_ runtime: ControllerRuntime) async throws {
        for name in ["links", "addresses", "routes"] { try await support.idle(runtime, name) }
    }

    func link(_ netns: TestNetns, _ name: String) throws -> [String: Any]? {
        try netns.json("link").first { $0["ifname"] as? String == name }
    }

    // MARK: Links

    @Test func aVethPairAndABridgeAreCreatedJoinedAndDeletedWithTheirSpecs() async throws {
        try await withNetwork { engine, netns, runtime, _ in
            try await apply(engine, "LinkSpecs.net.cosi.dev", "br-t", "kind: bridge\n")
            try await apply(engine, "LinkSpecs.net.cosi.dev", "va", "kind: veth\npeer: vb\nmtu: 1400\nmaster: br-t\n")
            try await eventually("created, up, MTU set, enslaved") {
                guard let va = try link(netns, "va"), let bridge = try link(netns, "br-t") else { return false }
                let flags = va["flags"] as? [String] ?? []
                return flags.contains("UP") && va["mtu"] as? Int == 1400 && va["master"] as? String == "br-t" && (bridge["flags"] as? [String] ?? []).contains("UP")
            }
            #expect(try link(netns, "vb") != nil, "the peer is made with it")
            try await eventually("the status reports it") {
                let text = status(engine, "LinkStatuses.net.cosi.dev", "va")
                return text.contains("mtu: 1400") && text.contains("master: br-t") && text.contains("kind: veth") && text.contains("driftCorrections: 0")
            }

            try await destroy(engine, "LinkSpecs.net.cosi.dev", "va")
            try await destroy(engine, "LinkSpecs.net.cosi.dev", "br-t")
            #expect(try link(netns, "va") == nil && link(netns, "vb") == nil && link(netns, "br-t") == nil, "what cosid created goes with its spec")
            try await eventually("their statuses go") { try statusIDs(engine, "LinkStatuses.net.cosi.dev").isDisjoint(with: ["va", "vb", "br-t"]) }
        }
    }

    @Test func aLinkThatExistedGetsBackItsMTUAndStateWhenItsSpecGoes() async throws {
        try await withNetwork { engine, netns, runtime, _ in
            try netns.ip("link", "add", "h0", "type", "veth", "peer", "name", "h1")
            try await apply(engine, "LinkSpecs.net.cosi.dev", "h0", "mtu: 1300\n")
            try await eventually("up with MTU 1300") { try link(netns, "h0")?["mtu"] as? Int == 1300 && (link(netns, "h0")?["flags"] as? [String] ?? []).contains("UP") }
            // Set down by hand: up again, counted.
            try netns.ip("link", "set", "h0", "down")
            try await eventually("up again") { (try link(netns, "h0")?["flags"] as? [String] ?? []).contains("UP") }
            try await eventually("counted") { status(engine, "LinkStatuses.net.cosi.dev", "h0").contains("driftCorrections: 1") }

            try await destroy(engine, "LinkSpecs.net.cosi.dev", "h0")
            let h0 = try #require(try link(netns, "h0"), "a link cosid did not create stays")
            #expect(h0["mtu"] as? Int == 1500)
            #expect(!(h0["flags"] as? [String] ?? []).contains("UP"), "down, as it was")
            try await eventually("its status is a plain one again") { !status(engine, "LinkStatuses.net.cosi.dev", "h0").contains("driftCorrections") }
        }
    }

    // MARK: Addresses

    @Test func addressesRemovedByHandComeBackAndOneThatExistedStays() async throws {
        try await withNetwork { engine, netns, runtime, _ in
            try netns.ip("link", "add", "h0", "type", "veth", "peer", "name", "h1")
            try netns.ip("addr", "add", "10.77.0.9/24", "dev", "h0")
            let ids = ["h0/10.77.0.1/24", "h0/fd00:77::1/64", "h0/10.77.0.9/24"]
            for id in ids { try await apply(engine, "AddressSpecs.net.cosi.dev", id) }
            func present() throws -> Set<String> {
                Set(try netns.json("addr", "show", "dev", "h0").flatMap { ($0["addr_info"] as? [[String: Any]] ?? []).map { "h0/\($0["local"] ?? "")/\($0["prefixlen"] ?? "")" } })
            }
            try await eventually("added") { try present().isSuperset(of: ids) }
            try await idle(runtime)

            try netns.ip("addr", "del", "10.77.0.1/24", "dev", "h0")
            try netns.ip("addr", "del", "fd00:77::1/64", "dev", "h0")
            try await eventually("back", timeout: .seconds(5)) { try present().isSuperset(of: ids) }
            try await eventually("counted") {
                status(engine, "AddressStatuses.net.cosi.dev", "h0/10.77.0.1/24").contains("driftCorrections: 1")
                    && status(engine, "AddressStatuses.net.cosi.dev", "h0/fd00:77::1/64").contains("driftCorrections: 1")
            }
            #expect(status(engine, "AddressStatuses.net.cosi.dev", "h0/10.77.0.1/24").contains("found: (no address)"))

            for id in ids { try await destroy(engine, "AddressSpecs.net.cosi.dev", id) }
            let left = try present()
            #expect(left.contains("h0/10.77.0.9/24"), "an address that existed before its spec stays")
            #expect(!left.contains("h0/10.77.0.1/24") && !left.contains("h0/fd00:77::1/64"), "what cosid added goes")
        }
    }

    // MARK: Routes

    @Test func routesRemovedByHandComeBackAndOthersRoutesAreNeverRemoved() async throws {
        try await withNetwork { engine, netns, runtime, _ in
            try netns.ip("link", "add", "h0", "type", "veth", "peer", "name", "h1")
            try netns.ip("link", "set", "h1", "up")
            try netns.ip("link", "set", "h0", "up")
            try netns.ip("addr", "add", "10.66.0.1/24", "dev", "h0")
            try netns.ip("route", "add", "10.55.0.0/16", "via", "10.66.0.7")
            try await apply(engine, "RouteSpecs.net.cosi.dev", "10.98.0.0/16", "gateway: 10.66.0.254\n")
            try await apply(engine, "RouteSpecs.net.cosi.dev", "10.97.0.0/16", "link: h0\nmetric: 50\n")
            try await apply(engine, "RouteSpecs.net.cosi.dev", "0.0.0.0/0", "gateway: 10.66.0.254\n")
            func routes() throws -> [String] {
                try netns.json("route").map { "\($0["dst"] ?? "")|\($0["gateway"] ?? "")|\($0["dev"] ?? "")|\($0["metric"] ?? 0)|\($0["protocol"] ?? "")" }
            }
            let wanted = ["10.98.0.0/16|10.66.0.254|h0|1024|152", "10.97.0.0/16||h0|50|152", "default|10.66.0.254|h0|1024|152"]
            try await eventually("added, marked as cosid's") { Set(try routes()).isSuperset(of: wanted) }
            try await idle(runtime)
            #expect(status(engine, "RouteStatuses.net.cosi.dev", "10.98.0.0/16/1024/h0").contains("protocol: cosi"))

            try netns.ip("route", "del", "10.98.0.0/16")
            try netns.ip("route", "del", "default")
            try await eventually("back", timeout: .seconds(5)) { Set(try routes()).isSuperset(of: wanted) }
            try await eventually("counted") { status(engine, "RouteStatuses.net.cosi.dev", "0.0.0.0/0/1024/h0").contains("driftCorrections: 1") }

            for id in ["10.98.0.0/16", "10.97.0.0/16", "0.0.0.0/0"] { try await destroy(engine, "RouteSpecs.net.cosi.dev", id) }
            let left = try routes()
            #expect(left.contains("10.55.0.0/16|10.66.0.7|h0|0|"), "a route cosid did not add stays: \(left)")
            #expect(!left.contains { $0.hasSuffix("|152") }, "cosid's routes go with their specs: \(left)")
        }
    }

    @Test func aRouteInTheWayThatCosidDidNotAddIsReportedAndLeft() async throws {
        try await withNetwork { engine, netns, runtime, _ in
            try netns.ip("link", "add", "h0", "type", "veth", "peer", "name", "h1")
            try netns.ip("link", "set", "h0", "up")
            try netns.ip("route", "add", "10.44.0.0/16", "dev", "h0", "metric", "1024")
            try await apply(engine, "RouteSpecs.net.cosi.dev", "10.44.0.0/16", "gateway: 10.66.0.1\n")
            try await eventually("reported") { status(engine, "RouteStatuses.net.cosi.dev", "10.44.0.0/16/1024/-").contains("cosid did not add") }
            try await destroy(engine, "RouteSpecs.net.cosi.dev", "10.44.0.0/16")
            #expect(try netns.ip("route").contains("10.44.0.0/16 dev h0"), "left in place")
        }
    }

    // MARK: Statuses

    @Test func theStatusesAreWhatTheKernelSays() async throws {
        try await withNetwork { engine, netns, runtime, _ in
            try netns.ip("link", "add", "h0", "type", "veth", "peer", "name", "h1")
            try netns.ip("link", "set", "h0", "up")
            try netns.ip("link", "set", "h1", "up")
            try netns.ip("addr", "add", "10.33.0.1/24", "dev", "h0")
            try netns.ip("addr", "add", "fd00:33::1/64", "dev", "h0", "nodad")
            try netns.ip("route", "add", "10.34.0.0/16", "via", "10.33.0.2", "metric", "7")

            func kernelLinks() throws -> Set<String> { Set(try netns.json("link").compactMap { $0["ifname"] as? String }) }
            func kernelAddresses() throws -> Set<String> {
                Set(try netns.json("addr").flatMap { link in
                    (link["addr_info"] as? [[String: Any]] ?? []).map { "\(link["ifname"] ?? "")/\($0["local"] ?? "")/\($0["prefixlen"] ?? "")" }
                })
            }
            func kernelRoutes() throws -> Set<String> {
                Set(try (netns.json("route") + netns.json("-6", "route")).map { route in
                    var destination = route["dst"] as? String ?? ""
                    let six = destination.contains(":") || (route["gateway"] as? String ?? "").contains(":")
                    if destination == "default" { destination = six ? "::/0" : "0.0.0.0/0" }
                    if !destination.contains("/") { destination += six ? "/128" : "/32" }
                    return "\(destination)/\(route["metric"] as? Int ?? 0)/\(route["dev"] as? String ?? "-")"
                })
            }
            func same() throws -> Bool {
                try statusIDs(engine, "LinkStatuses.net.cosi.dev") == kernelLinks()
                    && statusIDs(engine, "AddressStatuses.net.cosi.dev") == kernelAddresses()
                    && statusIDs(engine, "RouteStatuses.net.cosi.dev") == kernelRoutes()
            }
            try await eventually("the statuses are the kernel's") { try same() }
            #expect(try statusIDs(engine, "AddressStatuses.net.cosi.dev").contains("lo/127.0.0.1/8"), "the namespace's own lo too")
            #expect(status(engine, "AddressStatuses.net.cosi.dev", "h0/fd00:33::1/64").contains("family: inet6"))
            #expect(status(engine, "RouteStatuses.net.cosi.dev", "10.34.0.0/16/7/h0").contains("gateway: 10.33.0.2"))

            // Added and removed by hand: they appear and go.
            try netns.ip("link", "add", "h2", "type", "veth", "peer", "name", "h3")
            try netns.ip("addr", "add", "10.35.0.1/24", "dev", "h0")
            try netns.ip("route", "del", "10.34.0.0/16")
            try await eventually("appeared and went") {
                try same() && statusIDs(engine, "LinkStatuses.net.cosi.dev").contains("h3") && statusIDs(engine, "AddressStatuses.net.cosi.dev").contains("h0/10.35.0.1/24")
                    && !statusIDs(engine, "RouteStatuses.net.cosi.dev").contains("10.34.0.0/16/7/h0")
            }
            try netns.ip("link", "del", "h2")
            try await eventually("the link and its peer went") { try same() && !statusIDs(engine, "LinkStatuses.net.cosi.dev").contains("h3") }
            let link = status(engine, "LinkStatuses.net.cosi.dev", "h0")
            let kernel = try #require(try self.link(netns, "h0"))
            #expect(link.contains("mtu: \(kernel["mtu"] as? Int ?? 0)") && link.contains("hardwareAddress: \(kernel["address"] as? String ?? "")") && link.contains("operState: \(kernel["operstate"] as? String ?? "")"), "\(link) vs \(kernel)")
        }
    }

    // MARK: Failures

    @Test func aSpecThatCannotBeAppliedReportsWhyAndSucceedsOnceItCan() async throws {
        try await withNetwork { engine, netns, runtime, _ in
            try await apply(engine, "AddressSpecs.net.cosi.dev", "late0/10.22.0.1/24")
            try await apply(engine, "RouteSpecs.net.cosi.dev", "10.23.0.0/16", "gateway: 10.22.0.254\n")
            try await eventually("the missing link reported") { status(engine, "AddressStatuses.net.cosi.dev", "late0/10.22.0.1/24").contains("no link named late0") }
            try await eventually("the unreachable gateway reported") { status(engine, "RouteStatuses.net.cosi.dev", "10.23.0.0/16/1024/-").contains("error:") }
            #expect(!status(engine, "AddressStatuses.net.cosi.dev", "late0/10.22.0.1/24").contains("family:"), "no kernel fields while it is not in the kernel")

            // The link appears: the address, then the route, follow.
            try netns.ip("link", "add", "late0", "type", "veth", "peer", "name", "late1")
            try netns.ip("link", "set", "late0", "up")
            try await eventually("applied") { try netns.ip("route").contains("10.23.0.0/16 via 10.22.0.254 dev late0") }
            try await eventually("reported") {
                let address = status(engine, "AddressStatuses.net.cosi.dev", "late0/10.22.0.1/24")
                return address.contains("family: inet") && !address.contains("error:") && status(engine, "RouteStatuses.net.cosi.dev", "10.23.0.0/16/1024/late0").contains("protocol: cosi")
            }
            try await eventually("the pending status gave way to the kernel's") { try !statusIDs(engine, "RouteStatuses.net.cosi.dev").contains("10.23.0.0/16/1024/-") }
        }
    }

    @Test func badSpecsAreRefusedOrReportedClearly() async throws {
        let links = LinkSetting().specSchema, routes = RouteSetting().specSchema
        #expect(links.problem(in: "mtu: big\n")?.contains("mtu must be a whole number") == true)
        #expect(links.problem(in: "kind: tun\n")?.contains("kind must be one of") == true)
        #expect(links.problem(in: "up: maybe\n")?.contains("up must be true or false") == true)
        #expect(routes.problem(in: "metric: -1\n")?.contains("metric must be a whole number") == true)
        try await withNetwork { engine, netns, runtime, _ in
            try await apply(engine, "AddressSpecs.net.cosi.dev", "h0/10.1.0.1")
            try await apply(engine, "RouteSpecs.net.cosi.dev", "10.98.0.1/16", "link: h0\n")
            try await apply(engine, "LinkSpecs.net.cosi.dev", "v9", "kind: veth\n")
            try await eventually("each says why") {
                status(engine, "AddressStatuses.net.cosi.dev", "h0/10.1.0.1").contains("LINK/ADDRESS/PREFIX")
                    && status(engine, "RouteStatuses.net.cosi.dev", "10.98.0.1/16/1024/h0").contains("write the destination as 10.98.0.0/16")
                    && status(engine, "LinkStatuses.net.cosi.dev", "v9").contains("needs its peer")
            }
        }
    }

    // MARK: No loop

    @Test func withEverySpecAppliedNothingIsWrittenAgain() async throws {
        let timers = ManualTimers()
        try await withNetwork(timers: timers) { engine, netns, runtime, controllers in
            try netns.ip("link", "add", "h0", "type", "veth", "peer", "name", "h1")
            try netns.ip("link", "set", "h1", "up")
            try await apply(engine, "LinkSpecs.net.cosi.dev", "h0", "mtu: 1450\n")
            try await apply(engine, "LinkSpecs.net.cosi.dev", "br-n", "kind: bridge\n")
            try await apply(engine, "AddressSpecs.net.cosi.dev", "h0/10.11.0.1/24")
            try await apply(engine, "AddressSpecs.net.cosi.dev", "h0/fd00:11::1/64")
            try await apply(engine, "RouteSpecs.net.cosi.dev", "10.12.0.0/16", "gateway: 10.11.0.254\n")
            try await apply(engine, "RouteSpecs.net.cosi.dev", "fd00:12::/48", "link: h0\n")
            try await eventually("all applied") {
                try netns.ip("route").contains("10.12.0.0/16 via 10.11.0.254") && netns.ip("-6", "route").contains("fd00:12::/48 dev h0")
            }
            try await eventually("every status kept") {
                ["LinkStatuses.net.cosi.dev", "AddressStatuses.net.cosi.dev", "RouteStatuses.net.cosi.dev"].allSatisfy { type in
                    (try? engine.list(ResourceKind(namespace: "network", type: type)))?.allSatisfy { !$0.spec.yamlSpec.contains("error:") } ?? false
                }
            }
            try await idle(runtime)
            let writes = controllers.mapValues(\.netlinkWrites)
            let passes = controllers.mapValues(\.passes)
            // Woken again and again: by events of changes that are not theirs (an address and a
            // link added by hand) and by timers; none writes.
            for round in 0..<5 {
                try netns.ip("link", "add", "x\(round)", "type", "veth", "peer", "name", "y\(round)")
                try netns.ip("addr", "add", "10.13.\(round).1/24", "dev", "h1")
                timers.fireAll()
                try await eventually("round \(round) seen") { try statusIDs(engine, "AddressStatuses.net.cosi.dev").contains("h1/10.13.\(round).1/24") }
                try await idle(runtime)
            }
            for (name, controller) in controllers {
                #expect(controller.passes > passes[name]! + 2, "\(name) was woken")
                #expect(controller.netlinkWrites == writes[name]!, "\(name) wrote nothing once all was applied")
            }
        }
    }
}

@Suite("Network namespaces")
struct NetworkNamespaceTests {
    @Test func aMissingOrWrongNamespaceFileIsAClearError() throws {
        #expect(throws: NetlinkError.self) { try NetworkNamespace(path: "/nonexistent/netns") }
        do {
            _ = try NetworkNamespace(path: "/nonexistent/netns")
        } catch {
            #expect("\(error)" == "cannot use --netns /nonexistent/netns: it does not exist")
        }
        do {
            _ = try NetworkNamespace(path: "/etc/hostname")
        } catch {
            #expect("\(error)".contains("/etc/hostname: it is not a namespace file"))
        }
        do {
            _ = try NetworkNamespace(path: "/proc/self/ns/uts")
        } catch {
            #expect("\(error)".contains("it is a namespace, but not a network namespace"))
        }
        let own = try NetworkNamespace(path: "/proc/self/ns/net")
        #expect(own.identity == NetworkNamespace.own.identity)
    }

    @Test func addressesAndPrefixesReadAndPrintInCanonicalForm() {
        #expect(IPPrefix("10.99.0.1/24")?.description == "10.99.0.1/24")
        #expect(IPPrefix("FD00:0::1/64")?.description == "fd00::1/64")
        #expect(IPPrefix("10.99.0.1/33") == nil && IPPrefix("10.99.0.1") == nil && IPPrefix("x/8") == nil && IPPrefix("10.0.0.0/+8") == nil)
        #expect(IPPrefix("10.98.0.0/16")?.isNetwork == true && IPPrefix("10.98.0.1/16")?.isNetwork == false)
        #expect(IPAddress("10.98.3.7")?.masked(12).description == "10.96.0.0")
    }
}

/// The network controller's own rules, with a setting that needs no kernel.
@Suite("Network controller")
struct NetworkControllerTests {
    /// Remembers on its first pass only, as a pass that cannot read the namespace would.
    struct ForgetfulSetting: NetworkSetting {
        let name = "forgetful"
        let namespace = "network"
        let specType = "ForgetfulSpecs.net.cosi.dev"
        let statusType = "ForgetfulStatuses.net.cosi.dev"
        var specColumns: [(String, String)] { [] }
        var statusColumns: [(String, String)] { [] }
        var specSchema: SpecSchema { SpecSchema([.text("value")]) }
        var aliases: (spec: [String], status: [String]) { ([], []) }
        var groups: NetlinkSocket.Groups { [] }
        var memoryPrefix: String { "cosi.dev/forgetful-" }
        let passes = NIOLockedValueBox(0)

        func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], netlink: Rtnetlink, leaveAlone: Set<String>) -> NetworkPass {
            let pass = passes.withLockedValue { $0 += 1; return $0 }
            let declared = Dictionary(uniqueKeysWithValues: running.map {
                ($0.id, NetworkPass.Declared(statusID: $0.id, error: pass == 1 ? nil : "cannot read the namespace", memory: pass == 1 ? ["cosi.dev/forgetful-created": "true"] : [:]))
            })
            return NetworkPass(objects: pass == 1 ? Dictionary(uniqueKeysWithValues: running.map { ($0.id, [("value", YAMLValue.scalar($0.string("value") ?? ""))]) }) : nil, declared: declared)
        }
    }

    @Test func whatASettingRemembersSurvivesAPassThatCannotTell() async throws {
        let engine = try StateEngine(storage: MemoryStorage(), logger: quietLogger("test"))
        defer { engine.shutdown() }
        let runtime = ControllerRuntime(engine: engine, logger: quietLogger("test"))
        let setting = ForgetfulSetting()
        try runtime.register(try NetworkController(setting, namespace: .own, logger: quietLogger("test"), sleep: ManualTimers().sleep))
        let support = OSControllerTests()
        let address = ResourceAddress(namespace: "network", type: setting.statusType, id: "x")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await runtime.run() }
            try await support.apply(engine, "network", setting.specType, "x", "value: one\n")
            try await eventually("remembered") { (try? engine.get(address))?.metadata.annotations["cosi.dev/forgetful-created"] == "true" }
            try await support.apply(engine, "network", setting.specType, "x", "value: two\n")
            try await eventually("the second pass reported") { (try? engine.get(address))?.spec.yamlSpec.contains("cannot read the namespace") == true }
            #expect(try engine.get(address).metadata.annotations["cosi.dev/forgetful-created"] == "true", "still remembered")
            group.cancelAll()
        }
    }

    @Test func anIPv6RouteWithMetricZeroIsComparedAsTheKernelStoresIt() {
        #expect(RouteSetting.pendingID(SettingSpec(id: "fd00:12::/48", fields: ["link": .scalar("h0"), "metric": .scalar("0")])) == "fd00:12::/48/1024/h0")
        #expect(RouteSetting.pendingID(SettingSpec(id: "10.12.0.0/16", fields: ["link": .scalar("h0"), "metric": .scalar("0")])) == "10.12.0.0/16/0/h0")
    }
}
