#if canImport(Glibc)
import Glibc
#endif
import CosiMessages
import CosiNetlink

/// `RouteSpecs.net.cosi.dev` (id = the destination in CIDR form: `10.98.0.0/16`, `0.0.0.0/0`,
/// `::/0`) {gateway, link, metric (default 1024)}, at least one of gateway and link, in the main
/// table; `RouteStatuses.net.cosi.dev` (id = `DESTINATION/METRIC/LINK`, LINK the outgoing link or
/// `-`) {destination, gateway, link, metric, protocol} for every route of the main table.
///
/// cosid marks the routes it adds (rtm_protocol ``Rtnetlink/cosiProtocol``, `cosi`) and removes
/// only those. Only what a spec declares is compared (the destination, the metric, and the gateway
/// and link when given), never the scope or other attributes the kernel fills in.
public struct RouteSetting: NetworkSetting {
    public let name = "routes"
    public let namespace = "network"
    public let specType = "RouteSpecs.net.cosi.dev"
    public let statusType = "RouteStatuses.net.cosi.dev"
    public var specColumns: [(String, String)] { [("Gateway", "{.gateway}"), ("Link", "{.link}"), ("Metric", "{.metric}")] }
    public var statusColumns: [(String, String)] {
        [("Destination", "{.destination}"), ("Gateway", "{.gateway}"), ("Link", "{.link}"), ("Metric", "{.metric}"), ("Protocol", "{.protocol}"), ("Error", "{.error}")]
    }
    public var specSchema: SpecSchema { SpecSchema([.text("gateway"), .text("link"), .integer("metric", in: 0...Int(UInt32.max))]) }
    public var aliases: (spec: [String], status: [String]) { (["routespec", "rts"], ["routestatus", "routes", "rtst"]) }
    // Links and addresses too: a route waiting for its link or a reachable gateway is added when
    // they appear, and IPv4 routes a link takes with it when it goes come with no route event.
    public var groups: NetlinkSocket.Groups { [.routes, .link, .addresses] }
    public var memoryPrefix: String { "cosi.dev/route-" }

    public static let defaultMetric: UInt32 = 1024

    public init() {}

    struct Declared {
        var destination: IPPrefix
        var gateway: IPAddress?
        var link: String?
        var metric: UInt32
    }

    static func read(_ spec: SettingSpec) throws(NetlinkError) -> Declared {
        guard let destination = IPPrefix(spec.id) else {
            throw NetlinkError(.invalidArgument, "read the id \"\(spec.id)\": a route's id is its destination in CIDR form, such as 10.98.0.0/16 or ::/0")
        }
        guard destination.isNetwork, destination.description == spec.id else {
            throw NetlinkError(.invalidArgument, "read the id \"\(spec.id)\": write the destination as \(IPPrefix(address: destination.address.masked(destination.length), length: destination.length))")
        }
        var gateway: IPAddress?
        if let text = spec.string("gateway"), !text.isEmpty {
            guard let address = IPAddress(text), address.family == destination.address.family else {
                throw NetlinkError(.invalidArgument, "use gateway \(text): an \(destination.address.family == AF_INET ? "IPv4" : "IPv6") address, as the destination is")
            }
            gateway = address
        }
        let link = spec.string("link").flatMap { $0.isEmpty ? nil : $0 }
        if let link, !isLinkName(link) { throw NetlinkError(.invalidArgument, "use link \(link): not a link name") }
        guard gateway != nil || link != nil else { throw NetlinkError(.invalidArgument, "add the route \(spec.id): give a gateway, a link or both") }
        guard var metric = UInt32(spec.string("metric") ?? String(defaultMetric)) else {
            throw NetlinkError(.invalidArgument, "use metric \(spec.string("metric") ?? ""): a number from 0 to \(UInt32.max)")
        }
        // The kernel stores an IPv6 route's metric 0 as 1024 (IP6_RT_PRIO_USER): compared so.
        if metric == 0, destination.address.family == AF_INET6 { metric = 1024 }
        return Declared(destination: destination, gateway: gateway, link: link, metric: metric)
    }

    static func id(_ route: NetworkRoute, names: [Int32: String]) -> String {
        "\(route.destination)/\(route.metric)/\(route.link == 0 ? "-" : names[route.link] ?? String(route.link))"
    }

    static func describe(_ route: NetworkRoute, names: [Int32: String]) -> String {
        var text = route.destination.description
        if let gateway = route.gateway { text += " via \(gateway)" }
        if route.link != 0 { text += " dev \(names[route.link] ?? String(route.link))" }
        return text + " metric \(route.metric) proto \(NetworkRoute.protocolName(route.proto))"
    }

    /// Whether a kernel route is what `declared` says: only the declared fields are compared.
    static func matches(_ route: NetworkRoute, _ declared: Declared, linkIndex: Int32?) -> Bool {
        guard route.destination == declared.destination, route.metric == declared.metric else { return false }
        if let gateway = declared.gateway, route.gateway != gateway { return false }
        if let linkIndex, route.link != linkIndex { return false }
        return true
    }

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], netlink: Rtnetlink, leaveAlone: Set<String>) -> NetworkPass {
        let links: [NetworkLink]
        var routes: [NetworkRoute]
        do {
            links = try netlink.links()
            routes = try netlink.routes()
        } catch {
            return .unreadable(running, error, statusID: Self.pendingID)
        }
        let index = Dictionary(links.map { ($0.name, $0.index) }) { first, _ in first }
        let names = Dictionary(links.map { ($0.index, $0.name) }) { first, _ in first }
        var changed = false
        var holding: [String: NetworkPass.Declared] = [:]
        var declaredRoutes: [(SettingSpec, Declared)] = []
        var declared: [String: NetworkPass.Declared] = [:]
        for spec in running {
            do throws(NetlinkError) { declaredRoutes.append((spec, try Self.read(spec))) } catch {
                declared[spec.id] = NetworkPass.Declared(statusID: Self.pendingID(spec), error: "\(error)")
            }
        }

        // cosid's own routes that no running spec declares as they are: a released spec's, or one
        // whose spec now says another metric. Others' routes are never removed.
        let keptDestinations = Dictionary(declaredRoutes.map { ($0.1.destination, $0.1.metric) }) { first, _ in first }
        let leftAloneDestinations = Set(declaredRoutes.filter { leaveAlone.contains($0.0.id) }.map(\.1.destination))
        let releasedDestinations = Set(releasing.compactMap { IPPrefix($0.id) })
        for route in routes where route.proto == Rtnetlink.cosiProtocol {
            let kept = keptDestinations[route.destination]
            guard releasedDestinations.contains(route.destination) || (kept != nil && kept != route.metric && !leftAloneDestinations.contains(route.destination)) else { continue }
            do throws(NetlinkError) {
                try netlink.deleteRoute(route, describe: Self.describe(route, names: names))
                changed = true
            } catch where error.errno == ESRCH {
                changed = true
            } catch {
                if let spec = releasing.first(where: { IPPrefix($0.id) == route.destination }) {
                    holding[spec.id] = NetworkPass.Declared(statusID: Self.id(route, names: names), error: "\(error)")
                }
            }
        }

        // By destination: a namespace may hold 100,000 routes and as many specs.
        let byDestination = Dictionary(grouping: routes, by: \.destination)
        for (spec, route) in declaredRoutes {
            var linkIndex: Int32?
            if let link = route.link {
                guard let found = index[link] else {
                    declared[spec.id] = NetworkPass.Declared(statusID: Self.pendingID(spec), error: "cannot add the route \(spec.id): no link named \(link) in the namespace")
                    continue
                }
                linkIndex = found
            }
            let sameDestination = byDestination[route.destination] ?? []
            if let present = sameDestination.first(where: { Self.matches($0, route, linkIndex: linkIndex) }) {
                declared[spec.id] = NetworkPass.Declared(statusID: Self.id(present, names: names))
                continue
            }
            // A route with the same destination and metric is in the way: cosid's own is
            // replaced, unless another's has them too (a replace could take that one); another's
            // is left and reported.
            let others = sameDestination.filter { $0.metric == route.metric && $0.proto != Rtnetlink.cosiProtocol }
            let inTheWay = others.first ?? sameDestination.first { $0.metric == route.metric }
            if let inTheWay, inTheWay.proto != Rtnetlink.cosiProtocol {
                declared[spec.id] = NetworkPass.Declared(
                    statusID: Self.pendingID(spec),
                    error: "cannot add the route \(spec.id): a route cosid did not add has the same destination and metric (\(Self.describe(inTheWay, names: names))); cosid leaves it"
                )
                continue
            }
            guard !leaveAlone.contains(spec.id) else {
                declared[spec.id] = NetworkPass.Declared(statusID: Self.pendingID(spec))
                continue
            }
            let wanted = NetworkRoute.cosi(destination: route.destination, gateway: route.gateway, link: linkIndex ?? 0, metric: route.metric)
            do throws(NetlinkError) {
                try netlink.addRoute(wanted, replace: inTheWay != nil, describe: Self.describe(wanted, names: names))
                changed = true
                declared[spec.id] = NetworkPass.Declared(statusID: Self.pendingID(spec), replaced: inTheWay.map { Self.describe($0, names: names) } ?? "(no route)")
            } catch {
                declared[spec.id] = NetworkPass.Declared(statusID: Self.pendingID(spec), error: "\(error)")
            }
        }
        if changed {
            do { routes = try netlink.routes() } catch { return .unreadable(running, error, statusID: Self.pendingID) }
            let byDestination = Dictionary(grouping: routes, by: \.destination)
            // The status of a route just added: the kernel's (its outgoing link filled in).
            for (spec, route) in declaredRoutes {
                guard var report = declared[spec.id], report.error == nil else { continue }
                let linkIndex = route.link.flatMap { index[$0] }
                if let present = byDestination[route.destination]?.first(where: { Self.matches($0, route, linkIndex: linkIndex) }) {
                    report.statusID = Self.id(present, names: names)
                    declared[spec.id] = report
                }
            }
        }
        var objects: [String: [(String, YAMLValue)]] = [:]
        for route in routes {
            let id = Self.id(route, names: names)
            guard objects[id] == nil else { continue }
            objects[id] = [
                ("destination", .scalar(route.destination.description)), ("gateway", .scalar(route.gateway?.description ?? "")),
                ("link", .scalar(route.link == 0 ? "" : names[route.link] ?? String(route.link))), ("metric", .integer(Int(route.metric))),
                ("protocol", .scalar(NetworkRoute.protocolName(route.proto))),
            ]
        }
        return NetworkPass(objects: objects, declared: declared, holding: holding)
    }

    /// The status id of a declared route not in the kernel: what its spec names (the metric as
    /// the kernel would store it).
    public static func pendingID(_ spec: SettingSpec) -> String {
        let metric = (try? read(spec)).map { String($0.metric) } ?? spec.string("metric") ?? String(defaultMetric)
        return "\(spec.id)/\(metric)/\(spec.string("link").flatMap { $0.isEmpty ? nil : $0 } ?? "-")"
    }
}
