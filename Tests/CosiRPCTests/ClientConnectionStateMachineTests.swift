import CosiWire
import NIOCore
import Testing

@testable import CosiRPC

/// The client state machine without any I/O: frames and calls in, actions out.
@Suite("Client connection state machine")
struct ClientConnectionStateMachineTests {
    typealias Machine = ClientConnectionStateMachine<Int>

    static func settings(initialWindow: UInt32 = 0, connectionWindow: UInt32 = 0, maxFrameSize: UInt32 = 0, maxStreams: UInt32 = 0) -> Frame {
        Frame(type: .settings, streamID: 0, payload: Envelope.Settings(
            maxFrameSize: maxFrameSize, maxConcurrentStreams: maxStreams, initialWindow: initialWindow, initialConnectionWindow: connectionWindow
        ).serializedBytes())
    }

    static func trailers(_ id: UInt32, _ code: RPCStatus.Code, _ message: String = "") -> Frame {
        Frames.trailers(id, RPCStatus(code: code, message: message))
    }

    static func message(_ id: UInt32, _ text: String) -> Frame {
        Frame(type: .message, streamID: id, payload: ByteBuffer(string: text))
    }

    /// A machine that has received the server's SETTINGS.
    static func ready(_ settings: Frame = Self.settings()) -> Machine {
        var machine = Machine(localSettings: .defaults)
        _ = machine.receive(settings)
        return machine
    }

    func sent(_ actions: [Machine.Action]) -> [Frame] {
        actions.compactMap { if case .send(let frame) = $0 { frame } else { nil } }
    }

    /// The outcome of a call that finished in `actions`.
    func outcome(of call: Int, in actions: [Machine.Action]) -> Result<ByteBuffer?, RPCError>? {
        for action in actions {
            if case .finish(_, let finished, let result) = action, finished == call { return result }
        }
        return nil
    }

    @Test func readyOnlyAfterTheServersFirstSettings() {
        var machine = Machine(localSettings: .defaults)
        #expect(sent(machine.start()).map(\.type) == [.settings])
        let first = machine.receive(Self.settings())
        #expect(sent(first).map(\.type) == [.settings], "the ACK")
        #expect(first.contains { if case .ready = $0 { true } else { false } })
        // A later SETTINGS is acknowledged, but the connection was already ready.
        let second = machine.receive(Self.settings(initialWindow: 65_536))
        #expect(!second.contains { if case .ready = $0 { true } else { false } })
    }

    @Test func aUnaryCallSendsHeadersAndItsRequestAndGetsItsResponse() throws {
        var machine = Self.ready()
        let (id, actions) = machine.startCall(Envelope.CallHeaders(method: "/m", timeoutMS: 50), request: ByteBuffer(string: "req"), kind: .unary, call: 7)
        #expect(id == 1)
        let frames = sent(actions)
        #expect(frames.map(\.type) == [.headers, .message])
        #expect(frames[1].flags.contains(.endStream))
        #expect(try Envelope.CallHeaders(serializedBytes: frames[0].payload).timeoutMS == 50)
        #expect(machine.receive(Self.message(1, "resp")).isEmpty, "a unary response waits for its TRAILERS")
        let result = try #require(outcome(of: 7, in: machine.receive(Self.trailers(1, .ok))))
        #expect(try result.get().map { String(buffer: $0) } == "resp")
        #expect(machine.openStreams == 0)
        // The next call gets the next id.
        #expect(machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(), kind: .unary, call: 8).streamID == 2)
    }

    @Test func statusesOtherThanOKFailTheCall() {
        var machine = Self.ready()
        _ = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(), kind: .unary, call: 1)
        let result = outcome(of: 1, in: machine.receive(Self.trailers(1, .notFound, "no such thing")))
        guard case .failure(let error)? = result else { Issue.record("expected a failure, got \(String(describing: result))"); return }
        #expect(error.code == .notFound)
        #expect(error.message == "no such thing")
        // OK without a response message is the server's mistake.
        _ = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(), kind: .unary, call: 2)
        guard case .failure(let empty)? = outcome(of: 2, in: machine.receive(Self.trailers(2, .ok))) else { Issue.record("expected a failure"); return }
        #expect(empty.code == .internal)
    }

    @Test func aStreamDeliversEachMessageAndGrantsCreditAsTheyAreConsumed() {
        var machine = Self.ready()
        _ = machine.startCall(Envelope.CallHeaders(method: "/s"), request: ByteBuffer(), kind: .serverStreaming, call: 3)
        let delivered = machine.receive(Self.message(1, "a"))
        #expect(delivered.contains { if case .deliver(3, let message) = $0 { String(buffer: message) == "a" } else { false } })
        // Credit is granted once half the 1 MiB stream window has been consumed, not before.
        #expect(sent(machine.consumed(1000, on: 1)).isEmpty)
        let granted = sent(machine.consumed(Int(RPCSettings.defaultInitialWindow / 2), on: 1))
        #expect(granted.map(\.type) == [.window])
        #expect(granted.first?.streamID == 1)
        #expect(granted.first.flatMap(Frames.increment(of:)) == RPCSettings.defaultInitialWindow / 2 + 1000)
        guard case .success(nil)? = outcome(of: 3, in: machine.receive(Self.trailers(1, .ok))) else { Issue.record("the stream should end OK"); return }
    }

    @Test func aRequestWaitsForConnectionCredit() {
        var machine = Self.ready(Self.settings(connectionWindow: 16_384))
        let first = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(repeating: 1, count: 16_384), kind: .unary, call: 1)
        #expect(sent(first.actions).map(\.type) == [.headers, .message])
        // The connection window is spent: the second request waits, its HEADERS do not.
        let second = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(string: "x"), kind: .unary, call: 2)
        #expect(sent(second.actions).map(\.type) == [.headers])
        let released = sent(machine.receive(Frames.window(0, 100)))
        #expect(released.map(\.type) == [.message])
        #expect(released.first?.streamID == 2)
    }

    @Test func goAwayFailsCallsTheServerWillNotAnswerAndRefusesNewOnes() {
        var machine = Self.ready()
        for call in 1...3 { _ = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(), kind: .unary, call: call) }
        let goAway = Frames.goAway(lastStreamID: 2, code: .noError, reason: "restarting")
        let actions = machine.receive(goAway)
        guard case .failure(let error)? = outcome(of: 3, in: actions) else { Issue.record("call 3 should fail"); return }
        #expect(error.code == .unavailable)
        #expect(error.message.contains("restarting"))
        #expect(outcome(of: 1, in: actions) == nil && outcome(of: 2, in: actions) == nil, "calls up to the last stream go on")
        let refused = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(), kind: .unary, call: 4)
        #expect(refused.streamID == nil)
        guard case .failure(let late)? = outcome(of: 4, in: refused.actions) else { Issue.record("call 4 should be refused"); return }
        #expect(late.code == .unavailable)
        // Call 2 still completes.
        _ = machine.receive(Self.message(2, "ok"))
        guard case .success? = outcome(of: 2, in: machine.receive(Self.trailers(2, .ok))) else { Issue.record("call 2 should succeed"); return }
    }

    @Test func cancellingSendsCancelAndLateFramesAreIgnored() {
        var machine = Self.ready()
        _ = machine.startCall(Envelope.CallHeaders(method: "/s"), request: ByteBuffer(), kind: .serverStreaming, call: 1)
        let cancelled = machine.cancel(1, error: RPCError(code: .cancelled, message: "gone"))
        #expect(sent(cancelled).map(\.type) == [.cancel])
        guard case .failure(let error)? = outcome(of: 1, in: cancelled) else { Issue.record("expected the call to end"); return }
        #expect(error.code == .cancelled)
        // Frames that crossed the CANCEL are ignored, not a protocol error.
        #expect(machine.receive(Self.message(1, "late")).allSatisfy { if case .send(let frame) = $0 { frame.type == .window } else { false } })
        #expect(machine.receive(Self.trailers(1, .ok)).isEmpty)
    }

    @Test func framesOnStreamsNeverOpenedAreProtocolErrors() throws {
        var machine = Self.ready()
        let actions = machine.receive(Self.message(9, "stray"))
        let goAway = try #require(sent(actions).first { $0.type == .goAway })
        #expect(try Envelope.GoAway(serializedBytes: goAway.payload).code == ConnectionErrorCode.protocolError.rawValue)
        #expect(actions.contains { if case .close = $0 { true } else { false } })
        #expect(machine.unavailableReason != nil)
    }

    @Test func aWindowAboveTheMaximumIsAFlowControlError() throws {
        var machine = Self.ready()
        let actions = machine.receive(Frames.window(0, UInt32(Int32.max)))
        let goAway = try #require(sent(actions).first { $0.type == .goAway })
        #expect(try Envelope.GoAway(serializedBytes: goAway.payload).code == ConnectionErrorCode.flowControlError.rawValue)
    }

    @Test func theServersLimitsAreHonouredLocally() {
        var machine = Self.ready(Self.settings(maxFrameSize: 16_384, maxStreams: 1))
        let large = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(repeating: 0, count: 16_385), kind: .unary, call: 1)
        guard case .failure(let tooLarge)? = outcome(of: 1, in: large.actions) else { Issue.record("expected a refusal"); return }
        #expect(tooLarge.code == .resourceExhausted)
        #expect(sent(large.actions).isEmpty, "nothing is sent for a refused call")
        _ = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(), kind: .unary, call: 2)
        let second = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(), kind: .unary, call: 3)
        guard case .failure(let tooMany)? = outcome(of: 3, in: second.actions) else { Issue.record("expected a refusal"); return }
        #expect(tooMany.code == .resourceExhausted)
    }

    @Test func aClosedChannelFailsEveryCallWithTheReason() {
        var machine = Self.ready()
        _ = machine.startCall(Envelope.CallHeaders(method: "/m"), request: ByteBuffer(), kind: .unary, call: 1)
        _ = machine.startCall(Envelope.CallHeaders(method: "/s"), request: ByteBuffer(), kind: .serverStreaming, call: 2)
        let actions = machine.channelClosed(reason: "certificate expired")
        for call in [1, 2] {
            guard case .failure(let error)? = outcome(of: call, in: actions) else { Issue.record("call \(call) should fail"); continue }
            #expect(error.code == .unavailable)
            #expect(error.message == "certificate expired")
        }
        #expect(machine.openStreams == 0)
    }
}

extension Frames {
    /// The increment of a WINDOW frame, for assertions.
    static func increment(of frame: Frame) -> UInt32? {
        try? windowIncrement(frame)
    }
}
