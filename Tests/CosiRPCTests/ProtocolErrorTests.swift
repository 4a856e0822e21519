import CosiMessages
import CosiRPC
import CosiTesting
import CosiWire
import NIOCore
import Testing

@Suite("Connection errors and liveness", .timeLimit(.minutes(1)))
struct ProtocolErrorTests {
    let pki: TestPKI
    let observations = Observations()

    init() throws { pki = try TestPKI() }

    func raw(_ port: Int) async throws -> RawConnection {
        try await RawConnection.connect(port: port, tls: pki.clientContext())
    }

    /// Asserts that the server answered with GOAWAY(code) and closed the connection.
    func expectGoAway(_ connection: RawConnection, _ code: ConnectionErrorCode, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let (frames, closed) = try await connection.framesUntilClosed()
        let goAway = frames.compactMap(\.goAway).last
        #expect(goAway?.code == code.rawValue, "frames: \(frames.map(\.type))", sourceLocation: sourceLocation)
        #expect(closed, sourceLocation: sourceLocation)
    }

    static func headers(_ id: UInt32, _ method: String) -> Frame {
        Frame(type: .headers, streamID: id, payload: Envelope.CallHeaders(method: method).serializedBytes())
    }

    @Test func frameOverMaxFrameSizeIsFrameSizeError() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations), configure: { $0.connection.settings.maxFrameSize = 16_384 }) { _, port in
            let connection = try await raw(port)
            var bytes = ByteBuffer()
            bytes.writeFrame(.settings())
            bytes.writeFrame(Self.headers(1, TestMethods.echo))
            // A header announcing 16 KiB + 1: the server must not wait for the payload.
            bytes.writeFrameHeader(FrameHeader(length: 16_385, type: .message, flags: .endStream, streamID: 1))
            try await connection.send(bytes)
            try await expectGoAway(connection, .frameSizeError)
        }
    }

    @Test(arguments: [
        ("random bytes", Array("\u{7}\u{3}garbage-garbage-garbage".utf8)),
        ("HTTP request", Array("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)),
    ])
    func somethingOtherThanSettingsFirstIsProtocolError(_ name: String, _ bytes: [UInt8]) async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            try await connection.send(ByteBuffer(bytes: bytes))
            try await expectGoAway(connection, .protocolError)
        }
    }

    @Test func anotherFrameTypeFirstIsProtocolError() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            try await connection.send([Frame(type: .ping, streamID: 0, payload: ByteBuffer(repeating: 0, count: 8))])
            try await expectGoAway(connection, .protocolError)
        }
    }

    @Test func settingsOutOfRangeIsProtocolError() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            try await connection.send([.settings(Envelope.Settings(maxFrameSize: 1024))])
            try await expectGoAway(connection, .protocolError)
        }
    }

    @Test func settingsAreAcknowledgedAndPingIsAnswered() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            let payload = ByteBuffer(bytes: [1, 2, 3, 4, 5, 6, 7, 8])
            try await connection.send([.settings(), Frame(type: .ping, streamID: 0, payload: payload)])
            let ack = try await connection.waitForFrame { $0.type == .ping && $0.flags.contains(.ack) }
            #expect(ack?.payload == payload)
            let settingsAck = try await connection.waitForFrame { $0.type == .settings && $0.flags.contains(.ack) }
            #expect(settingsAck != nil)
            // The server's own SETTINGS came first.
            #expect(connection.frames.first?.type == .settings)
            #expect(connection.frames.first?.flags.contains(.ack) == false)
            await connection.close()
        }
    }

    @Test func pingFloodIsEnhanceYourCalm() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            var frames: [Frame] = [.settings()]
            for index in 0..<11 {
                frames.append(Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, UInt8(index)])))
            }
            try await connection.send(frames)
            try await expectGoAway(connection, .enhanceYourCalm)
        }
    }

    @Test func tenPingsAreFine() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            var frames: [Frame] = [.settings()]
            for index in 0..<10 {
                frames.append(Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, UInt8(index)])))
            }
            try await connection.send(frames)
            // All ten are answered.
            let tenth = try await connection.waitForFrame { $0.type == .ping && $0.payload.getInteger(at: $0.payload.readerIndex + 7, as: UInt8.self) == 9 }
            #expect(tenth != nil)
            #expect(connection.frames.filter { $0.type == .ping }.count == 10)
            #expect(connection.frames.compactMap(\.goAway).isEmpty)
            await connection.close()
        }
    }

    @Test func headersThatDoNotDecodeDoNotResetThePingGuard() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            var frames: [Frame] = [.settings()]
            for index in 0..<11 {
                frames.append(Frame(type: .headers, streamID: UInt32(2 * index + 1), payload: ByteBuffer(bytes: [0xff, 0xff, 0xff])))
                frames.append(Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, UInt8(index)])))
            }
            try await connection.send(frames)
            try await expectGoAway(connection, .enhanceYourCalm)
        }
    }

    @Test func aCallRefillsThePingBudget() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            var frames: [Frame] = [.settings()]
            for index in 0..<3 {
                for ping in 0..<8 {
                    frames.append(Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, UInt8(index), UInt8(ping)])))
                }
                frames.append(Self.headers(UInt32(2 * index + 1), TestMethods.echo))
                frames.append(Frame(type: .message, flags: .endStream, streamID: UInt32(2 * index + 1), payload: ByteBuffer(string: "x")))
            }
            try await connection.send(frames)
            let third = try await connection.waitForFrame { $0.type == .trailers && $0.streamID == 5 }
            #expect(third != nil)
            #expect(connection.frames.filter { $0.type == .ping }.count == 24)
            #expect(connection.frames.compactMap(\.goAway).isEmpty)
            await connection.close()
        }
    }

    @Test func aFloodOfUnknownFramesIsEnhanceYourCalm() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            var frames: [Frame] = [.settings()]
            // A few are ignored, as the protocol says; thousands at once are not.
            for _ in 0..<2_000 { frames.append(Frame(type: FrameType(rawValue: 0x42), streamID: 0, payload: ByteBuffer(string: "future"))) }
            try await connection.send(frames)
            try await expectGoAway(connection, .enhanceYourCalm)
        }
    }

    @Test func aStormOfSettingsIsEnhanceYourCalm() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            var frames: [Frame] = [.settings()]
            for index in 0..<50 { frames.append(.settings(Envelope.Settings(initialWindow: UInt32(65_536 + index)))) }
            try await connection.send(frames)
            try await expectGoAway(connection, .enhanceYourCalm)
        }
    }

    @Test func messageOnANeverOpenedStreamIsProtocolError() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            try await connection.send([.settings(), Frame(type: .message, flags: .endStream, streamID: 9, payload: ByteBuffer())])
            try await expectGoAway(connection, .protocolError)
        }
    }

    @Test func reusingAStreamIDIsProtocolError() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            try await connection.send([
                .settings(),
                Self.headers(5, TestMethods.echo), Frame(type: .message, flags: .endStream, streamID: 5, payload: ByteBuffer(string: "a")),
                Self.headers(3, TestMethods.echo),
            ])
            try await expectGoAway(connection, .protocolError)
        }
    }

    @Test func windowIncrementOfZeroIsFlowControlError() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            var zero = ByteBuffer()
            zero.writeInteger(UInt32(0))
            try await connection.send([.settings(), Frame(type: .window, streamID: 0, payload: zero)])
            try await expectGoAway(connection, .flowControlError)
        }
    }

    @Test func messageBeyondTheWindowIsFlowControlError() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations), configure: {
            $0.connection.settings.initialWindow = 16_384
        }) { _, port in
            let connection = try await raw(port)
            try await connection.send([
                .settings(),
                Self.headers(1, TestMethods.echo),
                // Spends the whole 16 KiB stream window (allowed: the window was positive)...
                Frame(type: .message, streamID: 1, payload: ByteBuffer(repeating: 1, count: 16_384)),
                // ...so this one arrives with the window at zero.
                Frame(type: .message, flags: .endStream, streamID: 1, payload: ByteBuffer(repeating: 1, count: 10)),
            ])
            try await expectGoAway(connection, .flowControlError)
        }
    }

    @Test func tooManyConcurrentStreamsIsResourceExhausted() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations), configure: {
            $0.connection.settings.maxConcurrentStreams = 2
        }) { _, port in
            let connection = try await raw(port)
            var frames: [Frame] = [.settings()]
            for id in UInt32(1)...3 {
                frames.append(Self.headers(id, TestMethods.hang))
                frames.append(Frame(type: .message, flags: .endStream, streamID: id, payload: ByteBuffer()))
            }
            try await connection.send(frames)
            let trailers = try await connection.waitForFrame { $0.type == .trailers }
            #expect(trailers?.streamID == 3)
            #expect(trailers?.status?.code == RPCStatus.Code.resourceExhausted.rawValue)
            await connection.close()
        }
    }

    @Test func framesForACancelledStreamAreIgnored() async throws {
        try await withTestServer(pki: pki, methods: TestMethods.table(observations)) { _, port in
            let connection = try await raw(port)
            var window = ByteBuffer()
            window.writeInteger(UInt32(1000))
            try await connection.send([
                .settings(),
                Self.headers(1, TestMethods.hang), Frame(type: .message, flags: .endStream, streamID: 1, payload: ByteBuffer()),
                Frame(type: .cancel, streamID: 1),
                Frame(type: .window, streamID: 1, payload: window),
                Frame(type: .cancel, streamID: 1),
                Self.headers(2, TestMethods.echo), Frame(type: .message, flags: .endStream, streamID: 2, payload: ByteBuffer(string: "x")),
            ])
            let trailers = try await connection.waitForFrame { $0.type == .trailers && $0.streamID == 2 }
            #expect(trailers?.status?.code == 0)
            // Nothing at all was sent on the cancelled stream.
            #expect(connection.frames.allSatisfy { $0.streamID != 1 })
            #expect(connection.frames.compactMap(\.goAway).isEmpty)
            await connection.close()
        }
    }
}
