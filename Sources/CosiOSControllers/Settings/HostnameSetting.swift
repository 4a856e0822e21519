import CosiMessages

/// `HostnameSpecs.net.cosi.dev` (id "hostname", {hostname, domainname}) -> `<root>/etc/hostname`
/// and, when `live`, the kernel's host and domain names of cosid's UTS namespace
/// (sethostname(2), setdomainname(2)), reported in `HostnameStatuses.net.cosi.dev` {hostname,
/// domainname}: what the kernel says when live (uname), else the file and the domain name applied.
/// Linux keeps no file for the domain name. When the spec goes, the file and the names are left as
/// they are (a machine always has a host name).
///
/// The file is watched; the kernel's names give no events and are checked every resync interval.
/// `live` is off in a sandbox whose UTS namespace is the host's (controllers.md: a sandbox never
/// touches the host).
public struct HostnameSetting: MachineSetting {
    public let name = "hostname"
    public let namespace = "network"
    public let specType = "HostnameSpecs.net.cosi.dev"
    public let statusType = "HostnameStatuses.net.cosi.dev"
    public var specColumns: [(String, String)] { [("Hostname", "{.hostname}"), ("Domainname", "{.domainname}")] }
    public var statusColumns: [(String, String)] { [("Hostname", "{.hostname}"), ("Domainname", "{.domainname}"), ("Error", "{.error}")] }
    public var specSchema: SpecSchema { SpecSchema([.text("hostname", required: true), .text("domainname")]) }
    public var aliases: (spec: [String], status: [String]) { (["hostnamespec", "hsp"], ["hostnamestatus", "hostname", "hst"]) }
    public var keptFiles: [String] { ["etc/hostname"] }
    public var resyncs: Bool { live }
    /// Whether it keeps the kernel's names too.
    public let live: Bool

    public init(live: Bool = false) {
        self.live = live
    }

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot, leaveAlone: Set<String>) -> [String: StatusReport] {
        var (spec, reports) = single(running, id: "hostname", type: specType)
        guard let spec else { return reports }
        let domain = spec.string("domainname") ?? ""
        let alone = leaveAlone.contains(spec.id)
        func reported() -> [(String, YAMLValue)] {
            if live {
                let kernel = LiveHostname.read()
                return [("hostname", .scalar(kernel.hostname)), ("domainname", .scalar(kernel.domainname))]
            }
            let file = (try? root.read("etc/hostname"))??.trimmingSpaces ?? ""
            return [("hostname", .scalar(file)), ("domainname", .scalar(domain))]
        }
        do {
            guard let hostname = spec.string("hostname"), Self.isValid(hostname) else {
                throw MachineError("etc/hostname", message: "hostname must be 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen (got \"\(spec.string("hostname") ?? "")\")")
            }
            guard domain.utf8.count <= 64, !domain.contains(where: { $0.isWhitespace }) else {
                throw MachineError("domainname", message: "domainname must be at most 64 characters without spaces (got \"\(domain)\")")
            }
            var found: [String] = []
            if let replaced = try root.keep("etc/hostname", hostname + "\n", leaveAlone: alone) {
                found.append(replaced.trimmingSpaces)
            }
            if live {
                let kernel = LiveHostname.read()
                let wantedDomain = domain.isEmpty ? nil : domain
                if !alone, kernel.hostname != hostname || (wantedDomain != nil && kernel.domainname != domain) {
                    try LiveHostname.set(hostname: hostname, domainname: wantedDomain)
                    found.append("kernel hostname \(kernel.hostname)\(kernel.domainname.isEmpty ? "" : ", domain name " + kernel.domainname)")
                }
            }
            reports[spec.id] = StatusReport(fields: reported(), replaced: found.isEmpty ? nil : found.joined(separator: "; "))
        } catch {
            reports[spec.id] = StatusReport(fields: reported(), error: "\(error)")
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
