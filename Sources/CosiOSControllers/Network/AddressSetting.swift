#if canImport(Glibc)
import Glibc
#endif
import CosiMessages
import CosiNetlink

/// `AddressSpecs.net.cosi.dev` (id = `LINK/ADDRESS/PREFIX`, e.g. `veth0/10.99.0.1/24` or
/// `veth0/fd00:99::1/64`) {link, address (CIDR)}, both optional and matching the id when given;
/// `AddressStatuses.net.cosi.dev` (same id form) {link, address, family, scope} for every
/// address of the namespace. An address cosid added is removed when its spec goes; one that was
/// there before its spec stays.
public struct AddressSetting: NetworkSetting {
    public let name = "addresses"
    public let namespace = "network"
    public let specType = "AddressSpecs.net.cosi.dev"
    public let statusType = "AddressStatuses.net.cosi.dev"
    public var specColumns: [(String, String)] { [("Link", "{.link}"), ("Address", "{.address}")] }
    public var statusColumns: [(String, String)] { [("Link", "{.link}"), ("Address", "{.address}"), ("Family", "{.family}"), ("Scope", "{.scope}"), ("Error", "{.error}")] }
    public var specSchema: SpecSchema { SpecSchema([.text("link"), .text("address")]) }
    public var aliases: (spec: [String], status: [String]) { (["addressspec", "ads"], ["addressstatus", "addresses", "adst"]) }
    // Link events too: an address waiting for its link is added when the link appears.
    public var groups: NetlinkSocket.Groups { [.addresses, .link] }
    public var memoryPrefix: String { "cosi.dev/address-" }

    public init() {}

    /// Whether the address was on its link before its spec (then it stays when the spec goes).
    static let existed = "cosi.dev/address-existed"

    /// The link and the address of a spec, from its id (and its fields, which must agree).
    static func read(_ spec: SettingSpec) throws(NetlinkError) -> (link: String, prefix: IPPrefix) {
        guard let slash = spec.id.firstIndex(of: "/"), let prefix = IPPrefix(String(spec.id[spec.id.index(after: slash)...])) else {
            throw NetlinkError(.invalidArgument, "read the id \"\(spec.id)\": an address's id is LINK/ADDRESS/PREFIX, such as veth0/10.99.0.1/24")
        }
        let link = String(spec.id[..<slash])
        guard isLinkName(link) else { throw NetlinkError(.invalidArgument, "read the id \"\(spec.id)\": \"\(link)\" is not a link name") }
        let canonical = "\(link)/\(prefix)"
        guard canonical == spec.id else { throw NetlinkError(.invalidArgument, "read the id \"\(spec.id)\": write it as \(canonical), as the statuses do") }
        if let given = spec.string("link"), given != link { throw NetlinkError(.invalidArgument, "use link \(given): the id says \(link)") }
        if let given = spec.string("address"), IPPrefix(given) != prefix { throw NetlinkError(.invalidArgument, "use address \(given): the id says \(prefix)") }
        return (link, prefix)
    }

    static func id(_ address: NetworkAddress, names: [Int32: String]) -> String {
        "\(names[address.link] ?? String(address.link))/\(address.prefix)"
    }

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], netlink: Rtnetlink, leaveAlone: Set<String>) -> NetworkPass {
        let links: [NetworkLink]
        var addresses: [NetworkAddress]
        do {
            links = try netlink.links()
            addresses = try netlink.addresses()
        } catch {
            return .unreadable(running, error, statusID: { $0.id })
        }
        let index = Dictionary(links.map { ($0.name, $0.index) }) { first, _ in first }
        let names = Dictionary(links.map { ($0.index, $0.name) }) { first, _ in first }
        let present = Set(addresses.map { Self.id($0, names: names) })
        var changed = false
        var holding: [String: NetworkPass.Declared] = [:]

        for spec in releasing {
            let memory = (statuses[spec.id]?.metadata.annotations ?? [:]).filter { $0.key == Self.existed }
            guard present.contains(spec.id), memory[Self.existed] != "true", let (link, prefix) = try? Self.read(spec), let linkIndex = index[link] else { continue }
            do throws(NetlinkError) {
                try netlink.deleteAddress(prefix, link: linkIndex, linkName: link)
                changed = true
            } catch where error.errno == EADDRNOTAVAIL {
                changed = true
            } catch {
                holding[spec.id] = NetworkPass.Declared(statusID: spec.id, error: "\(error)", memory: memory)
            }
        }

        var declared: [String: NetworkPass.Declared] = [:]
        for spec in running {
            var memory = (statuses[spec.id]?.metadata.annotations ?? [:]).filter { $0.key == Self.existed }
            do throws(NetlinkError) {
                let (link, prefix) = try Self.read(spec)
                guard let linkIndex = index[link] else {
                    throw NetlinkError(.refused, "add the address \(prefix) to \(link): no link named \(link) in the namespace")
                }
                if memory[Self.existed] == nil { memory[Self.existed] = String(present.contains(spec.id)) }
                guard !present.contains(spec.id) else {
                    declared[spec.id] = NetworkPass.Declared(statusID: spec.id, memory: memory)
                    continue
                }
                guard !leaveAlone.contains(spec.id) else {
                    declared[spec.id] = NetworkPass.Declared(statusID: spec.id, memory: memory)
                    continue
                }
                try netlink.addAddress(prefix, link: linkIndex, linkName: link)
                changed = true
                declared[spec.id] = NetworkPass.Declared(statusID: spec.id, replaced: "(no address)", memory: memory)
            } catch {
                declared[spec.id] = NetworkPass.Declared(statusID: spec.id, error: "\(error)", memory: memory)
            }
        }
        if changed {
            do { addresses = try netlink.addresses() } catch { return .unreadable(running, error, statusID: { $0.id }) }
        }
        var objects: [String: [(String, YAMLValue)]] = [:]
        for address in addresses {
            objects[Self.id(address, names: names)] = [
                ("link", .scalar(names[address.link] ?? String(address.link))), ("address", .scalar(address.prefix.description)),
                ("family", .scalar(address.prefix.address.familyName)), ("scope", .scalar(NetworkAddress.scopeName(address.scope))),
            ]
        }
        return NetworkPass(objects: objects, declared: declared, holding: holding)
    }
}
