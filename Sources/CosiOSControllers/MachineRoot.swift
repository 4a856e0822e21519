#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the built-in controllers act: `/` on a real machine, or a sandbox directory. Every path
/// they touch is relative to it.
///
/// Files are replaced atomically (a temporary file in the same directory, fsync, rename over the
/// old one, fsync of the directory), and only when their content must change, so a reader never
/// sees half a file and a reconcile that changes nothing leaves every mtime alone. Kernel
/// parameters (`proc/sys/...`) are written in place, as the kernel wants: they cannot be renamed
/// into, and each write of one is atomic.
public struct MachineRoot: Sendable {
    public let path: String

    public init(_ path: String) {
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    /// Whether this is the real machine's root.
    public var isSystemRoot: Bool { path == "/" }

    /// The absolute path of `relative` (e.g. `etc/hostname`) under the root.
    public func resolve(_ relative: String) -> String {
        (path == "/" ? "" : path) + "/" + relative
    }

    /// A file's content, or nil when it does not exist; throws other failures.
    public func read(_ relative: String) throws(MachineError) -> String? {
        let file = resolve(relative)
        guard let handle = fopen(file, "r") else {
            if errno == ENOENT { return nil }
            throw MachineError(file, "cannot read", errno)
        }
        defer { fclose(handle) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, handle)
            if count > 0 { bytes += buffer[..<count] }
            if count < buffer.count {
                if ferror(handle) != 0 { throw MachineError(file, "cannot read", errno) }
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Replaces a file atomically when its content differs; creates missing directories. Returns
    /// whether it wrote.
    @discardableResult
    public func replace(_ relative: String, with content: String, mode: mode_t = 0o644) throws(MachineError) -> Bool {
        if try read(relative) == content { return false }
        let file = resolve(relative)
        let directory = String(file[..<(file.lastIndex(of: "/") ?? file.startIndex)])
        try makeDirectories(directory.isEmpty ? "/" : directory)
        let temporary = directory + "/.cosi-" + String(UInt64.random(in: 0 ... .max), radix: 16) + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw MachineError(file, "cannot create a temporary file next to it", errno) }
        // The mode is the one asked for, whatever the process's umask (/etc/hosts must stay readable).
        fchmod(fd, mode)
        do throws(MachineError) {
            try writeAll(fd, content, file)
            guard fsync(fd) == 0 else { throw MachineError(file, "cannot fsync", errno) }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, file) == 0 else {
            let error = MachineError(file, "cannot rename the new content into place", errno)
            unlink(temporary)
            throw error
        }
        // The rename is durable once the directory is.
        let directoryFD = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
        return true
    }

    /// Writes an existing file in place (kernel parameters). A missing file is an error: a
    /// parameter that does not exist is not created.
    public func writeInPlace(_ relative: String, _ content: String) throws(MachineError) {
        let file = resolve(relative)
        let fd = open(file, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else {
            throw MachineError(file, errno == ENOENT ? "does not exist" : "cannot be written", errno)
        }
        defer { close(fd) }
        try writeAll(fd, content, file)
    }

    private func writeAll(_ fd: Int32, _ content: String, _ file: String) throws(MachineError) {
        let bytes = Array(content.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { systemWrite(fd, $0.baseAddress, $0.count) }
            guard written > 0 else { throw MachineError(file, "cannot write", errno) }
            offset += written
        }
    }

    /// `mkdir -p`.
    public func makeDirectories(_ absolute: String) throws(MachineError) {
        var current = ""
        for component in absolute.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0, errno != EEXIST {
                throw MachineError(current, "cannot create the directory", errno)
            }
        }
    }
}

/// A failure to act on the machine: the file, what could not be done, and the system's reason.
public struct MachineError: Error, Hashable, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String

    init(_ path: String, _ what: String, _ code: Int32) {
        self.path = path
        self.message = "\(path): \(what) (\(String(cString: strerror(code))))"
    }

    init(_ path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { message }
}

#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif
