import CosiMessages

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

    public var keptFiles: [String] { ["etc/hosts"] }

    public init() {}

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot, leaveAlone: Set<String>) -> [String: StatusReport] {
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
            // The block is one object: left alone when any of its entries flaps.
            let current = try root.read("etc/hosts") ?? ""
            let wanted = Self.merge(current, entries)
            let before = Self.block(current)
            let replaced = try root.keep("etc/hosts", wanted, leaveAlone: valid.contains { leaveAlone.contains($0.id) })
            let written = Self.block(try root.read("etc/hosts") ?? "")
            for spec in valid {
                // What this entry's line said instead, when the block had to change for it.
                let found = replaced != nil && before[spec.id] != written[spec.id] ? (before[spec.id].map { $0.joined(separator: " ") } ?? "(no entry)") : nil
                reports[spec.id] = StatusReport(fields: [("hostnames", .list(written[spec.id] ?? []))], replaced: found)
            }
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

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
