import CosiMessages
import DequeModule
import NIOConcurrencyHelpers

/// Seconds since the Unix epoch.
func wallClockSeconds() -> Int64 {
    now().seconds
}

/// The current time as a protobuf timestamp.
func now() -> Timestamp {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Timestamp(seconds: Int64(spec.tv_sec), nanos: Int32(spec.tv_nsec))
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
