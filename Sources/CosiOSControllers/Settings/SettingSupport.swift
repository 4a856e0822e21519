import CosiMessages

/// The header of every file the built-in controllers write in full.
let managedHeader = "# Managed by cosid: edit the COSI resources, not this file.\n"

/// Reports the same failure for every spec.
func failed(_ specs: [SettingSpec], _ error: any Error, fields: (SettingSpec) -> [(String, YAMLValue)]) -> [String: StatusReport] {
    Dictionary(uniqueKeysWithValues: specs.map { ($0.id, StatusReport(fields: fields($0), error: "\(error)")) })
}

/// A setting with one resource of a fixed id ("hostname", "resolvers", "timeservers"): a spec
/// with another id is reported as an error and left alone.
func single(_ running: [SettingSpec], id: String, type: String) -> (SettingSpec?, [String: StatusReport]) {
    var others: [String: StatusReport] = [:]
    for spec in running where spec.id != id {
        others[spec.id] = StatusReport(fields: [], error: "\(type) has one resource, with id \"\(id)\"; this one is ignored")
    }
    return (running.first { $0.id == id }, others)
}

extension MachineRoot {
    /// Makes `relative` hold `content`, unless `leaveAlone` (then it only looks). Returns what the
    /// file held instead when it had to change it (`(no file)` when there was none), nil when it
    /// held `content` already or was left alone.
    func keep(_ relative: String, _ content: String, leaveAlone: Bool = false) throws(MachineError) -> String? {
        let before = try read(relative)
        guard before != content, !leaveAlone else { return nil }
        try replace(relative, with: content)
        return before.map(excerpt) ?? "(no file)"
    }

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

/// What a status says was found: the text, or its first 500 characters.
func excerpt(_ text: String) -> String {
    text.count <= 500 ? text : String(text.prefix(500)) + "..."
}
