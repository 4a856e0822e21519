import CosiMessages
import DequeModule
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOPosix

/// A write waiting for the committer.
struct PendingWrite: Sendable {
    let operation: @Sendable (inout ResourceStore, Timestamp) throws(StateError) -> WriteResult
    /// Runs on the committer thread with the outcome.
    let complete: @Sendable (Result<WriteResult, StateError>) -> Void
}

/// The single writer thread. Writes that arrive while a group is being committed form the next
/// group, so durability costs one fsync per group, not per write.
final class Committer: @unchecked Sendable {
    // @unchecked Sendable: `pending` and `stopped` are guarded by `condition`.
    private let condition = NSCondition()
    private var pending = Deque<PendingWrite>()
    private var stopped = false
    private let maximumGroup: Int
    private let maximumPending: Int

    init(maximumGroup: Int, maximumPending: Int) {
        self.maximumGroup = maximumGroup
        self.maximumPending = maximumPending
    }

    /// Signalled when the thread's loop has returned.
    private let ended = DispatchSemaphore(value: 0)
    private var joined = false

    func start(_ engine: StateEngine) {
        let thread = Thread { [self] in
            self.run(engine)
            self.ended.signal()
        }
        thread.name = "cosi-committer"
        thread.start()
    }

    func submit(_ write: PendingWrite) {
        condition.lock()
        if stopped {
            condition.unlock()
            write.complete(.failure(StateError(.unavailable, "the state engine is shut down")))
            return
        }
        guard pending.count < maximumPending else {
            let waiting = pending.count
            condition.unlock()
            StateMetrics.overloaded.increment()
            write.complete(.failure(StateError(.overloaded, "\(waiting) writes are waiting to be committed: this one was refused; try again")))
            return
        }
        pending.append(write)
        condition.signal()
        condition.unlock()
    }

    /// Stops the thread once the queued writes are done and waits for it; false when it was
    /// stopped before (by another call).
    func stopAndJoin() -> Bool {
        condition.lock()
        let first = !joined
        joined = true
        stopped = true
        condition.signal()
        condition.unlock()
        if first { ended.wait() }
        return first
    }

    private func run(_ engine: StateEngine) {
        var sinceCompaction = 0
        while true {
            condition.lock()
            while pending.isEmpty && !stopped { condition.wait() }
            if pending.isEmpty && stopped {
                condition.unlock()
                return
            }
            let count = min(pending.count, maximumGroup)
            let batch = Array(pending.prefix(count))
            pending.removeFirst(count) // O(count) on a Deque: it takes from the front in place
            condition.unlock()
            sinceCompaction += engine.process(batch)
            if sinceCompaction >= engine.configuration.compactionInterval {
                // Twice what came in: the log shrinks back to its retention under any rate.
                engine.compact(limit: max(10_000, 2 * sinceCompaction))
                sinceCompaction = 0
            }
        }
    }
}
