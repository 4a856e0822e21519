#if canImport(Glibc)
import Glibc
#endif
import CosiMessages
import CosiNetlink

/// `LinkSpecs.net.cosi.dev` (id = the link's name) {up (default true), mtu (0 = leave as is),
/// kind ("" = a link that exists, "bridge", "veth"), peer (a veth's peer), master (a bridge to
/// join)} over rtnetlink; `LinkStatuses.net.cosi.dev` (id = name) {index, kind, up, operState,
/// mtu, hardwareAddress, master} for every link of the namespace.
///
/// Bridges and veth pairs are created when missing (and remembered as cosid's) and deleted when
/// their spec goes; a link that existed before its spec gets back the up state, MTU and master it
/// had before the first change.
public struct LinkSetting: NetworkSetting {
    public let name = "links"
    public let namespace = "network"
    public let specType = "LinkSpecs.net.cosi.dev"
    public let statusType = "LinkStatuses.net.cosi.dev"
    public var specColumns: [(String, String)] { [("Kind", "{.kind}"), ("Up", "{.up}"), ("MTU", "{.mtu}"), ("Master", "{.master}")] }
    public var statusColumns: [(String, String)] {
        [("State", "{.operState}"), ("Up", "{.up}"), ("MTU", "{.mtu}"), ("Address", "{.hardwareAddress}"), ("Kind", "{.kind}"), ("Master", "{.master}"), ("Error", "{.error}")]
    }
    public var specSchema: SpecSchema {
        SpecSchema([.boolean("up"), .integer("mtu", in: 0...65535), .text("kind", among: ["", "bridge", "veth"]), .text("peer"), .text("master")])
    }
    public var aliases: (spec: [String], status: [String]) { (["linkspec", "lks"], ["linkstatus", "links", "lkst"]) }
    public var groups: NetlinkSocket.Groups { [.link] }
    public var memoryPrefix: String { "cosi.dev/link-" }

    public init() {}

    /// The memory a link's status keeps: that cosid created it, or what it was like before.
    static let created = "cosi.dev/link-created"
    static let beforeUp = "cosi.dev/link-before-up"
    static let beforeMTU = "cosi.dev/link-before-mtu"
    static let beforeMaster = "cosi.dev/link-before-master"

    struct Declared {
        var up: Bool
        var mtu: UInt32
        var kind: String
        var peer: String?
        var master: String?
    }

    static func read(_ spec: SettingSpec) throws(NetlinkError) -> Declared {
        let kind = spec.string("kind") ?? ""
        guard ["", "bridge", "veth"].contains(kind) else { throw NetlinkError(.invalidArgument, "make a link of kind \"\(kind)\": kind is \"\" (a link that exists), bridge or veth") }
        guard let mtu = UInt32(spec.string("mtu") ?? "0"), mtu <= 65535 else { throw NetlinkError(.invalidArgument, "use mtu \(spec.string("mtu") ?? ""): a number from 0 (leave as is) to 65535") }
        guard let up = Bool(yaml: spec.string("up") ?? "true") else { throw NetlinkError(.invalidArgument, "use up \(spec.string("up") ?? ""): true or false") }
        let peer = spec.string("peer").flatMap { $0.isEmpty ? nil : $0 }
        if kind == "veth", peer == nil { throw NetlinkError(.invalidArgument, "make the veth \(spec.id): a veth needs its peer's name (peer)") }
        if kind != "veth", peer != nil { throw NetlinkError(.invalidArgument, "use peer for \(spec.id): only a veth has a peer") }
        guard isLinkName(spec.id) else { throw NetlinkError(.invalidArgument, "name a link \"\(spec.id)\": a link's name is 1 to 15 characters, no '/', ':' or space") }
        return Declared(up: up, mtu: mtu, kind: kind, peer: peer, master: spec.string("master").flatMap { $0.isEmpty ? nil : $0 })
    }

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], netlink: Rtnetlink, leaveAlone: Set<String>) -> NetworkPass {
        var links: [NetworkLink]
        do { links = try netlink.links() } catch { return .unreadable(running, error, statusID: { $0.id }) }
        var byName = Dictionary(links.map { ($0.name, $0) }) { first, _ in first }
        var holding: [String: NetworkPass.Declared] = [:]
        var released = false

        // Going: what cosid created is deleted; what existed gets back what it was.
        for spec in releasing {
            let memory = statuses[spec.id]?.metadata.annotations ?? [:]
            guard let link = byName[spec.id] else { continue }
            released = true
            do throws(NetlinkError) {
                if memory[Self.created] == "true" {
                    try netlink.deleteLink(link.index, name: link.name)
                } else {
                    let up = memory[Self.beforeUp].flatMap { Bool($0) }
                    let mtu = memory[Self.beforeMTU].flatMap { UInt32($0) }
                    let master = memory[Self.beforeMaster].map { $0.isEmpty ? Int32(0) : byName[$0]?.index ?? 0 }
                    if up.map({ $0 != link.up }) ?? false || mtu.map({ $0 != link.mtu }) ?? false || master.map({ $0 != link.master }) ?? false {
                        try netlink.setLink(link.index, name: link.name, up: up == link.up ? nil : up, mtu: mtu == link.mtu ? nil : mtu, master: master == link.master ? nil : master)
                    }
                }
            } catch where [ENODEV, EOPNOTSUPP, EINVAL, ERANGE, EBUSY].contains(error.errno) && memory[Self.created] != "true" {
                // What it had cannot be given back any more (its bridge is gone or is no bridge,
                // its MTU is no longer valid): the spec goes anyway, the link stays as it is.
            } catch {
                holding[spec.id] = NetworkPass.Declared(statusID: spec.id, error: "\(error)", memory: memory.filter { $0.key.hasPrefix("cosi.dev/link-") })
            }
        }

        var declared: [String: NetworkPass.Declared] = [:]
        // Creations first (bridges before the links that join them), then the settings.
        var wanted: [(SettingSpec, Declared)] = []
        for spec in running {
            do throws(NetlinkError) { wanted.append((spec, try Self.read(spec))) } catch {
                declared[spec.id] = NetworkPass.Declared(statusID: spec.id, error: "\(error)")
            }
        }
        var created = false
        for (spec, link) in wanted.sorted(by: { ($0.1.kind == "bridge" ? 0 : 1) < ($1.1.kind == "bridge" ? 0 : 1) }) {
            var memory = (statuses[spec.id]?.metadata.annotations ?? [:]).filter { $0.key.hasPrefix("cosi.dev/link-") }
            if let existing = byName[spec.id] {
                if !link.kind.isEmpty, existing.kind != link.kind {
                    declared[spec.id] = NetworkPass.Declared(statusID: spec.id, error: "a link named \(spec.id) exists and is a \(existing.kind), not a \(link.kind): cosid does not replace it", memory: memory)
                    continue
                }
                if memory[Self.created] == nil {
                    // First sight of a link that was there before its spec: what to give back.
                    memory[Self.created] = "false"
                    memory[Self.beforeUp] = String(existing.up)
                    memory[Self.beforeMTU] = String(existing.mtu)
                    memory[Self.beforeMaster] = links.first { $0.index == existing.master && existing.master != 0 }?.name ?? ""
                }
                declared[spec.id] = NetworkPass.Declared(statusID: spec.id, memory: memory)
                continue
            }
            guard !link.kind.isEmpty else {
                declared[spec.id] = NetworkPass.Declared(statusID: spec.id, error: "no link named \(spec.id) in the namespace (a spec with no kind keeps a link that exists)", memory: memory)
                continue
            }
            if leaveAlone.contains(spec.id) {
                declared[spec.id] = NetworkPass.Declared(statusID: spec.id, memory: memory)
                continue
            }
            if let peer = link.peer, byName[peer] != nil {
                declared[spec.id] = NetworkPass.Declared(statusID: spec.id, error: "the veth's peer name \(peer) is taken by another link", memory: memory)
                continue
            }
            do throws(NetlinkError) {
                try netlink.addLink(spec.id, kind: link.kind, peer: link.peer)
                memory[Self.created] = "true"
                created = true
                declared[spec.id] = NetworkPass.Declared(statusID: spec.id, replaced: "(no link)", memory: memory)
            } catch {
                declared[spec.id] = NetworkPass.Declared(statusID: spec.id, error: "\(error)", memory: memory)
            }
        }
        if created || released {
            do { links = try netlink.links() } catch { return .unreadable(running, error, statusID: { $0.id }) }
            byName = Dictionary(links.map { ($0.name, $0) }) { first, _ in first }
        }

        // Up, MTU and master, as declared; only what differs is written.
        var changed = false
        for (spec, link) in wanted {
            guard var report = declared[spec.id], report.error == nil, let existing = byName[spec.id] else { continue }
            var master: Int32?
            if let name = link.master {
                guard let bridge = byName[name] else {
                    report.error = "no link named \(name) to join (master)"
                    declared[spec.id] = report
                    continue
                }
                master = bridge.index
            }
            var found: [String] = []
            if existing.up != link.up { found.append(existing.up ? "up" : "down") }
            if link.mtu != 0, existing.mtu != link.mtu { found.append("mtu \(existing.mtu)") }
            if let master, existing.master != master {
                let current = existing.master == 0 ? nil : links.first { $0.index == existing.master }
                found.append("master \(current?.name ?? "none")")
            }
            guard !found.isEmpty, !leaveAlone.contains(spec.id) else { continue }
            do throws(NetlinkError) {
                try netlink.setLink(
                    existing.index, name: existing.name, up: existing.up != link.up ? link.up : nil, mtu: link.mtu != 0 && existing.mtu != link.mtu ? link.mtu : nil,
                    master: master.flatMap { $0 != existing.master ? $0 : nil }
                )
                if report.replaced == nil { report.replaced = found.joined(separator: ", ") }
                changed = true
            } catch {
                report.error = "\(error)"
            }
            declared[spec.id] = report
        }
        if changed {
            do { links = try netlink.links() } catch { return .unreadable(running, error, statusID: { $0.id }) }
        }
        let names = Dictionary(links.map { ($0.index, $0.name) }) { first, _ in first }
        var objects: [String: [(String, YAMLValue)]] = [:]
        for link in links {
            objects[link.name] = [
                ("index", .integer(Int(link.index))), ("kind", .scalar(link.kind)), ("up", .boolean(link.up)), ("operState", .scalar(link.operState)),
                ("mtu", .integer(Int(link.mtu))), ("hardwareAddress", .scalar(link.hardwareAddress)), ("master", .scalar(link.master == 0 ? "" : names[link.master] ?? String(link.master))),
            ]
        }
        return NetworkPass(objects: objects, declared: declared, holding: holding)
    }
}

/// A kernel link name: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, `:` or whitespace, not `.` or `..`.
func isLinkName(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.count <= 15 && name != "." && name != ".." && !name.contains { $0 == "/" || $0 == ":" || $0.isWhitespace }
}

extension Bool {
    /// A YAML boolean (`true`, `false`, `yes`, `no`, `on`, `off`, any case).
    init?(yaml text: String) {
        switch text.lowercased() {
        case "true", "yes", "on": self = true
        case "false", "no", "off": self = false
        default: return nil
        }
    }
}

extension NetworkPass {
    /// A pass that could not read the namespace: every spec reports why.
    static func unreadable(_ running: [SettingSpec], _ error: any Error, statusID: (SettingSpec) -> String) -> NetworkPass {
        NetworkPass(objects: nil, declared: Dictionary(running.map { ($0.id, Declared(statusID: statusID($0), error: "\(error)")) }) { first, _ in first })
    }
}
