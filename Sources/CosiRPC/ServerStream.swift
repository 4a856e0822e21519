import NIOCore

/// The response side of a server-streaming call produced on its connection's event loop,
/// without a task (``RPCHandler/serverStreamingOnLoop(_:)``).
///
/// Every member must be used on ``eventLoop``. The producer sends while ``isOpen``; to follow
/// flow control it sends with a `whenSent` callback and produces more only once that has run:
/// a message waits in the stream's queue while the client grants no credit or does not read.
/// The call ends with ``finish(_:)`` or ``finish(_:)-(any Error)`` from the producer, or from the
/// connection (CANCEL, deadline, graceful shutdown, the connection closing); either way the end
/// hooks run once, on the loop, with the final status.
public final class ServerStream: @unchecked Sendable {
    // @unchecked Sendable: every member is used on `eventLoop` only (checked in debug builds).
    /// The loop this stream lives on.
    public let eventLoop: any EventLoop
    let streamID: UInt32
    private weak var connection: ServerConnectionHandler?
    private var endHooks: [(RPCStatus) -> Void] = []
    private var ended = false
    /// Runs before every message (an interceptor's ``RPCInterceptor/beforeWrite``); throwing
    /// ends the call with that error instead of sending.
    var check: (@Sendable () throws -> Void)?

    init(connection: ServerConnectionHandler, eventLoop: any EventLoop, streamID: UInt32) {
        self.connection = connection
        self.eventLoop = eventLoop
        self.streamID = streamID
    }

    /// Whether messages may still be sent.
    public var isOpen: Bool {
        eventLoop.assertInEventLoop()
        return !ended
    }

    /// Sends one message. `whenSent`, when given, runs on the loop once the message has left
    /// the stream's queue (the client's credit allowed it); it never runs if the call ends
    /// first. Does nothing once the call has ended.
    public func send(_ message: ByteBuffer, whenSent: (() -> Void)? = nil) {
        eventLoop.assertInEventLoop()
        guard !ended else { return }
        if let check {
            do { try check() } catch {
                return finish(error)
            }
        }
        guard let connection else { return }
        let drained = connection.streamSend(streamID, message)
        guard let whenSent, !ended else { return }
        if drained {
            whenSent()
        } else if let earlier = whenDrained {
            whenDrained = {
                earlier()
                whenSent()
            }
        } else {
            whenDrained = whenSent
        }
    }

    /// Runs when the stream's queue has emptied (no promise per message: a stream that keeps up
    /// learns it at once from ``send(_:whenSent:)``).
    private var whenDrained: (() -> Void)?

    /// The connection handed the last queued message on (from its loop).
    func drained() {
        guard let whenDrained else { return }
        self.whenDrained = nil
        whenDrained()
    }

    /// Ends the call with `status` (after the messages already queued).
    public func finish(_ status: RPCStatus = .ok) {
        eventLoop.assertInEventLoop()
        guard !ended else { return }
        guard let connection else { return ended(status) }
        connection.finish(streamID, response: nil, status: status)
    }

    /// Ends the call with an error: an ``RPCError``'s status, UNKNOWN for anything else.
    public func finish(_ error: any Error) {
        finish((error as? RPCError)?.status ?? RPCStatus(code: .unknown, message: "\(error)"))
    }

    /// Adds code to run once when the call ends, whoever ends it, with the final status.
    public func addEndHook(_ hook: @escaping (RPCStatus) -> Void) {
        eventLoop.assertInEventLoop()
        if ended { return }
        endHooks.append(hook)
    }

    /// The connection ended the call (from its loop).
    func ended(_ status: RPCStatus) {
        guard !ended else { return }
        ended = true
        whenDrained = nil
        let hooks = endHooks
        endHooks = []
        for hook in hooks { hook(status) }
    }
}
