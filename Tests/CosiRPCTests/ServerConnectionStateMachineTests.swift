import CosiMessages
import CosiWire
import NIOCore
import Testing

@testable import CosiRPC

/// The server state machine without any I/O: frames in, actions out.
@Suite("Server connection state machine")
struct ServerConnectionStateMachineTests {
    typealias Machine = ServerConnectionStateMachine<Int>
    let now = NIODeadline.now()

    static func settings(initialWindow: UInt32 = 0, connectionWindow: UInt32 = 0) -> Frame {
        Frame(type: .settings, streamID: 0, payload: Envelope.Settings(initialWindow: initialWindow, initialConnectionWindow: connectionWindow).serializedBytes())
    }

    static func window(_ id: UInt32, _ increment: UInt32) -> Frame {
        var payload = ByteBuffer()
        payload.writeInteger(increment)
        return Frame(type: .window, streamID: id, payload: payload)
    }

    /// Opens stream `id` with a complete request.
    func open(_ machine: inout Machine, _ id: UInt32) -> [Machine.Action] {
        _ = machine.receive(Frame(type: .headers, streamID: id, payload: Envelope.CallHeaders(method: "/m").serializedBytes()), now: now)
        return machine.receive(Frame(type: .message, flags: .endStream, streamID: id, payload: ByteBuffer(string: "req")), now: now)
    }

    func sentMessages(_ actions: [Machine.Action]) -> [Int] {
        actions.compactMap { if case .send(let frame) = $0, frame.type == .message { frame.payload.readableBytes } else { nil } }
    }

    func sentTypes(_ actions: [Machine.Action]) -> [FrameType] {
        actions.compactMap { if case .send(let frame) = $0 { frame.type } else { nil } }
    }

    @Test func requestStartsTheCall() {
        var machine = Machine(localSettings: .defaults)
        _ = machine.receive(Self.settings(), now: now)
        let actions = open(&machine, 1)
        guard case .startCall(let id, let headers, let request)? = actions.last else {
            Issue.record("no startCall in \(actions)")
            return
        }
        #expect(id == 1)
        #expect(headers.method == "/m")
        #expect(String(buffer: request) == "req")
    }

    @Test func aMessageMayOvershootAPositiveWindowThenSendingWaits() {
        var machine = Machine(localSettings: .defaults)
        _ = machine.receive(Self.settings(initialWindow: 16_384), now: now)
        _ = open(&machine, 1)
        // 10 KiB fits; the next 10 KiB is sent while the window is positive (6 KiB left) and
        // takes it to -4 KiB; the third waits.
        #expect(sentMessages(machine.sendMessage(1, ByteBuffer(repeating: 0, count: 10_240), completion: 1)) == [10_240])
        #expect(sentMessages(machine.sendMessage(1, ByteBuffer(repeating: 0, count: 10_240), completion: 2)) == [10_240])
        #expect(sentMessages(machine.sendMessage(1, ByteBuffer(repeating: 0, count: 100), completion: 3)) == [])
        // 4 KiB of credit brings the window to 0: still not positive.
        #expect(sentMessages(machine.receive(Self.window(1, 4_096), now: now)) == [])
        let released = machine.receive(Self.window(1, 1), now: now)
        #expect(sentMessages(released) == [100])
        #expect(released.contains { if case .completeWrite(3) = $0 { true } else { false } })
    }

    @Test func trailersFollowQueuedMessages() {
        var machine = Machine(localSettings: .defaults)
        _ = machine.receive(Self.settings(initialWindow: 16_384), now: now)
        _ = open(&machine, 1)
        _ = machine.sendMessage(1, ByteBuffer(repeating: 0, count: 20_000), completion: nil)
        _ = machine.sendMessage(1, ByteBuffer(repeating: 0, count: 5), completion: nil)
        // The handler finished, but one message still waits for credit: no TRAILERS yet.
        #expect(sentTypes(machine.finishCall(1, status: .ok)) == [])
        #expect(sentTypes(machine.receive(Self.window(1, 10_000), now: now)) == [.message, .trailers])
        #expect(machine.openStreams == 0)
    }

    @Test func laterSettingsAdjustOpenStreamWindows() {
        var machine = Machine(localSettings: .defaults)
        _ = machine.receive(Self.settings(initialWindow: 16_384), now: now)
        _ = open(&machine, 1)
        _ = machine.sendMessage(1, ByteBuffer(repeating: 0, count: 16_384), completion: nil)
        #expect(sentMessages(machine.sendMessage(1, ByteBuffer(repeating: 0, count: 1), completion: nil)) == [])
        // Raising initial_window by 1 KiB raises the open stream's window from 0 to 1 KiB.
        let actions = machine.receive(Self.settings(initialWindow: 17_408), now: now)
        #expect(sentTypes(actions) == [.settings, .message])
        // A stream opened now starts with the new initial window, not the shifted old one.
        _ = open(&machine, 3)
        #expect(sentMessages(machine.sendMessage(3, ByteBuffer(repeating: 0, count: 17_407), completion: nil)) == [17_407])
        #expect(sentMessages(machine.sendMessage(3, ByteBuffer(repeating: 0, count: 1), completion: nil)) == [1])
        #expect(sentMessages(machine.sendMessage(3, ByteBuffer(repeating: 0, count: 1), completion: nil)) == [])
        // Lowering it takes both below zero; a WINDOW on one stream frees only that one.
        _ = machine.receive(Self.settings(initialWindow: 16_384), now: now)
        #expect(sentMessages(machine.receive(Self.window(3, 1_024), now: now)) == [])
        #expect(sentMessages(machine.receive(Self.window(3, 1), now: now)) == [1])
    }

    @Test func connectionWindowBlocksEveryStreamUntilCredited() {
        var machine = Machine(localSettings: .defaults)
        _ = machine.receive(Self.settings(initialWindow: 1 << 20, connectionWindow: 16_384), now: now)
        _ = open(&machine, 1)
        _ = open(&machine, 3)
        #expect(sentMessages(machine.sendMessage(1, ByteBuffer(repeating: 0, count: 16_384), completion: nil)) == [16_384])
        #expect(sentMessages(machine.sendMessage(3, ByteBuffer(repeating: 0, count: 10), completion: nil)) == [])
        #expect(sentMessages(machine.receive(Self.window(0, 100), now: now)) == [10])
    }

    @Test func shutdownRefusesNewCallsAndClosesWhenDrained() {
        var machine = Machine(localSettings: .defaults)
        _ = machine.receive(Self.settings(), now: now)
        _ = open(&machine, 1)
        #expect(sentTypes(machine.beginShutdown()) == [.goAway])
        let refused = machine.receive(Frame(type: .headers, streamID: 3, payload: Envelope.CallHeaders(method: "/m").serializedBytes()), now: now)
        guard case .send(let frame)? = refused.first, let status = try? Envelope.Status(serializedBytes: frame.payload) else {
            Issue.record("expected TRAILERS, got \(refused)")
            return
        }
        #expect(frame.streamID == 3)
        #expect(status.code == RPCStatus.Code.unavailable.rawValue)
        let finished = machine.finishCall(1, status: .ok)
        #expect(finished.contains { if case .close = $0 { true } else { false } })
    }

    @Test func cancelFailsQueuedWritesAndStopsTheHandler() {
        var machine = Machine(localSettings: .defaults)
        _ = machine.receive(Self.settings(initialWindow: 16_384), now: now)
        _ = open(&machine, 1)
        _ = machine.sendMessage(1, ByteBuffer(repeating: 0, count: 20_000), completion: 1)
        _ = machine.sendMessage(1, ByteBuffer(repeating: 0, count: 10), completion: 2)
        let actions = machine.receive(Frame(type: .cancel, streamID: 1), now: now)
        #expect(actions.contains { if case .failWrite(2, let error) = $0 { error.code == .cancelled } else { false } })
        #expect(actions.contains { if case .cancelCall(1) = $0 { true } else { false } })
        #expect(sentTypes(actions) == [])
        // A late WINDOW for the cancelled stream is ignored.
        #expect(machine.receive(Self.window(1, 100), now: now).isEmpty)
    }
}
