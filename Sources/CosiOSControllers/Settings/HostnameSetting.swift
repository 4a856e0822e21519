import CosiMessages

/// `HostnameSpecs.net.cosi.dev` (id "hostname", {hostname, domainname}) -> `<root>/etc/hostname`,
/// reported in `HostnameStatuses.net.cosi.dev` {hostname, domainname}. The file holds the host
/// name; Linux keeps no file for the domain name, so the status reports the domain name applied.
/// When the spec goes, the file is left as it is (a machine always has a host name).
public struct HostnameSetting: MachineSetting {
    public let name = "hostname"
    public let namespace = "network"
    public let specType = "HostnameSpecs.net.cosi.dev"
    public let statusType = "HostnameStatuses.net.cosi.dev"
    public var specColumns: [(String, String)] { [("Hostname", "{.hostname}"), ("Domainname", "{.domainname}")] }
    public var statusColumns: [(String, String)] { [("Hostname", "{.hostname}"), ("Domainname", "{.domainname}"), ("Error", "{.error}")] }
    public var specSchema: SpecSchema { SpecSchema([.text("hostname", required: true), .text("domainname")]) }
    public var aliases: (spec: [String], status: [String]) { (["hostnamespec", "hsp"], ["hostnamestatus", "hostname", "hst"]) }

    public init() {}

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot) -> [String: StatusReport] {
        var (spec, reports) = single(running, id: "hostname", type: specType)
        guard let spec else { return reports }
        let domain = spec.string("domainname") ?? ""
        do {
            guard let hostname = spec.string("hostname"), Self.isValid(hostname) else {
                throw MachineError("etc/hostname", message: "hostname must be 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen (got \"\(spec.string("hostname") ?? "")\")")
            }
            try root.replace("etc/hostname", with: hostname + "\n")
            let readBack = try root.read("etc/hostname")?.trimmingSpaces ?? ""
            reports[spec.id] = StatusReport(fields: [("hostname", .scalar(readBack)), ("domainname", .scalar(domain))])
        } catch {
            let current = (try? root.read("etc/hostname"))??.trimmingSpaces ?? ""
            reports[spec.id] = StatusReport(fields: [("hostname", .scalar(current)), ("domainname", .scalar(domain))], error: "\(error)")
        }
        return reports
    }

    static func isValid(_ label: String) -> Bool {
        (1...63).contains(label.count) && !label.hasPrefix("-") && !label.hasSuffix("-")
            && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
