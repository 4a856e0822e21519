/// Bookmarks: opaque to clients; ours are a format byte (1) and the revision as 8 big-endian bytes.
public enum Bookmark {
    static let format: UInt8 = 1

    public static func encode(_ revision: UInt64) -> [UInt8] {
        [format] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: revision >> (UInt64($0) * 8)) }
    }

    /// The revision in a bookmark, or nil when it is not one of ours.
    public static func decode(_ bytes: [UInt8]) -> UInt64? {
        guard bytes.count == 9, bytes[0] == format else { return nil }
        return bytes[1...].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}
