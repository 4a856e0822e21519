import CosiMessages
import NIOConcurrencyHelpers
import NIOCore

/// Holds a value until one taker moves it out. The value is never touched by two threads: it is
/// handed over once, under the lock, like a `sending` parameter.
final class TakeOnce<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is read and cleared only under `lock`, exactly once.
    private let lock = NIOLock()
    private var value: Value?

    init(_ value: Value) { self.value = value }

    func take() -> Value? {
        lock.withLock {
            defer { value = nil }
            return value
        }
    }
}
