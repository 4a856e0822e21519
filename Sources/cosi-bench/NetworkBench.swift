#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CosiClient
import CosiMessages
import CosiNetlink
import CosiOSControllers
import CosiRPC
import CosiServer
import CosiState
import CosiTLS
import Foundation
import Histogram
import Logging

/// `cosi-bench network --netns PATH` (as root; `scripts/bench-network` makes and deletes the
/// namespace): the network controllers as `cosid --netns` runs them (a cosid server in this
/// process, SQLite with `--sync full`, clients over mutual TLS on 127.0.0.1), acting in that
/// namespace. The bench itself acts there only through netlink, as the daemon does: it makes a
/// veth pair `h0`/`h1` and sets it up.
///
/// - `--addresses` address specs applied at once (64 in flight): the time until every address is
///   in the kernel and every status reports it.
/// - `--drifts` addresses removed by hand (a netlink request of the bench's own), each timed until
///   the kernel has it again (seen through the bench's own address-event socket).
/// - `--routes` routes added by someone else, one request each as `ip -batch` makes them
///   (`route add 172.16.x.y/32 dev h0`: protocol boot, link scope): the time until RouteStatuses
///   hold every route of the main table, the process's resident memory growth, and its CPU while
///   idle afterwards over `--idle-seconds`.
struct NetworkBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network",
        abstract: "Network controllers in a given namespace (root; scripts/bench-network makes one): addresses at once, restoration latency, 100,000 routes reflected."
    )

    @Option(help: "The network namespace to act in, made for the bench (ip netns add NAME: /run/netns/NAME); it must hold no link named h0 or h1.") var netns: String
    @Option(help: "Address specs applied at once.") var addresses = 1000
    @Option(help: "Addresses removed by hand, each timed until it is back.") var drifts = 200
    @Option(help: "Routes added by someone else, to be reflected in RouteStatuses (0 to skip).") var routes = 100_000
    @Option(help: "Seconds to measure idle CPU after the routes.") var idleSeconds = 30

    func run() async throws {
        guard getuid() == 0 else { throw ValidationError("network acts in a network namespace: run it as root (scripts/bench-network makes one)") }
        let namespace = try NetworkNamespace(path: netns)
        guard !namespace.isHosts else { throw ValidationError("--netns \(netns) is this machine's network namespace: give one made for the bench (ip netns add NAME)") }
        for line in try await Self.measure(namespace, addresses: addresses, drifts: drifts, routes: routes, idleSeconds: idleSeconds) { print(line) }
    }

    static func address(_ index: Int) -> IPPrefix {
        IPPrefix(address: IPAddress("10.200.\(index / 250).\(index % 250 + 1)")!, length: 16)
    }

    static func measure(_ namespace: NetworkNamespace, addresses: Int, drifts: Int, routes: Int, idleSeconds: Int) async throws -> [String] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cosi-bench-net-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (certificates, tls) = try OSControllersBench.developmentTLS(dir)
        let (engine, server, logger) = try await OSControllersBench.benchServer(dir, tls: tls, defining: BuiltInControllers.network)
        for setting in BuiltInControllers.network {
            // Corrections in a row are what is timed: the flapping guard is off.
            try server.controllers.register(NetworkController(setting, namespace: namespace, logger: logger, ledger: DriftLedger(flips: .max)))
        }
        let netlink = try Rtnetlink(in: namespace)
        let events = try NetlinkSocket(in: namespace, groups: .addresses)
        try netlink.addLink("h0", kind: "veth", peer: "h1")
        for link in try netlink.links() { try netlink.setLink(link.index, name: link.name, up: true) }
        guard let h0 = try netlink.links().first(where: { $0.name == "h0" })?.index else { throw ValidationError("no link h0 after making it") }

        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let port = try await server.rpc.listeningAddress.port!
            var configuration = CosiClientConfiguration.development(directory: certificates.directory, port: port)
            configuration.defaultTimeout = nil
            let lines = try await withCosiClient(configuration) { client in
                var lines: [String] = []
                let clock = ContinuousClock()
                let statusKind = ResourceKind(namespace: "network", type: "AddressStatuses.net.cosi.dev")

                // Addresses at once.
                let start = clock.now
                try await OSControllersBench.inParallel(addresses) { index in
                    _ = try await client.create(Resource(
                        metadata: Metadata(namespace: "network", type: "AddressSpecs.net.cosi.dev", id: "h0/\(address(index))"), spec: Spec(yamlSpec: "{}\n")
                    ))
                }
                let written = clock.now - start
                let wanted = Set((0..<addresses).map { address($0) })
                try await OSControllersBench.until(timeout: .seconds(300)) { try wanted.isSubset(of: Set(netlink.addresses().map(\.prefix))) }
                let inKernel = clock.now - start
                try await OSControllersBench.until(timeout: .seconds(300)) {
                    try engine.list(statusKind).filter { $0.spec.yamlSpec.contains("family: inet\n") && $0.metadata.annotations[MachineController.specVersionAnnotation] != nil }.count == addresses
                }
                let reported = clock.now - start
                lines.append(String(
                    format: "network: %d address specs applied at once (64 in flight): written in %.2f s, all in the kernel in %.2f s, all reported in AddressStatuses in %.2f s",
                    addresses, OSControllersBench.seconds(written), OSControllersBench.seconds(inKernel), OSControllersBench.seconds(reported)
                ))

                // Removed by hand, timed until back.
                if drifts > 0 {
                    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000)
                    for index in 0..<drifts {
                        let prefix = address(index % addresses)
                        _ = events.drain()
                        let begin = clock.now
                        try netlink.deleteAddress(prefix, link: h0, linkName: "h0")
                        let end = begin + .seconds(30)
                        while true {
                            var descriptor = pollfd(fd: events.descriptor, events: Int16(POLLIN), revents: 0)
                            _ = poll(&descriptor, 1, 100)
                            _ = events.drain()
                            if try netlink.addresses().contains(where: { $0.prefix == prefix }) { break }
                            guard clock.now < end else { throw ValidationError("\(prefix) not put back within 30 s") }
                        }
                        _ = histogram.record(microseconds(clock.now - begin))
                        // The controller's pass settles (its status write) before the next removal.
                        try await Task.sleep(for: .milliseconds(20))
                    }
                    lines.append(String(
                        format: "network drift, an address removed by hand (%d times, %d addresses declared): back in the kernel in p50 %.2f ms, p99 %.2f ms, max %.2f ms",
                        drifts, addresses, Double(histogram.valueAtPercentile(50)) / 1000, Double(histogram.valueAtPercentile(99)) / 1000, Double(histogram.max) / 1000
                    ))
                }

                // Routes added by someone else, reflected.
                if routes > 0 {
                    let routeKind = ResourceKind(namespace: "network", type: "RouteStatuses.net.cosi.dev")
                    try await Task.sleep(for: .seconds(1))
                    let before = OSControllersBench.residentBytes()
                    let begin = clock.now
                    // As `ip -batch` adds them: one request each, acknowledged, marked boot
                    // (rtm_protocol 3, what `ip route add` sets), link scope (253), unicast (1).
                    for i in 0..<routes {
                        let destination = IPPrefix(address: IPAddress("172.\(16 + i / 65536).\((i / 256) % 256).\(i % 256)")!, length: 32)
                        try netlink.addRoute(NetworkRoute(destination: destination, gateway: nil, link: h0, metric: 0, proto: 3, scope: 253, type: 1), replace: false, describe: "\(destination) dev h0")
                    }
                    let added = clock.now - begin
                    let total = try netlink.routes().count
                    try await OSControllersBench.until(timeout: .seconds(600)) { try engine.list(routeKind).count == total }
                    let reflected = clock.now - begin
                    try await Task.sleep(for: .seconds(2))
                    let after = OSControllersBench.residentBytes()
                    let cpu0 = cpuSeconds()
                    let idleStart = clock.now
                    try await Task.sleep(for: .seconds(idleSeconds))
                    let cpu = cpuSeconds() - cpu0
                    let elapsed = OSControllersBench.seconds(clock.now - idleStart)
                    lines.append(String(
                        format: "network: %d routes added by someone else (one netlink request each, as ip -batch; %.2f s): all %d main-table routes in RouteStatuses %.2f s after the batch began; resident memory +%.0f MiB; CPU %.2f%% of one core while idle over %d s",
                        routes, OSControllersBench.seconds(added), total, OSControllersBench.seconds(reflected), Double(after - before) / 1048576, 100 * cpu / elapsed, idleSeconds
                    ))
                }
                return lines
            }
            group.cancelAll()
            server.rpc.beginGracefulShutdown()
            try? await group.waitForAll()
            return lines
        }
    }
}
