#if canImport(Glibc)
import Glibc
#endif
import CMnl
import Foundation
import NIOConcurrencyHelpers

/// The network namespace netlink sockets are opened in: cosid's own, or the one a namespace file
/// names (`/run/netns/NAME`, `/proc/PID/ns/net`). A socket stays in the namespace it was opened
/// in, so only the opening happens there, on a thread of its own that enters it with setns(2);
/// cosid's other threads and its listeners stay where they are.
public struct NetworkNamespace: Sendable, Equatable {
    /// The namespace file, or nil for cosid's own namespace.
    public let path: String?
    /// The kernel's name of the namespace (`net:[4026531840]`), as /proc/PID/ns/net reads.
    public let identity: String?
    /// The namespace file, held open from the check on: every socket is opened in the namespace
    /// that was checked, even if the name is later given to another (`ip netns del`, `add`).
    private let file: NamespaceFile?

    /// cosid's own network namespace.
    public static var own: NetworkNamespace {
        NetworkNamespace(path: nil, identity: Self.link("/proc/self/ns/net"), file: nil)
    }

    private init(path: String?, identity: String?, file: NamespaceFile?) {
        self.path = path
        self.identity = identity
        self.file = file
    }

    public static func == (lhs: NetworkNamespace, rhs: NetworkNamespace) -> Bool {
        lhs.path == rhs.path && lhs.identity == rhs.identity
    }

    /// The namespace `path` names, checked: it exists and is a network namespace.
    ///
    /// - Throws: ``NetlinkError`` naming the path when it does not exist, cannot be opened, is
    ///   not a namespace file, or is a namespace of another kind.
    public init(path: String) throws(NetlinkError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            let error = errno
            throw NetlinkError(.unavailable, error == ENOENT ? "use --netns \(path): it does not exist" : "open the network namespace \(path)", errno: error == ENOENT ? 0 : error)
        }
        let file = NamespaceFile(descriptor)
        let type = cosi_ns_get_nstype(descriptor)
        guard type >= 0 else {
            throw NetlinkError(.invalidArgument, "use --netns \(path): it is not a namespace file (such as /run/netns/NAME or /proc/PID/ns/net)")
        }
        guard type == COSI_CLONE_NEWNET else {
            throw NetlinkError(.invalidArgument, "use --netns \(path): it is a namespace, but not a network namespace")
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw NetlinkError(.unavailable, "stat the network namespace \(path)", errno: errno) }
        self.init(path: path, identity: "net:[\(status.st_ino)]", file: file)
    }

    /// Whether this namespace is the host's by controllers.md's sandbox rule: equal to the network
    /// namespace of cosid's parent or of PID 1 (where that can be read), or not comparable.
    public var isHosts: Bool {
        guard let identity, let parent = Self.link("/proc/\(getppid())/ns/net") else { return true }
        if identity == parent { return true }
        if let first = Self.link("/proc/1/ns/net"), first == identity { return true }
        return false
    }

    /// Runs `body` in this namespace: at once for cosid's own, else on a thread that enters the
    /// namespace first and leaves it after.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws(NetlinkError) -> T) throws(NetlinkError) -> T {
        guard let path, let file else { return try body() }
        let result = NIOLockedValueBox<Result<T, NetlinkError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            let original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
            defer {
                // This thread ends here either way; it goes back for tidiness.
                if original >= 0 {
                    _ = cosi_setns_net(original)
                    close(original)
                }
            }
            guard cosi_setns_net(file.descriptor) == 0 else {
                result.withLockedValue { $0 = .failure(NetlinkError(.unavailable, "enter the network namespace \(path)", errno: errno)) }
                return
            }
            let outcome: Result<T, NetlinkError>
            do throws(NetlinkError) { outcome = .success(try body()) } catch { outcome = .failure(error) }
            result.withLockedValue { $0 = outcome }
        }
        thread.name = "cosi-netns"
        thread.start()
        done.wait()
        switch result.withLockedValue({ $0 }) {
        case .success(let value)?: return value
        case .failure(let error)?: throw error
        case nil: throw NetlinkError(.unavailable, "enter the network namespace \(path)")
        }
    }

    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An open namespace file (closed when this goes).
final class NamespaceFile: Sendable {
    let descriptor: Int32
    init(_ descriptor: Int32) { self.descriptor = descriptor }
    deinit { close(descriptor) }
}
