import CosiMessages
import NIOConcurrencyHelpers
import NIOCore

/// The events of one watch, pulled by a consumer that is not a task: it polls, and when there is
/// nothing, the watch calls it back once something arrives; when the watch must catch up from
/// the log, the consumer asks for the read and gets the page back through a callback.
///
/// Not thread-safe: one consumer (one event loop) polls; callbacks come from other threads and
/// must be brought back to that consumer before it polls again.
public final class WatchPoller {
    let session: WatchSession

    init(session: WatchSession) { self.session = session }

    /// What ``poll(whenReady:)`` found.
    public enum Poll {
        /// Events to deliver (poll again after delivering them).
        case events([Event])
        /// Nothing yet: `whenReady` will be called once, from another thread, when there is.
        case waiting
        /// The watcher must read the log: call ``readLog(_:completion:)`` with this page.
        case mustRead(LogRead)
        /// The watch is over (it was closed).
        case finished
    }

    /// What ``pollResponses(aggregated:whenReady:)`` found.
    public enum ResponsePoll {
        /// Encoded `WatchResponse` messages to send (poll again after sending them).
        case responses([ByteBuffer])
        /// Nothing yet: `whenReady` will be called once, from another thread, when there is.
        case waiting
        /// The watcher must read the log: call ``readLog(_:completion:)`` with this page.
        case mustRead(LogRead)
        /// The watch is over (it was closed).
        case finished
    }

    /// A page of the log to read.
    public struct LogRead: Sendable {
        let page: WatchSession.LogPage
    }

    /// The result of a log read, to hand back to ``absorb(_:)``.
    public struct LogResult: Sendable {
        let page: WatchSession.LogPage
        let events: [StateEvent]
    }

    /// The next batch, or what the consumer must do to get it. Throws the watch's terminal
    /// error (`historyLost`).
    public func poll(whenReady: @escaping @Sendable () -> Void) throws(StateError) -> Poll {
        switch try nextStep(whenReady) {
        case .events(let events): .events(events)
        case .deliveries(let deliveries): .events(deliveries.map(\.value))
        case .read(let page): .mustRead(LogRead(page: page))
        case .wait: .waiting
        case .end: .finished
        }
    }

    /// Like ``poll(whenReady:)``, with the events already encoded as `WatchResponse` messages:
    /// one per event, or one for the whole batch when `aggregated`. A change is encoded once
    /// for every watcher that receives it in the same form, so a message for one event is the
    /// same shared bytes for all of them.
    public func pollResponses(aggregated: Bool, whenReady: @escaping @Sendable () -> Void) throws(StateError) -> ResponsePoll {
        switch try nextStep(whenReady) {
        case .events(let events):
            return .responses(aggregated ? [encodeWatchResponse(events)] : events.map { encodeWatchResponse([$0]) })
        case .deliveries(let deliveries):
            return .responses(Self.responses(deliveries, aggregated: aggregated))
        case .read(let page): return .mustRead(LogRead(page: page))
        case .wait: return .waiting
        case .end: return .finished
        }
    }

    /// Takes a step; `.wait` comes back only once `whenReady` is armed.
    private func nextStep(_ whenReady: @escaping @Sendable () -> Void) throws(StateError) -> WatchSession.Step {
        while true {
            let step = try session.step()
            guard case .wait = step else { return step }
            if session.inbox.arm(.callback(whenReady)) { return .wait }
        }
    }

    static func responses(_ deliveries: [Delivery], aggregated: Bool) -> [ByteBuffer] {
        guard aggregated, deliveries.count > 1 else { return deliveries.map(\.responseBytes) }
        let events = deliveries.map(\.eventBytes)
        // Sized once: each event plus its key and length (at most 11 bytes).
        var buffer = ByteBufferAllocator().buffer(capacity: events.reduce(0) { $0 + $1.readableBytes + 11 })
        for event in events { appendEventField(event, to: &buffer) }
        return [buffer]
    }

    /// Reads a page of the log on the engine's reader thread; `completion` runs there.
    public func readLog(_ read: LogRead, completion: @escaping @Sendable (Result<LogResult, StateError>) -> Void) {
        let page = read.page
        session.engine.read(page.read) { result in completion(result.map { LogResult(page: page, events: $0) }) }
    }

    /// Takes in a page read from the log: the events of it this watcher delivers (possibly
    /// none: poll again).
    public func absorb(_ result: LogResult) -> [Event] {
        session.absorb(result.events, of: result.page).map(\.value)
    }

    /// Takes in a page read from the log, encoded like ``pollResponses(aggregated:whenReady:)``
    /// (possibly nothing: poll again).
    public func absorbResponses(_ result: LogResult, aggregated: Bool) -> [ByteBuffer] {
        Self.responses(session.absorb(result.events, of: result.page), aggregated: aggregated)
    }

    /// Ends the watch.
    public func close() { session.engine.unregister(session.inbox) }
}
