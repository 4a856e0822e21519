import NIOConcurrencyHelpers

/// Sleeps that end when the test says so: ``sleep`` records what it was asked for and suspends
/// until ``fireAll()``; a cancelled sleep throws `CancellationError` at once. For timers under
/// test (a controller's resync and retries) without waiting for real time.
public final class ManualTimers: Sendable {
    private struct State {
        var waiting: [Int: CheckedContinuation<Void, any Error>] = [:]
        var asked: [Duration] = []
        var next = 0
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// What every sleep asked for, in order.
    public var asked: [Duration] { state.withLockedValue { $0.asked } }
    /// How many sleeps wait now.
    public var waiting: Int { state.withLockedValue { $0.waiting.count } }

    /// Ends every waiting sleep (as if its time had come).
    public func fireAll() {
        let woken = state.withLockedValue { state in
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for continuation in woken { continuation.resume() }
    }

    /// The sleep to inject.
    public var sleep: @Sendable (Duration) async throws -> Void {
        { [self] duration in
            let id = state.withLockedValue { state in
                defer { state.next += 1 }
                state.asked.append(duration)
                return state.next
            }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let cancelled = state.withLockedValue { state -> Bool in
                        if Task.isCancelled { return true }
                        state.waiting[id] = continuation
                        return false
                    }
                    if cancelled { continuation.resume(throwing: CancellationError()) }
                }
            } onCancel: {
                let continuation = state.withLockedValue { $0.waiting.removeValue(forKey: id) }
                continuation?.resume(throwing: CancellationError())
            }
        }
    }
}
