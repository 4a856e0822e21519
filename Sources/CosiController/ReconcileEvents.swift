import NIOConcurrencyHelpers

/// One wake-up of a controller: something it depends on may have changed. It carries nothing:
/// the controller reads what it needs.
public struct ReconcileEvent: Hashable, Sendable {
    public init() {}
}

/// A controller's pending reconcile events, coalesced: at most one is pending, so a burst of
/// changes during one reconcile leads to exactly one more wake-up.
///
/// Producers call ``signal()`` from anywhere; the controller iterates ``events`` (one consumer
/// at a time). ``finish()`` ends the sequence for good.
public final class ReconcileQueue: Sendable {
    private struct State {
        var pending = false
        var finished = false
        var waiter: CheckedContinuation<Bool, Never>?
        /// Wake-ups delivered, for tests and metrics.
        var delivered = 0
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Queues an event, unless one is pending already.
    public func signal() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Bool, Never>? in
            guard !state.finished else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                state.delivered += 1
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume(returning: true)
    }

    /// Ends the events: the consumer's loop ends.
    public func finish() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Bool, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: false)
    }

    /// How many wake-ups were delivered so far.
    public var deliveredCount: Int { state.withLockedValue { $0.delivered } }

    /// Whether an event is pending (signalled and not yet taken).
    public var isPending: Bool { state.withLockedValue { $0.pending } }

    /// The events, for one consumer at a time; the sequence ends when the queue is finished or the
    /// consuming task is cancelled.
    public var events: ReconcileEvents { ReconcileEvents(queue: self) }

    /// Waits for the next event; false when finished or cancelled.
    func next() async -> Bool {
        if Task.isCancelled { return false }
        let cancelled = NIOLockedValueBox(false)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let immediate = state.withLockedValue { state -> Bool? in
                    if state.finished || cancelled.withLockedValue({ $0 }) { return false }
                    if state.pending {
                        state.pending = false
                        state.delivered += 1
                        return true
                    }
                    precondition(state.waiter == nil, "a ReconcileQueue has one consumer at a time")
                    state.waiter = continuation
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state -> CheckedContinuation<Bool, Never>? in
                cancelled.withLockedValue { $0 = true }
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: false)
        }
    }
}

/// A controller's reconcile events (see ``ReconcileQueue``).
public struct ReconcileEvents: AsyncSequence, Sendable {
    public typealias Element = ReconcileEvent
    let queue: ReconcileQueue

    public struct AsyncIterator: AsyncIteratorProtocol {
        let queue: ReconcileQueue
        public mutating func next() async -> ReconcileEvent? {
            await queue.next() ? ReconcileEvent() : nil
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(queue: queue) }
}
