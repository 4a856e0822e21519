import CosiMessages
import CosiRPC
import CosiState
import NIOConcurrencyHelpers
import NIOCore

/// A watch served from its connection's event loop, without a task: the engine's inbox calls it
/// back when events arrive, it polls them on the loop as encoded responses (a change is encoded
/// once for every watcher that receives it in the same form: a one-event response is the same
/// bytes for all of them) and sends them through the ``ServerStream``.
///
/// Flow control: it sends the events it has, then polls again only once the last message has
/// left the stream's queue (`whenSent`). Meanwhile new events wait in the watch's inbox; a
/// watcher too slow for the inbox's bound reads them back from the log, so nothing is lost and
/// nothing grows without bound.
///
/// An idle watch is this object, its poller and inbox, and the call's entry in the connection.
final class WatchStream: @unchecked Sendable {
    // @unchecked Sendable: every member is used on `stream.eventLoop` only; the one callback
    // from another thread (`wake`) hops there first.
    private let stream: ServerStream
    private let poller: WatchPoller
    private let aggregated: Bool
    /// Messages sent whose `whenSent` has not run yet.
    private var unsent = 0
    private var reading = false
    private var pumping = false
    private var ended = false

    private let waker: LoopWaker
    /// Made once, not per poll (a closure per delivery would be an allocation per delivery).
    /// It keeps this watch alive while armed; ``end()`` lets go of it.
    private var wakeUp: (@Sendable () -> Void)?

    private init(stream: ServerStream, poller: WatchPoller, aggregated: Bool, waker: LoopWaker) {
        self.stream = stream
        self.poller = poller
        self.aggregated = aggregated
        self.waker = waker
    }

    private var whenReady: @Sendable () -> Void {
        if let wakeUp { return wakeUp }
        let made: @Sendable () -> Void = { [self] in waker.wake(self) }
        wakeUp = made
        return made
    }

    /// Sets the watch up and starts it on the stream's loop: the empty response ("ready") once
    /// setup succeeded, then the events; a setup error ends the call with its status.
    static func start(_ request: WatchRequest, engine: StateEngine, stream: ServerStream, wakers: LoopWakers) {
        let loop = stream.eventLoop
        let waker = wakers.waker(for: loop)
        engine.watch(request) { result in
            // The completion runs here or on the engine's reader thread (tail_events).
            if loop.inEventLoop {
                begin(result, request: request, stream: stream, waker: waker)
            } else {
                loop.execute { begin(result, request: request, stream: stream, waker: waker) }
            }
        }
    }

    private static func begin(_ result: Result<StateWatch, StateError>, request: WatchRequest, stream: ServerStream, waker: LoopWaker) {
        let watch: StateWatch
        switch result {
        case .success(let made): watch = made
        case .failure(let error): return stream.finish(StateService.rpcError(error))
        }
        guard stream.isOpen else { return watch.close() }
        let pump = WatchStream(stream: stream, poller: watch.makePoller(), aggregated: request.options?.aggregated ?? false, waker: waker)
        stream.addEndHook { _ in pump.end() }
        pump.send([WatchResponse().serializedBytes()])
        pump.pump()
    }

    /// Delivers everything ready, until the watch must wait for events, for the client, or for
    /// a log read.
    func pump() {
        guard !pumping else { return }
        pumping = true
        defer { pumping = false }
        while !ended, unsent == 0, !reading {
            let poll: WatchPoller.ResponsePoll
            do {
                poll = try poller.pollResponses(aggregated: aggregated, whenReady: whenReady)
            } catch {
                return stream.finish(StateService.rpcError(error))
            }
            switch poll {
            case .responses(let responses):
                send(responses)
            case .waiting:
                return
            case .mustRead(let page):
                reading = true
                poller.readLog(page) { [self] result in
                    stream.eventLoop.execute { self.absorb(result) }
                }
            case .finished:
                return stream.finish(.ok)
            }
        }
    }

    private func absorb(_ result: Result<WatchPoller.LogResult, StateError>) {
        reading = false
        guard !ended else { return }
        switch result {
        case .success(let page):
            send(poller.absorbResponses(page, aggregated: aggregated))
            pump()
        case .failure(let error):
            stream.finish(StateService.rpcError(error))
        }
    }

    /// Sends messages; the watch goes on once the last has left the stream's queue.
    private func send(_ messages: [ByteBuffer]) {
        guard let last = messages.last else { return }
        for message in messages.dropLast() { stream.send(message) }
        unsent += 1
        stream.send(last) { [self] in
            unsent -= 1
            pump()
        }
    }

    /// The call ended (finished here, cancelled, past its deadline, shut down, disconnected).
    private func end() {
        ended = true
        poller.close()
        wakeUp = nil
    }
}
