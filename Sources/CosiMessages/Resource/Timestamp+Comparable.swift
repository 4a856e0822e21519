import CCosiProto
import CProtobufC
import CosiProtobuf
import NIOConcurrencyHelpers
import NIOCore

extension Timestamp: Comparable {
    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        (lhs.seconds, lhs.nanos) < (rhs.seconds, rhs.nanos)
    }
}
