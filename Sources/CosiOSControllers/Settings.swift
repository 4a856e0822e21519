import CosiMessages

/// The header of every file the built-in controllers write in full.
let managedHeader = "# Managed by cosid: edit the COSI resources, not this file.\n"

/// Reports the same failure for every spec.
private func failed(_ specs: [SettingSpec], _ error: any Error, fields: (SettingSpec) -> [(String, YAMLValue)]) -> [String: StatusReport] {
    Dictionary(uniqueKeysWithValues: specs.map { ($0.id, StatusReport(fields: fields($0), error: "\(error)")) })
}

/// A setting with one resource of a fixed id ("hostname", "resolvers", "timeservers"): a spec
/// with another id is reported as an error and left alone.
private func single(_ running: [SettingSpec], id: String, type: String) -> (SettingSpec?, [String: StatusReport]) {
    var others: [String: StatusReport] = [:]
    for spec in running where spec.id != id {
        others[spec.id] = StatusReport(fields: [], error: "\(type) has one resource, with id \"\(id)\"; this one is ignored")
    }
    return (running.first { $0.id == id }, others)
}

// MARK: Hostname

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

// MARK: Resolvers

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

    public init() {}

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot) -> [String: StatusReport] {
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
            try root.replace("etc/resolv.conf", with: managedHeader + servers.map { "nameserver \($0)\n" }.joined())
            reports[spec.id] = StatusReport(fields: [("dnsServers", .list(try Self.nameservers(root)))])
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

// MARK: Time servers

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

    public init() {}

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot) -> [String: StatusReport] {
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
            try root.replace(Self.file, with: managedHeader + "[Time]\nNTP=\(servers.joined(separator: " "))\n")
            reports[spec.id] = StatusReport(fields: [("timeServers", .list(try Self.servers(root)))])
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

// MARK: Static hosts

/// `StaticHostSpecs.net.cosi.dev` (id = the address, {hostnames: [...]}) -> a block of
/// `<root>/etc/hosts` between markers, reported in `StaticHostStatuses.net.cosi.dev` {hostnames}.
/// Lines outside the block are never touched.
public struct StaticHostSetting: MachineSetting {
    public let name = "hosts"
    public let namespace = "network"
    public let specType = "StaticHostSpecs.net.cosi.dev"
    public let statusType = "StaticHostStatuses.net.cosi.dev"
    static let begin = "# BEGIN cosid static hosts (managed: edit StaticHostSpecs.net.cosi.dev resources instead)"
    static let end = "# END cosid static hosts"
    public var specColumns: [(String, String)] { [("Hostnames", "{.hostnames}")] }
    public var statusColumns: [(String, String)] { [("Hostnames", "{.hostnames}"), ("Error", "{.error}")] }
    public var specSchema: SpecSchema { SpecSchema([.list("hostnames")]) }
    public var aliases: (spec: [String], status: [String]) { (["statichostspec", "shsp"], ["statichoststatus", "statichosts", "shst"]) }

    public init() {}

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot) -> [String: StatusReport] {
        var reports: [String: StatusReport] = [:]
        var entries: [(String, [String])] = []
        for spec in running.sorted(by: { $0.id < $1.id }) {
            let hostnames = spec.strings("hostnames") ?? []
            if !isIPAddress(spec.id) {
                reports[spec.id] = StatusReport(fields: [("hostnames", .list([]))], error: "the id must be an IP address, not \"\(spec.id)\"")
            } else if let bad = hostnames.first(where: { $0.isEmpty || $0.contains(where: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "#" }) }) {
                reports[spec.id] = StatusReport(fields: [("hostnames", .list([]))], error: "hostnames: \"\(bad)\" is not a host name")
            } else {
                entries.append((spec.id, hostnames))
            }
        }
        let valid = running.filter { reports[$0.id] == nil }
        do {
            let current = try root.read("etc/hosts") ?? ""
            try root.replace("etc/hosts", with: Self.merge(current, entries))
            let written = Self.block(try root.read("etc/hosts") ?? "")
            for spec in valid { reports[spec.id] = StatusReport(fields: [("hostnames", .list(written[spec.id] ?? []))]) }
        } catch {
            reports.merge(failed(valid, error) { _ in [("hostnames", .list([]))] }) { $1 }
        }
        return reports
    }

    /// `hosts` with the managed block replaced by `entries` (or removed when there are none).
    static func merge(_ hosts: String, _ entries: [(String, [String])]) -> String {
        var lines = hosts.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        if let start = lines.firstIndex(of: begin), let stop = lines[start...].firstIndex(of: end) {
            lines.removeSubrange(start...stop)
        }
        if !entries.isEmpty {
            lines.append(begin)
            lines += entries.map { "\($0.0) \($0.1.joined(separator: " "))" }
            lines.append(end)
        }
        return lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n"
    }

    /// The managed block's entries: address -> hostnames.
    static func block(_ hosts: String) -> [String: [String]] {
        let lines = hosts.split(separator: "\n").map(String.init)
        guard let start = lines.firstIndex(of: begin), let stop = lines[start...].firstIndex(of: end) else { return [:] }
        var entries: [String: [String]] = [:]
        for line in lines[(start + 1)..<stop] {
            let words = line.split(separator: " ").map(String.init)
            if let address = words.first { entries[address] = Array(words.dropFirst()) }
        }
        return entries
    }
}

// MARK: Kernel parameters

/// `KernelParamSpecs.runtime.cosi.dev` (id = the sysctl key, {value}) -> `<root>/proc/sys/<key
/// with dots as slashes>`, reported in `KernelParamStatuses.runtime.cosi.dev` {value} read back.
/// The value found before the first write is kept in the status (annotation
/// `cosi.dev/original-value`) and written back when the spec is destroyed. A parameter whose file
/// does not exist, or cannot be written, is reported; nothing is created under `proc/sys`.
public struct KernelParamSetting: MachineSetting {
    public let name = "kernel-params"
    public let namespace = "runtime"
    public let specType = "KernelParamSpecs.runtime.cosi.dev"
    public let statusType = "KernelParamStatuses.runtime.cosi.dev"
    public static let originalAnnotation = "cosi.dev/original-value"
    public var specColumns: [(String, String)] { [("Value", "{.value}")] }
    public var statusColumns: [(String, String)] { [("Value", "{.value}"), ("Error", "{.error}")] }
    public var specSchema: SpecSchema { SpecSchema([.text("value", required: true)]) }
    public var aliases: (spec: [String], status: [String]) { (["kernelparamspec", "kpsp"], ["kernelparamstatus", "kernelparams", "kpst"]) }

    public init() {}

    /// `net.ipv4.ip_forward` -> `proc/sys/net/ipv4/ip_forward`; nil for a key that is not one.
    static func path(_ key: String) -> String? {
        let parts = key.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") } }) else { return nil }
        return "proc/sys/" + parts.joined(separator: "/")
    }

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot) -> [String: StatusReport] {
        // Going: restore the value found before the first write.
        for spec in releasing {
            guard let path = Self.path(spec.id), let original = statuses[spec.id]?.metadata.annotations[Self.originalAnnotation] else { continue }
            try? root.writeInPlace(path, original + "\n")
        }
        var reports: [String: StatusReport] = [:]
        for spec in running {
            let original = statuses[spec.id]?.metadata.annotations[Self.originalAnnotation]
            guard let path = Self.path(spec.id) else {
                reports[spec.id] = StatusReport(fields: [("value", .scalar(""))], error: "\"\(spec.id)\" is not a sysctl key (words of letters, digits, _ and -, separated by dots)")
                continue
            }
            do {
                guard let value = spec.string("value") else { throw MachineError(path, message: "value is missing") }
                guard let before = try root.read(path) else { throw MachineError(root.resolve(path), message: "\(root.resolve(path)): no such kernel parameter") }
                let remembered = original ?? before.words
                if before.words != value.words { try root.writeInPlace(path, value + "\n") }
                let readBack = try root.read(path)?.words ?? ""
                reports[spec.id] = StatusReport(fields: [("value", .scalar(readBack))], annotations: [Self.originalAnnotation: remembered])
            } catch {
                let current = (try? root.read(path))??.words ?? ""
                reports[spec.id] = StatusReport(fields: [("value", .scalar(current))], error: "\(error)", annotations: original.map { [Self.originalAnnotation: $0] } ?? [:])
            }
        }
        return reports
    }
}

// MARK: Helpers

extension MachineRoot {
    /// Removes a file this daemon wrote (it starts with the managed header); others are left.
    @discardableResult
    func remove(_ relative: String, ifManaged: Bool) throws(MachineError) -> Bool {
        guard let content = try read(relative), !ifManaged || content.hasPrefix(managedHeader) else { return false }
        guard unlink(resolve(relative)) == 0 else { throw MachineError(resolve(relative), "cannot remove", errno) }
        return true
    }
}

/// Whether `text` is an IPv4 or IPv6 address.
func isIPAddress(_ text: String) -> Bool {
    var v4 = in_addr(), v6 = in6_addr()
    return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
}

extension String {
    /// The words separated by single spaces: how a kernel parameter's value is compared and
    /// reported (`/proc/sys/net/ipv4/tcp_rmem` reads back as `4096\t131072\t6291456\n`).
    var words: String {
        split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    var trimmingSpaces: String {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text = text.dropFirst() }
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
