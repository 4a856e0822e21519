#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address: its family and bytes, written in the canonical form inet_ntop(3)
/// gives (`10.0.0.1`, `fd00::1`).
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// AF_INET or AF_INET6.
    public let family: Int32
    public let bytes: [UInt8]

    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if !text.contains(":"), inet_pton(AF_INET, text, &v4) == 1 {
            self.init(family: AF_INET, bytes: withUnsafeBytes(of: &v4) { Array($0) })
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(family: AF_INET6, bytes: withUnsafeBytes(of: &v6) { Array($0) })
        } else {
            return nil
        }
    }

    public init(family: Int32, bytes: [UInt8]) {
        self.family = family
        self.bytes = bytes
    }

    /// The all-zero address of a family (`0.0.0.0`, `::`).
    public static func zero(_ family: Int32) -> IPAddress {
        IPAddress(family: family, bytes: [UInt8](repeating: 0, count: family == AF_INET ? 4 : 16))
    }

    public var bitCount: Int { bytes.count * 8 }
    /// `inet` or `inet6`, as ip(8) names the families.
    public var familyName: String { family == AF_INET ? "inet" : "inet6" }

    public var description: String {
        guard bytes.count == (family == AF_INET ? 4 : 16) else { return "?" }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let written = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        guard written != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The address with every bit after the first `length` cleared.
    public func masked(_ length: Int) -> IPAddress {
        var result = bytes
        for index in result.indices {
            let kept = max(0, min(8, length - index * 8))
            result[index] &= kept == 8 ? 0xFF : UInt8(truncatingIfNeeded: 0xFF << (8 - kept))
        }
        return IPAddress(family: family, bytes: result)
    }
}

/// An address with a prefix length, in CIDR form (`10.99.0.1/24`, `::/0`).
public struct IPPrefix: Sendable, Hashable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    public init(address: IPAddress, length: Int) {
        self.address = address
        self.length = length
    }

    /// `ADDRESS/LENGTH` (a length within the family's bits); nil otherwise.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPAddress(String(parts[0])), let length = Int(parts[1]), parts[1].allSatisfy(\.isNumber),
            length >= 0, length <= address.bitCount
        else { return nil }
        self.init(address: address, length: length)
    }

    public var description: String { "\(address)/\(length)" }

    /// Whether the address has no bit set after the prefix (a network, as a route's destination is).
    public var isNetwork: Bool { address.masked(length) == address }
}
