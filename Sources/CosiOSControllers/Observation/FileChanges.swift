#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NIOConcurrencyHelpers

/// Changes of a few files, from inotify(7) on their directories: what tells a file controller that
/// someone else rewrote, edited or removed a file it keeps.
///
/// A directory that does not exist yet is watched once ``refresh()`` finds it (the controller calls
/// it after each reconcile, when its writes have made the directories).
public final class FileChanges: MachineObserver {
    public var changes: AsyncStream<Void> { loop.changes }
    private let inotify: Int32
    private let loop: PollLoop
    /// Watched files by directory (absolute paths), and the directories by watch descriptor.
    private let files: [String: Set<String>]
    private let watches: NIOLockedValueBox<[Int32: String]>

    /// Watches `relativePaths` under `root`.
    public init(root: MachineRoot, files relativePaths: [String]) throws(MachineError) {
        var files: [String: Set<String>] = [:]
        for relative in relativePaths {
            let path = root.resolve(relative)
            let slash = path.lastIndex(of: "/") ?? path.startIndex
            files[String(path[..<slash]), default: []].insert(String(path[path.index(after: slash)...]))
        }
        self.files = files
        let watched = files
        let inotify = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard inotify >= 0 else { throw MachineError(root.path, "inotify_init1 failed", errno) }
        self.inotify = inotify
        let watches = NIOLockedValueBox([Int32: String]())
        self.watches = watches
        do {
            loop = try PollLoop(watching: inotify, events: Int16(POLLIN), name: "cosi-file-changes") {
                var buffer = [UInt8](repeating: 0, count: 16 << 10)
                var relevant = false
                while true {
                    let count = buffer.withUnsafeMutableBytes { read(inotify, $0.baseAddress, $0.count) }
                    guard count > 0 else { break }
                    relevant = buffer.withUnsafeBytes { Self.handle(UnsafeRawBufferPointer(rebasing: $0[..<count]), files: watched, watches: watches) } || relevant
                }
                return relevant
            }
        } catch {
            close(inotify)
            throw error
        }
        refresh()
    }

    /// Adds a watch for each directory that exists and is not watched yet (one removed and made
    /// again gets a new watch). A new watch rings once: a change made before it was in place is
    /// looked at too.
    public func refresh() {
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)
        let added = watches.withLockedValue { watches in
            var added = false
            for directory in files.keys where !watches.values.contains(directory) {
                let descriptor = inotify_add_watch(inotify, directory, mask)
                if descriptor >= 0 {
                    watches[descriptor] = directory
                    added = true
                }
            }
            return added
        }
        if added { loop.ring() }
    }

    public func stop() {
        guard stopped.withLockedValue({ state in defer { state = true }; return !state }) else { return }
        loop.stop()
        close(inotify)
    }

    private let stopped = NIOLockedValueBox(false)

    /// Whether the events name a watched file (or a watched directory went away).
    private static func handle(_ bytes: UnsafeRawBufferPointer, files: [String: Set<String>], watches: NIOLockedValueBox<[Int32: String]>) -> Bool {
        var offset = 0
        var relevant = false
        let header = MemoryLayout<inotify_event>.size
        while offset + header <= bytes.count {
            let descriptor = bytes.loadUnaligned(fromByteOffset: offset, as: Int32.self)
            let mask = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
            let length = Int(bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
            let nameBytes = bytes[(offset + header)..<min(bytes.count, offset + header + length)]
            let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
            offset += header + length
            if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                // Events were lost: look at everything.
                relevant = true
                continue
            }
            if mask & UInt32(IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF) != 0 {
                // The directory went (or moved): forget its watch; refresh() adds a new one.
                _ = watches.withLockedValue { $0.removeValue(forKey: descriptor) }
                relevant = true
                continue
            }
            guard let directory = watches.withLockedValue({ $0[descriptor] }) else { continue }
            if files[directory]?.contains(name) == true { relevant = true }
        }
        return relevant
    }
}
