#if canImport(Glibc)
import Glibc
#endif

/// cosid's kernel namespaces, for the sandbox rule of controllers.md: a namespace is cosid's own
/// when it differs from its parent process's and, where that can be read, from PID 1's; one equal
/// to either, or one that cannot be compared, counts as the host's.
public enum Namespaces {
    /// Whether cosid's namespace of `kind` (`uts`, `mnt`, `net`) is its own.
    public static func isOwn(_ kind: String) -> Bool {
        guard let mine = link("/proc/self/ns/\(kind)"), let parent = link("/proc/\(getppid())/ns/\(kind)") else { return false }
        if mine == parent { return false }
        // PID 1's may be hidden (a VM or container); when shown, it must differ too.
        if let first = link("/proc/1/ns/\(kind)"), first == mine { return false }
        return true
    }

    /// The command that starts cosid with namespaces of its own, for the log line that says how.
    public static func unshareCommand(_ arguments: [String]) -> String {
        (["unshare", "--uts", "--mount", "--propagation", "private"] + arguments).joined(separator: " ")
    }

    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The kernel's host and domain names in cosid's UTS namespace (uname(2), sethostname(2),
/// setdomainname(2)).
public enum LiveHostname {
    /// What the kernel says now; a domain name of `(none)` (Linux's "not set") reads as empty.
    public static func read() -> (hostname: String, domainname: String) {
        var host = [CChar](repeating: 0, count: 256)
        var domain = [CChar](repeating: 0, count: 256)
        _ = gethostname(&host, host.count - 1)
        _ = getdomainname(&domain, domain.count - 1)
        func text(_ bytes: [CChar]) -> String {
            String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        let domainname = text(domain)
        return (text(host), domainname == "(none)" ? "" : domainname)
    }

    /// Sets the host name, and the domain name when `domainname` is not nil.
    public static func set(hostname: String, domainname: String?) throws(MachineError) {
        guard sethostname(hostname, hostname.utf8.count) == 0 else { throw MachineError("sethostname(\"\(hostname)\")", "cannot set the host name", errno) }
        if let domainname {
            guard setdomainname(domainname, domainname.utf8.count) == 0 else {
                throw MachineError("setdomainname(\"\(domainname)\")", "cannot set the domain name", errno)
            }
        }
    }
}
