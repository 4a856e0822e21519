import CosiMessages

/// `TimeServerSpecs.net.cosi.dev` (id "timeservers", {timeServers: [...]}) ->
/// `<root>/etc/systemd/timesyncd.conf.d/cosi.conf`, reported in `TimeServerStatuses.net.cosi.dev`
/// {timeServers}. When the spec goes, the file goes.
public struct TimeServerSetting: MachineSetting {
    public let name = "time-servers"
    public let namespace = "network"
    public let specType = "TimeServerSpecs.net.cosi.dev"
    public let statusType = "TimeServerStatuses.net.cosi.dev"
    static let file = "etc/systemd/timesyncd.conf.d/cosi.conf"
    public var specColumns: [(String, String)] { [("Time Servers", "{.timeServers}")] }
    public var statusColumns: [(String, String)] { [("Time Servers", "{.timeServers}"), ("Error", "{.error}")] }
    public var specSchema: SpecSchema { SpecSchema([.list("timeServers")]) }
    public var aliases: (spec: [String], status: [String]) { (["timeserverspec", "tssp"], ["timeserverstatus", "timeservers", "tsst"]) }

    public var keptFiles: [String] { [Self.file] }

    public init() {}

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot, leaveAlone: Set<String>) -> [String: StatusReport] {
        var (spec, reports) = single(running, id: "timeservers", type: specType)
        guard let spec else {
            if !releasing.isEmpty { _ = try? root.remove(Self.file, ifManaged: true) }
            return reports
        }
        do {
            let servers = spec.strings("timeServers") ?? []
            for server in servers where server.isEmpty || server.contains(where: { $0 == " " || $0 == "\n" || $0 == "\t" }) {
                throw MachineError(Self.file, message: "timeServers: \"\(server)\" is not a host name or address")
            }
            let replaced = try root.keep(Self.file, managedHeader + "[Time]\nNTP=\(servers.joined(separator: " "))\n", leaveAlone: leaveAlone.contains(spec.id))
            reports[spec.id] = StatusReport(fields: [("timeServers", .list(try Self.servers(root)))], replaced: replaced)
        } catch {
            reports[spec.id] = StatusReport(fields: [("timeServers", .list((try? Self.servers(root)) ?? []))], error: "\(error)")
        }
        return reports
    }

    static func servers(_ root: MachineRoot) throws(MachineError) -> [String] {
        for line in (try root.read(file) ?? "").split(separator: "\n") where line.hasPrefix("NTP=") {
            return line.dropFirst(4).split(separator: " ").map(String.init)
        }
        return []
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
