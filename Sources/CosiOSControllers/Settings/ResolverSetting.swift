import CosiMessages

/// `ResolverSpecs.net.cosi.dev` (id "resolvers", {dnsServers: [...]}) -> `<root>/etc/resolv.conf`,
/// reported in `ResolverStatuses.net.cosi.dev` {dnsServers}. When the spec goes, the file goes.
public struct ResolverSetting: MachineSetting {
    public let name = "resolvers"
    public let namespace = "network"
    public let specType = "ResolverSpecs.net.cosi.dev"
    public let statusType = "ResolverStatuses.net.cosi.dev"
    public var specColumns: [(String, String)] { [("DNS Servers", "{.dnsServers}")] }
    public var statusColumns: [(String, String)] { [("DNS Servers", "{.dnsServers}"), ("Error", "{.error}")] }
    public var specSchema: SpecSchema { SpecSchema([.list("dnsServers")]) }
    public var aliases: (spec: [String], status: [String]) { (["resolverspec", "rsp"], ["resolverstatus", "resolvers", "rst"]) }

    public var keptFiles: [String] { ["etc/resolv.conf"] }

    public init() {}

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot, leaveAlone: Set<String>) -> [String: StatusReport] {
        var (spec, reports) = single(running, id: "resolvers", type: specType)
        guard let spec else {
            if !releasing.isEmpty { _ = try? root.remove("etc/resolv.conf", ifManaged: true) }
            return reports
        }
        do {
            let servers = spec.strings("dnsServers") ?? []
            for server in servers where !isIPAddress(server) {
                throw MachineError("etc/resolv.conf", message: "dnsServers: \"\(server)\" is not an IP address")
            }
            let replaced = try root.keep("etc/resolv.conf", managedHeader + servers.map { "nameserver \($0)\n" }.joined(), leaveAlone: leaveAlone.contains(spec.id))
            reports[spec.id] = StatusReport(fields: [("dnsServers", .list(try Self.nameservers(root)))], replaced: replaced)
        } catch {
            reports[spec.id] = StatusReport(fields: [("dnsServers", .list((try? Self.nameservers(root)) ?? []))], error: "\(error)")
        }
        return reports
    }

    /// The `nameserver` lines of resolv.conf, read back.
    static func nameservers(_ root: MachineRoot) throws(MachineError) -> [String] {
        (try root.read("etc/resolv.conf") ?? "").split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            return words.count >= 2 && words[0] == "nameserver" ? String(words[1]) : nil
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
