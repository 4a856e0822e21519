import CosiMessages
import CosiRPC
import DequeModule
import NIOConcurrencyHelpers

/// An event of a ``FleetWatch``: which node it comes from, and the node's event (with the
/// node's own bookmark).
public struct FleetEvent: Sendable {
    public var node: CosiNode
    public var event: Event
}

/// How one node's stream of a ``FleetWatch`` stands.
public enum FleetNodeState: Sendable, CustomStringConvertible {
    /// Not connected yet: the first connection is being made.
    case connecting
    /// The watch call is established (or established again).
    case connected
    /// The node could not be reached, or its connection dropped: it is tried again with
    /// backoff, and resumes from its last bookmark. The error is the last one seen.
    case reconnecting(RPCError)
    /// The node's watch ended with an error it cannot recover from (refused, or its history
    /// was compacted past the last bookmark); the other nodes go on.
    case failed(any Error)
    /// The node's watch ended (the server ended the call, or the watch was stopped).
    case ended

    var kind: Int {
        switch self {
        case .connecting: 0
        case .connected: 1
        case .reconnecting: 2
        case .failed: 3
        case .ended: 4
        }
    }

    public var description: String {
        switch self {
        case .connecting: "connecting"
        case .connected: "connected"
        case .reconnecting(let error): "reconnecting (\(error.code): \(error.message))"
        case .failed(let error): "failed (\((error as? RPCError).map { "\($0.code): \($0.message)" } ?? "\(error)"))"
        case .ended: "ended"
        }
    }
}

/// One watch merged from every node of a ``CosiFleet`` (``CosiFleet/watch(_:maximumBackoff:bufferSize:)``).
///
/// Iterate it once (a second iteration throws FAILED_PRECONDITION): the per-node watches start with the iteration and stop when the iterating
/// task is cancelled or the iterator is dropped. Each node's events come in that node's order;
/// events of different nodes interleave as they arrive. Each node's watch is a
/// ``CosiClient/watch(_:maximumBackoff:onConnection:)``: it resumes from its own last bookmark
/// after a dropped connection or a restart of its cosid, so nothing is lost or repeated.
///
/// The sequence ends when every node's watch has ended or failed; it does not throw for one
/// node's failure: ``state(of:)``, ``states`` and the `onState` callback say how each node
/// stands. At most `bufferSize` events wait for the reader; beyond that the nodes' streams wait
/// too (their servers' flow control holds the rest), so a slow reader costs bounded memory.
///
/// Cost per node: its connection and one suspended task awaiting its stream; nothing runs while
/// a node is idle.
public final class FleetWatch: AsyncSequence, Sendable {
    public typealias Element = FleetEvent

    let fleet: CosiFleet
    let request: WatchRequest
    let maximumBackoff: Duration
    private let merge: Merge
    private let nodeStates: NIOLockedValueBox<[CosiNode: FleetNodeState]>
    private let tasks = NIOLockedValueBox<[Task<Void, Never>]?>(nil)
    private let onState: (@Sendable (CosiNode, FleetNodeState) -> Void)?

    init(fleet: CosiFleet, request: WatchRequest, maximumBackoff: Duration, bufferSize: Int, onState: (@Sendable (CosiNode, FleetNodeState) -> Void)? = nil) {
        self.fleet = fleet
        self.request = request
        self.maximumBackoff = maximumBackoff
        self.merge = Merge(capacity: Swift.max(1, bufferSize), producers: fleet.nodes.count)
        self.nodeStates = NIOLockedValueBox(Dictionary(uniqueKeysWithValues: fleet.nodes.map { ($0, FleetNodeState.connecting) }))
        self.onState = onState
    }

    /// Sets a callback that hears every change of a node's state, as it happens (from the node's
    /// task: keep it short). Returns the watch, for chaining before iteration starts.
    public func onStateChange(_ callback: @escaping @Sendable (CosiNode, FleetNodeState) -> Void) -> FleetWatch {
        FleetWatch(fleet: fleet, request: request, maximumBackoff: maximumBackoff, bufferSize: merge.capacity, onState: callback)
    }

    /// How `node`'s stream stands now.
    public func state(of node: CosiNode) -> FleetNodeState? {
        nodeStates.withLockedValue { $0[node] }
    }

    /// Every node's state, in the fleet's order.
    public var states: [(node: CosiNode, state: FleetNodeState)] {
        let snapshot = nodeStates.withLockedValue { $0 }
        return fleet.nodes.map { ($0, snapshot[$0] ?? .connecting) }
    }

    /// Stops every node's watch; the iteration ends once the events already buffered are read.
    public func cancel() {
        merge.cancel()
        let running = tasks.withLockedValue { $0 ?? [] }
        for task in running { task.cancel() }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        let started = tasks.withLockedValue { tasks -> Bool in
            if tasks != nil { return false }
            // Cancelled before it started: nothing to follow.
            tasks = merge.isCancelled ? [] : fleet.nodes.map { node in Task { await self.follow(node) } }
            return true
        }
        return AsyncIterator(reader: started ? Reader(watch: self) : nil)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        /// Nil for a second iteration of the same watch, which throws.
        let reader: Reader?

        public mutating func next() async throws -> FleetEvent? {
            guard let reader else {
                throw RPCError(code: .failedPrecondition, message: "a FleetWatch is iterated once: make another with CosiFleet.watch")
            }
            return try await reader.next()
        }
    }

    /// Stops the watches when the iterator goes away.
    final class Reader: Sendable {
        let watch: FleetWatch
        init(watch: FleetWatch) { self.watch = watch }
        deinit { watch.cancel() }

        func next() async throws -> FleetEvent? {
            let merge = watch.merge
            let event = await withTaskCancellationHandler {
                await merge.receive()
            } onCancel: { [watch] in
                watch.cancel()
            }
            if event == nil { try Task.checkCancellation() }
            return event
        }
    }

    /// Records a node's state; the callback hears it when its kind changes (a node that stays
    /// unreachable is reported once, not at every attempt).
    private func set(_ node: CosiNode, _ state: FleetNodeState) {
        let changed = nodeStates.withLockedValue { states in
            defer { states[node] = state }
            return states[node].map { $0.kind != state.kind } ?? true
        }
        if changed { onState?(node, state) }
    }

    /// One node's watch, from connecting to its end.
    private func follow(_ node: CosiNode) async {
        defer { merge.producerFinished() }
        var failures = 0
        var client: CosiClient?
        while client == nil {
            if Task.isCancelled {
                set(node, .ended)
                return
            }
            do {
                client = try await fleet.client(node)
            } catch let error as RPCError where error.code == .cancelled {
                // The fleet was closed.
                set(node, .ended)
                return
            } catch let error as RPCError {
                failures += 1
                set(node, .reconnecting(error))
                let delay = Swift.min(Duration.milliseconds(100) * (1 << Swift.min(failures - 1, 10)), maximumBackoff)
                do { try await Task.sleep(for: delay) } catch {
                    set(node, .ended)
                    return
                }
            } catch {
                set(node, .failed(error))
                return
            }
        }
        set(node, .connected)
        let watch = client!.watch(request, maximumBackoff: maximumBackoff) { [weak self] change in
            switch change {
            case .lost(let error): self?.set(node, .reconnecting(error))
            case .resumed: self?.set(node, .connected)
            }
        }
        do {
            for try await event in watch {
                guard await merge.send(FleetEvent(node: node, event: event)) else { break }
            }
            set(node, .ended)
        } catch is CancellationError {
            set(node, .ended)
        } catch let error as RPCError where error.code == .cancelled {
            set(node, .ended)
        } catch {
            set(node, .failed(error))
        }
    }

    /// A bounded queue from the nodes' tasks to the one reader.
    final class Merge: Sendable {
        let capacity: Int
        private let state: NIOLockedValueBox<State>

        struct State {
            var queue: Deque<FleetEvent> = []
            var reader: CheckedContinuation<FleetEvent?, Never>?
            var writers: Deque<CheckedContinuation<Bool, Never>> = []
            var producers: Int
            var cancelled = false
        }

        init(capacity: Int, producers: Int) {
            self.capacity = capacity
            self.state = NIOLockedValueBox(State(producers: producers))
        }

        /// Queues an event; waits while the queue is full. False once the watch is cancelled.
        func send(_ event: FleetEvent) async -> Bool {
            enum Step { case delivered(CheckedContinuation<FleetEvent?, Never>?), full, cancelled }
            while true {
                let step: Step = state.withLockedValue { state in
                    if state.cancelled { return .cancelled }
                    if let reader = state.reader {
                        state.reader = nil
                        return .delivered(reader)
                    }
                    if state.queue.count < capacity {
                        state.queue.append(event)
                        return .delivered(nil)
                    }
                    return .full
                }
                switch step {
                case .cancelled: return false
                case .delivered(let reader):
                    reader?.resume(returning: event)
                    return true
                case .full:
                    let goOn = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                        let immediate: Bool? = state.withLockedValue { state in
                            if state.cancelled { return false }
                            if state.queue.count < capacity || state.reader != nil { return true }
                            state.writers.append(continuation)
                            return nil
                        }
                        if let immediate { continuation.resume(returning: immediate) }
                    }
                    if !goOn { return false }
                }
            }
        }

        /// The next event; nil when every producer has finished and the queue is empty.
        func receive() async -> FleetEvent? {
            enum Step { case event(FleetEvent, CheckedContinuation<Bool, Never>?), done, wait }
            let step: Step = state.withLockedValue { state in
                if let event = state.queue.popFirst() { return .event(event, state.writers.popFirst()) }
                if state.producers == 0 || state.cancelled { return .done }
                return .wait
            }
            switch step {
            case .event(let event, let writer):
                writer?.resume(returning: true)
                return event
            case .done:
                return nil
            case .wait:
                return await withCheckedContinuation { (continuation: CheckedContinuation<FleetEvent?, Never>) in
                    enum Then { case event(FleetEvent, CheckedContinuation<Bool, Never>?), done, parked(CheckedContinuation<Bool, Never>?) }
                    let then: Then = state.withLockedValue { state in
                        if let event = state.queue.popFirst() { return .event(event, state.writers.popFirst()) }
                        if state.producers == 0 || state.cancelled { return .done }
                        state.reader = continuation
                        // A writer waiting for room may hand its event straight over.
                        return .parked(state.writers.popFirst())
                    }
                    switch then {
                    case .event(let event, let writer):
                        writer?.resume(returning: true)
                        continuation.resume(returning: event)
                    case .done:
                        continuation.resume(returning: nil)
                    case .parked(let writer):
                        writer?.resume(returning: true)
                    }
                }
            }
        }

        var isCancelled: Bool { state.withLockedValue { $0.cancelled } }

        func producerFinished() {
            let reader: CheckedContinuation<FleetEvent?, Never>? = state.withLockedValue { state in
                state.producers -= 1
                guard state.producers == 0, state.queue.isEmpty, let reader = state.reader else { return nil }
                state.reader = nil
                return reader
            }
            reader?.resume(returning: nil)
        }

        func cancel() {
            let (reader, writers) = state.withLockedValue { state -> (CheckedContinuation<FleetEvent?, Never>?, Deque<CheckedContinuation<Bool, Never>>) in
                state.cancelled = true
                let reader = state.queue.isEmpty ? state.reader : nil
                if reader != nil { state.reader = nil }
                defer { state.writers = [] }
                return (reader, state.writers)
            }
            reader?.resume(returning: nil)
            for writer in writers { writer.resume(returning: false) }
        }
    }
}
