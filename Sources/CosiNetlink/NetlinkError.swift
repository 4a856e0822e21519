#if canImport(Glibc)
import Glibc
#endif

/// A netlink operation that failed: what was attempted, the kernel's errno and, when the kernel
/// said more (extended acknowledgements), its message.
public struct NetlinkError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: Sendable, Equatable {
        /// The kernel refused the request (`errno` says why).
        case refused
        /// The socket or the namespace could not be opened or used.
        case unavailable
        /// An argument that cannot become a request (an address that does not parse).
        case invalidArgument
    }

    public var code: Code
    /// What was attempted: `add address 10.0.0.1/24 to veth0`.
    public var operation: String
    /// The kernel's error number, 0 when there is none.
    public var errno: Int32
    /// The kernel's extended acknowledgement message, when it sent one.
    public var detail: String?

    public init(_ code: Code, _ operation: String, errno: Int32 = 0, detail: String? = nil) {
        self.code = code
        self.operation = operation
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        var text = "cannot \(operation)"
        if errno != 0 { text += ": " + String(cString: strerror(errno)) }
        if let detail, !detail.isEmpty { text += " (\(detail))" }
        return text
    }
}
