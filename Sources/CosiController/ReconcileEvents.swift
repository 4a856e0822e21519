import NIOConcurrencyHelpers

/// One wake-up of a controller: something it depends on may have changed. It carries nothing:
/// the controller reads what it needs.
public struct ReconcileEvent: Hashable, Sendable {
    public init() {}
}

/// Hears the timing of a ``ReconcileQueue``, for metrics (the runtime's observer records them).
public protocol ReconcileObserver: Sendable {
    /// An event was handed to the controller `waited` after it was queued (zero when the
    /// controller was waiting for it).
    func delivered(waited: Duration)
    /// The controller asked for its next event `took` after it was handed the previous one: how
    /// long that reconcile ran.
    func reconciled(took: Duration)
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
        /// When the pending event was queued.
        var pendingSince: ContinuousClock.Instant?
        /// When the last event was handed over (its reconcile runs until the next `next()`).
        var deliveredAt: ContinuousClock.Instant?
    }

    private let state = NIOLockedValueBox(State())
    private let observer: (any ReconcileObserver)?

    public init(observer: (any ReconcileObserver)? = nil) {
        self.observer = observer
    }

    /// Queues an event, unless one is pending already.
    public func signal() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Bool, Never>? in
            guard !state.finished else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                state.delivered += 1
                if observer != nil { state.deliveredAt = .now }
                return waiter
            }
            if !state.pending, observer != nil { state.pendingSince = .now }
            state.pending = true
            return nil
        }
        if waiter != nil { observer?.delivered(waited: .zero) }
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

    /// Whether the controller waits for its next event with none pending: the reconcile of the
    /// last one has finished (what tests wait for before asserting that nothing changed).
    public var isWaiting: Bool { state.withLockedValue { $0.waiter != nil && !$0.pending } }

    /// Whether an event is pending (signalled and not yet taken).
    public var isPending: Bool { state.withLockedValue { $0.pending } }

    /// The events, for one consumer at a time; the sequence ends when the queue is finished or the
    /// consuming task is cancelled.
    public var events: ReconcileEvents { ReconcileEvents(queue: self) }

    /// Waits for the next event; false when finished or cancelled.
    func next() async -> Bool {
        if let observer {
            let started = state.withLockedValue { state -> ContinuousClock.Instant? in
                defer { state.deliveredAt = nil }
                return state.deliveredAt
            }
            if let started { observer.reconciled(took: .now - started) }
        }
        if Task.isCancelled { return false }
        let cancelled = NIOLockedValueBox(false)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                var waited: Duration?
                let immediate = state.withLockedValue { state -> Bool? in
                    if state.finished || cancelled.withLockedValue({ $0 }) { return false }
                    if state.pending {
                        state.pending = false
                        state.delivered += 1
                        if observer != nil {
                            let now = ContinuousClock.now
                            waited = state.pendingSince.map { now - $0 } ?? .zero
                            state.deliveredAt = now
                        }
                        return true
                    }
                    precondition(state.waiter == nil, "a ReconcileQueue has one consumer at a time")
                    state.waiter = continuation
                    return nil
                }
                if let waited { observer?.delivered(waited: waited) }
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
