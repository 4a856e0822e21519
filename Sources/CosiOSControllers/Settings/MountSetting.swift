#if canImport(Glibc)
import Glibc
#endif
import CosiMessages
import NIOConcurrencyHelpers

/// `MountSpecs.runtime.cosi.dev` (id = the mount point, an absolute path; under a sandbox root DIR
/// it is `DIR` + the id) {source, fsType, options: [..]} -> mount(2) in cosid's mount namespace,
/// reported in `MountStatuses.runtime.cosi.dev` {source, fsType, options} from
/// `/proc/self/mountinfo`. Options are mount(8)'s: `ro`, `nosuid`, `nodev`, `noexec`, `noatime`,
/// `bind`... become mount flags, the rest (`size=4m`) goes to the filesystem. The mount point is
/// made when missing. Destroying the spec unmounts it and leaves the mount point; a busy mount
/// point is an error in the status, retried, and the spec stays tearing down. Mounts that are not
/// declared are never touched. Changes of the mount table wake the controller (poll(2) on
/// mountinfo).
public struct MountSetting: MachineSetting {
    public let name = "mounts"
    public let namespace = "runtime"
    public let specType = "MountSpecs.runtime.cosi.dev"
    public let statusType = "MountStatuses.runtime.cosi.dev"
    public var specColumns: [(String, String)] { [("Source", "{.source}"), ("Type", "{.fsType}"), ("Options", "{.options}")] }
    public var statusColumns: [(String, String)] { [("Source", "{.source}"), ("Type", "{.fsType}"), ("Options", "{.options}"), ("Error", "{.error}")] }
    public var specSchema: SpecSchema { SpecSchema([.text("source", required: true), .text("fsType", required: true), .list("options")]) }
    public var aliases: (spec: [String], status: [String]) { (["mountspec", "msp"], ["mountstatus", "mounts", "mst"]) }

    public init() {}

    public func observer(root: MachineRoot) throws(MachineError) -> (any MachineObserver)? {
        try MountChanges()
    }

    /// mount(8) options that are flags.
    static let flags: [String: UInt] = [
        "ro": UInt(MS_RDONLY), "nosuid": UInt(MS_NOSUID), "nodev": UInt(MS_NODEV), "noexec": UInt(MS_NOEXEC),
        "noatime": UInt(MS_NOATIME), "nodiratime": UInt(MS_NODIRATIME), "relatime": UInt(MS_RELATIME),
        "sync": UInt(MS_SYNCHRONOUS), "bind": UInt(MS_BIND), "rbind": UInt(MS_BIND | MS_REC),
    ]
    /// Flags mountinfo's per-mount options show (what is compared after mounting).
    static let shownFlags: Set<String> = ["ro", "nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime"]
    /// Options that mean "the default": accepted, no flag.
    static let defaults: Set<String> = ["rw", "defaults", "suid", "dev", "exec", "atime", "async"]

    /// The mount point of spec `id` under `root`, or nil for an id that is not an absolute path
    /// in normal form (`/mnt/data`: no empty, `.` or `..` part, no trailing slash; not `/`), which
    /// mountinfo would show otherwise and so never match.
    public static func mountPoint(_ id: String, root: MachineRoot) -> String? {
        let parts = id.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard id.hasPrefix("/"), !parts.isEmpty, !parts.contains(where: { $0.isEmpty || $0 == ".." || $0 == "." }) else { return nil }
        let relative = parts.joined(separator: "/")
        return root.isSystemRoot ? "/" + relative : root.resolve(relative)
    }

    /// Filesystem types a sandbox may mount: ones that hold nothing of the host's.
    static let sandboxTypes: Set<String> = ["tmpfs", "ramfs"]

    /// Why a mount may not be made (before anything is unmounted), or nil: an unknown type, a bind
    /// source that does not exist, and in a sandbox anything that could reach the host's files (a
    /// filesystem type other than tmpfs or ramfs, a bind source outside the root).
    static func refusal(source: String, fsType: String, bind: Bool, root: MachineRoot) -> String? {
        if bind {
            guard let real = realPath(source) else { return "the bind source \(source) does not exist" }
            if !root.isSystemRoot, let rootReal = realPath(root.path), !(real == rootReal || real.hasPrefix(rootReal + "/")) {
                return "in a sandbox, a bind source must be under the root \(root.path) (\(source) is not): a sandbox never touches the host's files"
            }
            return nil
        }
        if !root.isSystemRoot, !sandboxTypes.contains(fsType) {
            return "in a sandbox, only \(sandboxTypes.sorted().joined(separator: " and ")) (or a bind mount from under the root) may be mounted, not \(fsType): a sandbox never touches the host"
        }
        let known = ((try? MachineRoot("/").read("proc/filesystems")) ?? "").split(separator: "\n").compactMap { $0.split(separator: "\t").last.map(String.init) }
        guard known.isEmpty || known.contains(fsType) else { return "the kernel knows no filesystem type \(fsType) (/proc/filesystems)" }
        return nil
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot, leaveAlone: Set<String>) -> [String: StatusReport] {
        var reports: [String: StatusReport] = [:]
        let table = MountTable.read()
        // Going: unmounted (a busy one stays, reported; the spec stays tearing down).
        for spec in releasing {
            guard let point = Self.mountPoint(spec.id, root: root), table.entry(at: point) != nil else { continue }
            // Every layer at the point (a copy stacked by someone else's mount over it included).
            for _ in 0..<16 where MountTable.read().entry(at: point) != nil {
                if umount2(point, 0) != 0 {
                    let error = MachineError(point, "cannot unmount", errno)
                    reports[spec.id] = Self.report(MountTable.read().entry(at: point), error: "\(error)")
                    break
                }
            }
        }
        for spec in running {
            guard let point = Self.mountPoint(spec.id, root: root) else {
                reports[spec.id] = StatusReport(fields: Self.fields(nil), error: "the id must be the mount point as an absolute path (e.g. /mnt/data), not \"\(spec.id)\"")
                continue
            }
            let current = table.entry(at: point)
            do {
                guard let source = spec.string("source"), !source.isEmpty, let fsType = spec.string("fsType"), !fsType.isEmpty else {
                    throw MachineError(point, message: "source and fsType are required")
                }
                let options = spec.strings("options") ?? []
                var flags: UInt = 0
                var data: [String] = []
                for option in options {
                    if let flag = Self.flags[option] {
                        flags |= flag
                    } else if !Self.defaults.contains(option) {
                        data.append(option)
                    }
                }
                let bind = flags & UInt(MS_BIND) != 0
                let wantedFlags = Set(options.filter { Self.shownFlags.contains($0) })
                if let current, Self.matches(current, fsType: fsType, bind: bind, flags: wantedFlags) {
                    reports[spec.id] = Self.report(current)
                    continue
                }
                if leaveAlone.contains(spec.id) {
                    reports[spec.id] = Self.report(current)
                    continue
                }
                // Checked before anything is unmounted: a mount that cannot be made never costs
                // the one that is there.
                if let refusal = Self.refusal(source: source, fsType: fsType, bind: bind, root: root) { throw MachineError(point, message: refusal) }
                try root.makeDirectories(point)
                var replaced = "not mounted"
                if let current {
                    // Mounted otherwise: unmount what is there (it is the declared point's).
                    replaced = "\(current.fsType) \(current.source) (\(current.options.joined(separator: ",")))"
                    guard umount2(point, 0) == 0 else { throw MachineError(point, "cannot unmount to mount again", errno) }
                    // Someone's mount over the declared one: gone, ours is uncovered.
                    if let uncovered = MountTable.read().entry(at: point), Self.matches(uncovered, fsType: fsType, bind: bind, flags: wantedFlags) {
                        reports[spec.id] = StatusReport(fields: Self.fields(uncovered), replaced: replaced)
                        continue
                    }
                }
                try Self.mount(source: source, at: point, fsType: fsType, flags: flags, data: data.joined(separator: ","), bind: bind)
                reports[spec.id] = StatusReport(fields: Self.fields(MountTable.read().entry(at: point)), replaced: replaced)
            } catch {
                reports[spec.id] = Self.report(current, error: "\(error)")
            }
        }
        return reports
    }

    static func mount(source: String, at point: String, fsType: String, flags: UInt, data: String, bind: Bool) throws(MachineError) {
        if bind {
            // A bind mount takes its flags in a remount.
            guard Glibc.mount(source, point, nil, flags & UInt(MS_BIND | MS_REC), nil) == 0 else { throw MachineError(point, "cannot bind-mount \(source) at it", errno) }
            let rest = flags & ~UInt(MS_BIND | MS_REC)
            if rest != 0, Glibc.mount(nil, point, nil, UInt(MS_REMOUNT | MS_BIND) | rest, nil) != 0 {
                let error = MachineError(point, "cannot apply the options to the bind mount", errno)
                _ = umount2(point, 0)
                throw error
            }
            return
        }
        let result = data.isEmpty ? Glibc.mount(source, point, fsType, flags, nil) : data.withCString { Glibc.mount(source, point, fsType, flags, $0) }
        guard result == 0 else { throw MachineError(point, "cannot mount \(fsType) \(source) at it", errno) }
    }

    /// Whether what is mounted is what is declared: the type (any for a bind mount) and the flags
    /// mountinfo shows.
    static func matches(_ entry: MountTable.Entry, fsType: String, bind: Bool, flags: Set<String>) -> Bool {
        guard bind || entry.fsType == fsType else { return false }
        let shown = Set(entry.mountOptions.filter { shownFlags.contains($0) })
        // relatime is the kernel's default: shown when not asked for.
        return flags.subtracting(["relatime"]) == shown.subtracting(["relatime"])
    }

    static func fields(_ entry: MountTable.Entry?) -> [(String, YAMLValue)] {
        [("source", .scalar(entry?.source ?? "")), ("fsType", .scalar(entry?.fsType ?? "")), ("options", .list(entry?.options ?? []))]
    }

    static func report(_ entry: MountTable.Entry?, error: String? = nil) -> StatusReport {
        StatusReport(fields: fields(entry), error: error ?? (entry == nil ? "not mounted" : nil))
    }
}

/// `/proc/self/mountinfo`: cosid's mount namespace's mounts.
public struct MountTable {
    /// Whether something is mounted at `point`.
    public static func isMounted(_ point: String) -> Bool { read().entry(at: point) != nil }

    struct Entry {
        var mountPoint: String
        var source: String
        var fsType: String
        /// Per-mount options (`rw,nosuid,relatime`).
        var mountOptions: [String]
        /// Per-mount then the filesystem's options, without repeats.
        var options: [String]
    }

    var entries: [Entry]

    static func read() -> MountTable {
        guard let text = try? MachineRoot("/").read("proc/self/mountinfo") else { return MountTable(entries: []) }
        return parse(text)
    }

    /// One line: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`.
    static func parse(_ text: String) -> MountTable {
        var entries: [Entry] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count >= 10, let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 3 < fields.count + 1, fields.count > dash + 2 else { continue }
            let mountOptions = fields[5].split(separator: ",").map(String.init)
            let superOptions = fields.count > dash + 3 ? fields[dash + 3].split(separator: ",").map(String.init) : []
            var options = mountOptions
            for option in superOptions where !options.contains(option) && option != "rw" && option != "ro" { options.append(option) }
            entries.append(Entry(mountPoint: unescape(fields[4]), source: unescape(fields[dash + 2]), fsType: fields[dash + 1], mountOptions: mountOptions, options: options))
        }
        return MountTable(entries: entries)
    }

    /// The topmost mount at `point`.
    func entry(at point: String) -> Entry? {
        entries.last { $0.mountPoint == point }
    }

    /// mountinfo's octal escapes (`\040` for a space).
    static func unescape(_ text: String) -> String {
        guard text.contains("\\") else { return text }
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3, let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Changes of cosid's mount table: poll(2) on `/proc/self/mountinfo` reports one (POLLPRI) after
/// every mount and unmount in the namespace.
final class MountChanges: MachineObserver {
    var changes: AsyncStream<Void> { loop.changes }
    private let descriptor: Int32
    private let loop: PollLoop

    init() throws(MachineError) {
        let descriptor = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw MachineError("/proc/self/mountinfo", "cannot open", errno) }
        self.descriptor = descriptor
        do {
            loop = try PollLoop(watching: descriptor, events: Int16(POLLPRI | POLLERR), name: "cosi-mount-changes") {
                // Reading it again to the end re-arms the event.
                var buffer = [UInt8](repeating: 0, count: 64 << 10)
                _ = lseek(descriptor, 0, SEEK_SET)
                while buffer.withUnsafeMutableBytes({ read(descriptor, $0.baseAddress, $0.count) }) > 0 {}
                return true
            }
        } catch {
            close(descriptor)
            throw error
        }
    }

    func refresh() {}

    func stop() {
        loop.stop()
        close(descriptor)
    }
}
