#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NIOConcurrencyHelpers

/// What tells a controller that the objects it keeps may have changed: one source of events per
/// controller (inotify for files, `/proc/self/mountinfo` for mounts; netlink fits the same shape).
public protocol MachineObserver: Sendable {
    /// Rings when something kept may have changed (coalesced: at most one pending ring).
    var changes: AsyncStream<Void> { get }
    /// Called after each reconcile (a watch for a directory the reconcile made, say).
    func refresh()
    /// Stops the source and waits for it; `changes` ends.
    func stop()
}

/// A thread blocked in poll(2) on one descriptor and a wake-up pipe: when the descriptor is
/// ready, `handle` reads what it says and tells whether to ring. ``stop()`` wakes the thread,
/// joins it and closes the pipe (the descriptor is its owner's).
final class PollLoop: Sendable {
    let changes: AsyncStream<Void>
    private let bell: AsyncStream<Void>.Continuation
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let stopped = NIOLockedValueBox(false)
    private let exited = DispatchSemaphore(value: 0)

    init(watching descriptor: Int32, events: Int16, name: String, handle: @escaping @Sendable () -> Bool) throws(MachineError) {
        (changes, bell) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else { throw MachineError(name, "cannot make a pipe", errno) }
        for fd in pipeFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        (wakeRead, wakeWrite) = (pipeFDs[0], pipeFDs[1])
        let (bell, wakeRead, exited) = (self.bell, self.wakeRead, self.exited)
        let thread = Thread {
            var descriptors = [pollfd(fd: descriptor, events: events, revents: 0), pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            while true {
                let ready = poll(&descriptors, 2, -1)
                if ready < 0 && errno == EINTR { continue }
                guard ready > 0, descriptors[1].revents == 0 else { break }
                if handle() { bell.yield() }
            }
            exited.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Rings without an event (a check its owner wants made).
    func ring() { bell.yield() }

    func stop() {
        guard stopped.withLockedValue({ state in defer { state = true }; return !state }) else { return }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        exited.wait()
        close(wakeRead)
        close(wakeWrite)
        bell.finish()
    }
}
