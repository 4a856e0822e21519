import CosiMessages
import CosiRPC
import DequeModule

extension CosiClient {
    /// A watch that survives dropped connections: the events of `request`, one at a time.
    ///
    /// When the connection drops or the server shuts down (UNAVAILABLE), it reconnects with
    /// exponential backoff (0.1 s doubling to `maximumBackoff`) and resumes from the bookmark of the
    /// last event it delivered, so no event is missed or repeated. If the server cannot resume
    /// from that bookmark (FAILED_PRECONDITION: the history was compacted), the sequence ends with
    /// that error. Before the first bookmark arrives, a resume repeats the original request.
    /// The call starts when iteration starts.
    ///
    /// `onConnection` hears when the watch loses its server (`.lost`, once per outage, with the
    /// reason) and when it is established again (`.resumed`), as they happen: for a client that
    /// tells its user ("connection lost, reconnecting").
    public func watch(
        _ request: WatchRequest, maximumBackoff: Duration = .seconds(5),
        onConnection: (@Sendable (WatchConnectionChange) -> Void)? = nil
    ) -> ResumingWatch {
        ResumingWatch(client: self, request: request, maximumBackoff: maximumBackoff, onConnection: onConnection)
    }
}

/// A change of a resuming watch's connection (see ``CosiClient/watch(_:maximumBackoff:onConnection:)``).
public enum WatchConnectionChange: Sendable {
    /// The call broke; the watch reconnects with backoff.
    case lost(RPCError)
    /// The call is established again and resumes from the last bookmark (or, when no event had
    /// a bookmark yet, repeats the original request, bootstrap included).
    case resumed(fromBookmark: Bool)
}

/// See ``CosiClient/watch(_:maximumBackoff:onConnection:)``.
public struct ResumingWatch: AsyncSequence, Sendable {
    public typealias Element = Event
    let client: CosiClient
    let request: WatchRequest
    let maximumBackoff: Duration
    let onConnection: (@Sendable (WatchConnectionChange) -> Void)?

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(client: client, request: request, maximumBackoff: maximumBackoff, onConnection: onConnection)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let client: CosiClient
        let request: WatchRequest
        let maximumBackoff: Duration
        let onConnection: (@Sendable (WatchConnectionChange) -> Void)?
        var lastBookmark: [UInt8]?
        var call: ResponseStream<WatchResponse>.AsyncIterator?
        var buffered: Deque<Event> = []
        var failures = 0
        /// How many times the watch was re-established (for tests and logs).
        public private(set) var resumptions = 0

        init(client: CosiClient, request: WatchRequest, maximumBackoff: Duration, onConnection: (@Sendable (WatchConnectionChange) -> Void)?) {
            self.client = client
            self.request = request
            self.maximumBackoff = maximumBackoff
            self.onConnection = onConnection
        }

        public mutating func next() async throws -> Event? {
            while true {
                if let event = buffered.popFirst() {
                    if let bookmark = event.bookmark { lastBookmark = bookmark }
                    return event
                }
                try Task.checkCancellation()
                do {
                    if call == nil {
                        call = client.watchCall(resumeRequest()).makeAsyncIterator()
                    }
                    guard let response = try await call!.next() else { return nil }
                    if failures > 0 { onConnection?(.resumed(fromBookmark: lastBookmark != nil)) }
                    failures = 0
                    buffered.append(contentsOf: response.event)
                } catch let error as RPCError where error.code == .unavailable {
                    if failures == 0 { onConnection?(.lost(error)) }
                    call = nil
                    failures += 1
                    resumptions += 1
                    try await Task.sleep(for: backoff())
                } catch let error as RPCError where error.code == .failedPrecondition && lastBookmark != nil {
                    throw RPCError(code: .failedPrecondition, message: "the watch cannot resume from its last bookmark: \(error.message)")
                }
            }
        }

        private func resumeRequest() -> WatchRequest {
            guard let lastBookmark else { return request }
            var resumed = request
            var options = request.options ?? WatchOptions()
            options.bootstrapContents = false
            options.bootstrapBookmark = false
            options.tailEvents = 0
            options.startFromBookmark = lastBookmark
            resumed.options = options
            return resumed
        }

        private func backoff() -> Duration {
            let base = Duration.milliseconds(100) * (1 << Swift.min(failures - 1, 10))
            return Swift.min(base, maximumBackoff)
        }
    }
}
