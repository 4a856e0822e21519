#if canImport(Glibc)
import Glibc
#endif
import CMnl

/// A network link as rtnetlink reports it (RTM_NEWLINK).
public struct NetworkLink: Sendable, Equatable {
    public var index: Int32
    public var name: String
    /// IFLA_INFO_KIND (`veth`, `bridge`), or `loopback`/`ether`/`device` for links without one.
    public var kind: String
    /// Administratively up (IFF_UP).
    public var up: Bool
    /// The operational state as ip(8) prints it: `UP`, `DOWN`, `LOWERLAYERDOWN`, `UNKNOWN`...
    public var operState: String
    public var mtu: UInt32
    /// `aa:bb:cc:dd:ee:ff`, empty when the link has none.
    public var hardwareAddress: String
    /// The index of the bridge (or other master) it is enslaved to, 0 for none.
    public var master: Int32
}

/// An address on a link (RTM_NEWADDR).
public struct NetworkAddress: Sendable, Equatable {
    public var link: Int32
    public var prefix: IPPrefix
    /// RT_SCOPE_*: 0 global, 253 link, 254 host.
    public var scope: UInt8

    /// ip(8)'s name of a scope.
    public static func scopeName(_ scope: UInt8) -> String {
        switch Int32(scope) {
        case Int32(RT_SCOPE_UNIVERSE.rawValue): "global"
        case Int32(RT_SCOPE_SITE.rawValue): "site"
        case Int32(RT_SCOPE_LINK.rawValue): "link"
        case Int32(RT_SCOPE_HOST.rawValue): "host"
        case Int32(RT_SCOPE_NOWHERE.rawValue): "nowhere"
        default: String(scope)
        }
    }
}

/// A route of the main table (RTM_NEWROUTE).
public struct NetworkRoute: Sendable, Equatable {
    public var destination: IPPrefix
    public var gateway: IPAddress?
    /// The outgoing link's index, 0 for none.
    public var link: Int32
    public var metric: UInt32
    /// rtm_protocol: who added it (2 kernel, 3 boot, 4 static, ``Rtnetlink/cosiProtocol``).
    public var proto: UInt8
    public var scope: UInt8
    /// rtm_type: RTN_UNICAST, RTN_BLACKHOLE...
    public var type: UInt8

    public init(destination: IPPrefix, gateway: IPAddress?, link: Int32, metric: UInt32, proto: UInt8, scope: UInt8, type: UInt8) {
        self.destination = destination
        self.gateway = gateway
        self.link = link
        self.metric = metric
        self.proto = proto
        self.scope = scope
        self.type = type
    }

    /// A unicast route of cosid's own (marked with ``Rtnetlink/cosiProtocol``), scoped as ip(8)
    /// does: link scope for an IPv4 route with no gateway, universe otherwise.
    public static func cosi(destination: IPPrefix, gateway: IPAddress?, link: Int32, metric: UInt32) -> NetworkRoute {
        let scope = destination.address.family == AF_INET6 || gateway != nil ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK
        return NetworkRoute(destination: destination, gateway: gateway, link: link, metric: metric, proto: Rtnetlink.cosiProtocol, scope: UInt8(scope.rawValue), type: UInt8(RTN_UNICAST))
    }

    /// ip(8)'s name of a protocol (`/etc/iproute2/rt_protos`), `cosi` for cosid's own.
    public static func protocolName(_ proto: UInt8) -> String {
        switch proto {
        case Rtnetlink.cosiProtocol: "cosi"
        case 0: "unspec"
        case 1: "redirect"
        case 2: "kernel"
        case 3: "boot"
        case 4: "static"
        case 9: "ra"
        case 16: "dhcp"
        default: String(proto)
        }
    }
}

/// rtnetlink's link, address and route requests on one request socket: dumps that read the
/// namespace and the few changes the network controllers make. Every change counts in
/// ``writes``.
public struct Rtnetlink: Sendable {
    /// The rtm_protocol cosid marks its routes with (so it removes only what it added).
    public static let cosiProtocol: UInt8 = 152
    /// The main routing table.
    public static let mainTable: UInt32 = UInt32(RT_TABLE_MAIN.rawValue)

    public let socket: NetlinkSocket

    public init(in namespace: NetworkNamespace) throws(NetlinkError) {
        socket = try NetlinkSocket(in: namespace)
    }

    /// Requests that changed the kernel.
    public var writes: Int { socket.writes }

    // MARK: Reading

    public func links() throws(NetlinkError) -> [NetworkLink] {
        var links: [NetworkLink] = []
        try socket.dump(Int32(RTM_GETLINK), "list the links") { header in
            NetlinkSocket.put(header, ifinfomsg(ifi_family: UInt8(AF_UNSPEC), __ifi_pad: 0, ifi_type: 0, ifi_index: 0, ifi_flags: 0, ifi_change: 0))
        } restart: {
            links = []
        } each: { header in
            guard Int32(NetlinkSocket.fields(header).nlmsg_type) == Int32(RTM_NEWLINK), let info = NetlinkSocket.payload(header, as: ifinfomsg.self) else { return }
            var link = NetworkLink(
                index: info.ifi_index, name: "", kind: Self.kind(arpType: info.ifi_type), up: info.ifi_flags & UInt32(IFF_UP) != 0,
                operState: "UNKNOWN", mtu: 0, hardwareAddress: "", master: 0
            )
            Attributes.each(header, offset: MemoryLayout<ifinfomsg>.size) { attribute in
                switch Int32(mnl_attr_get_type(attribute)) {
                case Int32(IFLA_IFNAME): link.name = Attributes.string(attribute)
                case Int32(IFLA_MTU): link.mtu = Attributes.u32(attribute) ?? 0
                case Int32(IFLA_MASTER): link.master = Int32(bitPattern: Attributes.u32(attribute) ?? 0)
                case Int32(IFLA_OPERSTATE): link.operState = Self.operState(Attributes.u8(attribute) ?? 0)
                case Int32(IFLA_ADDRESS):
                    link.hardwareAddress = Attributes.bytes(attribute).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
                case Int32(IFLA_LINKINFO):
                    Attributes.nested(attribute) { inner in
                        if Int32(mnl_attr_get_type(inner)) == Int32(IFLA_INFO_KIND) { link.kind = Attributes.string(inner) }
                    }
                default: break
                }
            }
            guard !link.name.isEmpty else { return }
            links.append(link)
        }
        return links
    }

    public func addresses() throws(NetlinkError) -> [NetworkAddress] {
        var addresses: [NetworkAddress] = []
        try socket.dump(Int32(RTM_GETADDR), "list the addresses") { header in
            NetlinkSocket.put(header, ifaddrmsg(ifa_family: UInt8(AF_UNSPEC), ifa_prefixlen: 0, ifa_flags: 0, ifa_scope: 0, ifa_index: 0))
        } restart: {
            addresses = []
        } each: { header in
            guard Int32(NetlinkSocket.fields(header).nlmsg_type) == Int32(RTM_NEWADDR), let info = NetlinkSocket.payload(header, as: ifaddrmsg.self) else { return }
            let family = Int32(info.ifa_family)
            guard family == AF_INET || family == AF_INET6 else { return }
            var local: [UInt8]?
            var address: [UInt8]?
            Attributes.each(header, offset: MemoryLayout<ifaddrmsg>.size) { attribute in
                switch Int32(mnl_attr_get_type(attribute)) {
                case Int32(IFA_LOCAL): local = Attributes.bytes(attribute)
                case Int32(IFA_ADDRESS): address = Attributes.bytes(attribute)
                default: break
                }
            }
            // IPv4's own address is IFA_LOCAL (IFA_ADDRESS is the peer on a point-to-point link).
            guard let bytes = local ?? address, bytes.count == (family == AF_INET ? 4 : 16), Int(info.ifa_prefixlen) <= bytes.count * 8 else { return }
            addresses.append(NetworkAddress(link: Int32(bitPattern: info.ifa_index), prefix: IPPrefix(address: IPAddress(family: family, bytes: bytes), length: Int(info.ifa_prefixlen)), scope: info.ifa_scope))
        }
        return addresses
    }

    /// The routes of the main table, IPv4 and IPv6.
    public func routes() throws(NetlinkError) -> [NetworkRoute] {
        var routes: [NetworkRoute] = []
        try socket.dump(Int32(RTM_GETROUTE), "list the routes") { header in
            NetlinkSocket.put(header, rtmsg(rtm_family: UInt8(AF_UNSPEC), rtm_dst_len: 0, rtm_src_len: 0, rtm_tos: 0, rtm_table: 0, rtm_protocol: 0, rtm_scope: 0, rtm_type: 0, rtm_flags: 0))
        } restart: {
            routes = []
        } each: { header in
            guard Int32(NetlinkSocket.fields(header).nlmsg_type) == Int32(RTM_NEWROUTE), let info = NetlinkSocket.payload(header, as: rtmsg.self) else { return }
            let family = Int32(info.rtm_family)
            let size = family == AF_INET ? 4 : 16
            guard family == AF_INET || family == AF_INET6, info.rtm_flags & UInt32(RTM_F_CLONED) == 0, Int(info.rtm_dst_len) <= size * 8 else { return }
            var malformed = false
            var table = UInt32(info.rtm_table)
            var destination = IPAddress.zero(family)
            var route = NetworkRoute(destination: IPPrefix(address: destination, length: 0), gateway: nil, link: 0, metric: 0, proto: info.rtm_protocol, scope: info.rtm_scope, type: info.rtm_type)
            Attributes.each(header, offset: MemoryLayout<rtmsg>.size) { attribute in
                switch Int32(mnl_attr_get_type(attribute)) {
                case Int32(RTA_TABLE.rawValue): table = Attributes.u32(attribute) ?? table
                case Int32(RTA_DST.rawValue):
                    let bytes = Attributes.bytes(attribute)
                    if bytes.count == size { destination = IPAddress(family: family, bytes: bytes) } else { malformed = true }
                case Int32(RTA_GATEWAY.rawValue):
                    // An IPv4 route may have an IPv6 gateway (RTA_VIA is that); RTA_GATEWAY is the family's.
                    let bytes = Attributes.bytes(attribute)
                    if bytes.count == size { route.gateway = IPAddress(family: family, bytes: bytes) }
                case Int32(RTA_OIF.rawValue): route.link = Int32(bitPattern: Attributes.u32(attribute) ?? 0)
                case Int32(RTA_PRIORITY.rawValue): route.metric = Attributes.u32(attribute) ?? 0
                default: break
                }
            }
            guard table == Self.mainTable, !malformed else { return }
            route.destination = IPPrefix(address: destination, length: Int(info.rtm_dst_len))
            routes.append(route)
        }
        return routes
    }

    // MARK: Links

    /// Sets a link's administrative state, MTU and master; nil leaves one as it is (master 0:
    /// released from its bridge).
    public func setLink(_ index: Int32, name: String, up: Bool? = nil, mtu: UInt32? = nil, master: Int32? = nil) throws(NetlinkError) {
        try socket.change(Int32(RTM_NEWLINK), flags: 0, "change the link \(name)") { header in
            NetlinkSocket.put(header, ifinfomsg(
                ifi_family: UInt8(AF_UNSPEC), __ifi_pad: 0, ifi_type: 0, ifi_index: index, ifi_flags: up == true ? UInt32(IFF_UP) : 0, ifi_change: up == nil ? 0 : UInt32(IFF_UP)
            ))
            if let mtu { mnl_attr_put_u32(header, UInt16(IFLA_MTU), mtu) }
            if let master { mnl_attr_put_u32(header, UInt16(IFLA_MASTER), UInt32(bitPattern: master)) }
        }
    }

    /// Creates a bridge, or a veth pair when `peer` is given (`kind` "bridge" or "veth"), down.
    public func addLink(_ name: String, kind: String, peer: String? = nil) throws(NetlinkError) {
        try socket.change(Int32(RTM_NEWLINK), flags: NLM_F_CREATE | NLM_F_EXCL, "create the \(kind) \(name)\(peer.map { " (peer \($0))" } ?? "")") { header in
            NetlinkSocket.put(header, ifinfomsg(ifi_family: UInt8(AF_UNSPEC), __ifi_pad: 0, ifi_type: 0, ifi_index: 0, ifi_flags: 0, ifi_change: 0))
            mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), name)
            let linkInfo = mnl_attr_nest_start(header, UInt16(IFLA_LINKINFO))
            mnl_attr_put_strz(header, UInt16(IFLA_INFO_KIND), kind)
            if let peer {
                let data = mnl_attr_nest_start(header, UInt16(IFLA_INFO_DATA))
                let peerInfo = mnl_attr_nest_start(header, UInt16(VETH_INFO_PEER))
                // The peer's own ifinfomsg, then its attributes.
                NetlinkSocket.put(header, ifinfomsg(ifi_family: UInt8(AF_UNSPEC), __ifi_pad: 0, ifi_type: 0, ifi_index: 0, ifi_flags: 0, ifi_change: 0))
                mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), peer)
                mnl_attr_nest_end(header, peerInfo)
                mnl_attr_nest_end(header, data)
            }
            mnl_attr_nest_end(header, linkInfo)
        }
    }

    public func deleteLink(_ index: Int32, name: String) throws(NetlinkError) {
        try socket.change(Int32(RTM_DELLINK), flags: 0, "delete the link \(name)") { header in
            NetlinkSocket.put(header, ifinfomsg(ifi_family: UInt8(AF_UNSPEC), __ifi_pad: 0, ifi_type: 0, ifi_index: index, ifi_flags: 0, ifi_change: 0))
        }
    }

    // MARK: Addresses

    public func addAddress(_ prefix: IPPrefix, link: Int32, linkName: String) throws(NetlinkError) {
        try address(Int32(RTM_NEWADDR), flags: NLM_F_CREATE | NLM_F_EXCL, prefix, link: link, "add the address \(prefix) to \(linkName)")
    }

    public func deleteAddress(_ prefix: IPPrefix, link: Int32, linkName: String) throws(NetlinkError) {
        try address(Int32(RTM_DELADDR), flags: 0, prefix, link: link, "remove the address \(prefix) from \(linkName)")
    }

    private func address(_ type: Int32, flags: Int32, _ prefix: IPPrefix, link: Int32, _ operation: String) throws(NetlinkError) {
        try socket.change(type, flags: flags, operation) { header in
            // ip(8)'s default scope: host for loopback addresses, global for the rest.
            let loopback = prefix.address.family == AF_INET ? prefix.address.bytes.first == 127 : prefix.address == IPAddress("::1")
            NetlinkSocket.put(header, ifaddrmsg(
                ifa_family: UInt8(prefix.address.family), ifa_prefixlen: UInt8(clamping: prefix.length), ifa_flags: 0,
                ifa_scope: UInt8(loopback ? RT_SCOPE_HOST.rawValue : RT_SCOPE_UNIVERSE.rawValue), ifa_index: UInt32(bitPattern: link)
            ))
            prefix.address.bytes.withUnsafeBytes { bytes in
                mnl_attr_put(header, UInt16(IFA_LOCAL), bytes.count, bytes.baseAddress)
                mnl_attr_put(header, UInt16(IFA_ADDRESS), bytes.count, bytes.baseAddress)
            }
        }
    }

    // MARK: Routes

    /// Adds a route of the main table marked as cosid's; `replace` replaces one with the same
    /// destination and metric (cosid's own, whose gateway or link changed).
    public func addRoute(_ route: NetworkRoute, replace: Bool, describe: String) throws(NetlinkError) {
        try self.route(Int32(RTM_NEWROUTE), flags: NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL), route, "add the route \(describe)")
    }

    public func deleteRoute(_ route: NetworkRoute, describe: String) throws(NetlinkError) {
        try self.route(Int32(RTM_DELROUTE), flags: 0, route, "remove the route \(describe)")
    }

    private func route(_ type: Int32, flags: Int32, _ route: NetworkRoute, _ operation: String) throws(NetlinkError) {
        try socket.change(type, flags: flags, operation) { header in
            NetlinkSocket.put(header, rtmsg(
                rtm_family: UInt8(route.destination.address.family), rtm_dst_len: UInt8(clamping: route.destination.length), rtm_src_len: 0, rtm_tos: 0,
                rtm_table: UInt8(RT_TABLE_MAIN.rawValue), rtm_protocol: route.proto, rtm_scope: route.scope, rtm_type: route.type, rtm_flags: 0
            ))
            if route.destination.length > 0 {
                route.destination.address.bytes.withUnsafeBytes { mnl_attr_put(header, UInt16(RTA_DST.rawValue), $0.count, $0.baseAddress) }
            }
            if let gateway = route.gateway {
                gateway.bytes.withUnsafeBytes { mnl_attr_put(header, UInt16(RTA_GATEWAY.rawValue), $0.count, $0.baseAddress) }
            }
            if route.link != 0 { mnl_attr_put_u32(header, UInt16(RTA_OIF.rawValue), UInt32(bitPattern: route.link)) }
            mnl_attr_put_u32(header, UInt16(RTA_PRIORITY.rawValue), route.metric)
        }
    }

    // MARK: Names

    static func operState(_ value: UInt8) -> String {
        ["UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP"].indices.contains(Int(value))
            ? ["UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP"][Int(value)] : "UNKNOWN"
    }

    static func kind(arpType: UInt16) -> String {
        switch Int32(arpType) {
        case ARPHRD_LOOPBACK: "loopback"
        case ARPHRD_ETHER: "ether"
        default: "device"
        }
    }
}
