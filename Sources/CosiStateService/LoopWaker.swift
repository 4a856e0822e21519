import CosiMessages
import CosiRPC
import CosiState
import NIOConcurrencyHelpers
import NIOCore

/// Wakes watches on one event loop: the engine's committer wakes every watcher of a change, and
/// a thousand `execute` calls (a lock and often a syscall each) would make it the bottleneck.
/// Wakes queue here under one lock; the first of a batch schedules one task on the loop, which
/// pumps every watch woken meanwhile.
final class LoopWaker: @unchecked Sendable {
    // @unchecked Sendable: `pending` and `scheduled` are guarded by `lock`.
    private let loop: any EventLoop
    private let lock = NIOLock()
    private var pending: [WatchStream] = []
    private var scheduled = false

    init(loop: any EventLoop) { self.loop = loop }

    func wake(_ watch: WatchStream) {
        let schedule = lock.withLock {
            pending.append(watch)
            if scheduled { return false }
            scheduled = true
            return true
        }
        if schedule { loop.execute { self.run() } }
    }

    private func run() {
        let woken = lock.withLock {
            scheduled = false
            defer { pending.removeAll(keepingCapacity: pending.count <= 1024) }
            return pending
        }
        for watch in woken { watch.pump() }
    }
}

/// The ``LoopWaker`` of each event loop.
final class LoopWakers: Sendable {
    private let wakers = NIOLockedValueBox([ObjectIdentifier: LoopWaker]())

    init() {}

    func waker(for loop: any EventLoop) -> LoopWaker {
        wakers.withLockedValue { wakers in
            if let waker = wakers[ObjectIdentifier(loop)] { return waker }
            let waker = LoopWaker(loop: loop)
            wakers[ObjectIdentifier(loop)] = waker
            return waker
        }
    }
}
