import CosiClient
import CosiMessages
import CosiRPC
import CosiTesting
import CosiWire
import Foundation
import NIOCore
import Testing

/// What a client with a valid certificate can try against a real `cosid` over TLS on
/// 127.0.0.1, and the bound the server keeps (docs/RELIABILITY.md). Memory is cosid's resident
/// set, read from /proc: each test runs its own process.
@Suite("Hostile peers", .serialized, .timeLimit(.minutes(2)))
struct HostilePeerTests {
    static let mib = 1 << 20

    /// SETTINGS that let the server send as much as it wants: an attacker grants every window.
    static let openWindows = Frame.settings(Envelope.Settings(initialWindow: UInt32(Int32.max), initialConnectionWindow: UInt32(Int32.max)))

    static func headers(_ id: UInt32, _ method: String) -> Frame {
        Frame(type: .headers, streamID: id, payload: Envelope.CallHeaders(method: method).serializedBytes())
    }

    /// Waits until the server's SETTINGS arrived (the handshake is over).
    static func settled(_ connection: RawConnection) async throws {
        _ = try #require(try await connection.waitForFrame { $0.type == .settings && !$0.flags.contains(.ack) })
    }

    /// Resident memory grown since `baseline`. Called after a barrier that shows the server has
    /// handled what it was sent (an answer to a later frame, the connection closed), or, for a
    /// peer that does not read (the server stops reading it too), after `window`: that the
    /// server stays bounded over a time is then what is measured.
    static func growth(_ cosid: CosidProcess, from baseline: Int, window: Duration? = nil) async throws -> Int {
        if let window { try await Task.sleep(for: window) }
        return try cosid.residentBytes() - baseline
    }

    /// Writes `count` copies of `frame`, in pieces of 16 KiB + 7 so that reads end mid-frame;
    /// stops when the server closes the connection.
    static func straddling(_ frame: Frame, count: Int, to connection: RawConnection) async {
        var one = ByteBuffer()
        one.writeFrame(frame)
        let total = one.readableBytes * count
        var sent = 0
        while sent < total, connection.isOpen {
            var piece = ByteBuffer()
            let end = min(sent + 16_391, total)
            var position = sent
            while position < end {
                let offset = position % one.readableBytes
                let length = min(end - position, one.readableBytes - offset)
                piece.writeBytes(one.readableBytesView[one.readerIndex + offset ..< one.readerIndex + offset + length])
                position += length
            }
            try? await connection.send(piece)
            sent = end
        }
    }

    @Test func framesThatStraddleReadsDoNotAccumulate() async throws {
        let cosid = try await CosidProcess()
        let connection = try await RawConnection.connect(port: cosid.port, tls: cosid.clientContext())
        try await connection.send([.settings()])
        try await Self.settled(connection)
        let baseline = try cosid.residentBytes()
        // 900 frames of an unknown type, 200 KiB each (180 MiB).
        await Self.straddling(Frame(type: FrameType(rawValue: 0x42), streamID: 0, payload: ByteBuffer(repeating: 7, count: 200 << 10)), count: 900, to: connection)
        // Still served (a PING is answered), and the bytes were not kept.
        try await connection.send([Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [1, 2, 3, 4, 5, 6, 7, 8]))])
        #expect(try await connection.waitForFrame { $0.type == .ping && $0.flags.contains(.ack) } != nil)
        let grown = try await Self.growth(cosid, from: baseline)
        #expect(grown < 32 * Self.mib, "cosid grew by \(grown / Self.mib) MiB for 180 MiB of frames")
        await connection.close()
    }

    @Test func aFloodOfSmallUnknownFramesEndsTheConnection() async throws {
        let cosid = try await CosidProcess()
        let connection = try await RawConnection.connect(port: cosid.port, tls: cosid.clientContext())
        try await connection.send([.settings()])
        try await Self.settled(connection)
        let baseline = try cosid.residentBytes()
        // 64 MiB of 1 KiB frames of an unknown type: ignored, but not without limit.
        await Self.straddling(Frame(type: FrameType(rawValue: 0x42), streamID: 0, payload: ByteBuffer(repeating: 7, count: 1_014)), count: 65_536, to: connection)
        let (frames, closed) = try await connection.framesUntilClosed(timeout: .seconds(5))
        #expect(frames.compactMap(\.goAway).last?.code == ConnectionErrorCode.enhanceYourCalm.rawValue)
        #expect(closed)
        let grown = try await Self.growth(cosid, from: baseline)
        #expect(grown < 16 * Self.mib, "cosid grew by \(grown / Self.mib) MiB")
    }

    @Test func aPeerThatDoesNotReadCannotMakeTheServerQueueAnswers() async throws {
        let cosid = try await CosidProcess()
        let connection = try await RawConnection.connect(port: cosid.port, tls: cosid.clientContext())
        try await connection.send([Self.openWindows])
        try await Self.settled(connection)
        try await connection.setReading(false)
        let baseline = try cosid.residentBytes()
        // HEADERS that do not decode: 11 bytes in, a TRAILERS of ~60 bytes out, half a million times.
        var id: UInt32 = 1
        for _ in 0..<8 {
            var bytes = ByteBuffer()
            for _ in 0..<65_536 {
                bytes.writeFrame(Frame(type: .headers, streamID: id, payload: ByteBuffer(bytes: [0xff])))
                id += 2
            }
            connection.sendWithoutWaiting(bytes)
        }
        let grown = try await Self.growth(cosid, from: baseline, window: .seconds(3))
        #expect(grown < 16 * Self.mib, "cosid grew by \(grown / Self.mib) MiB")
        await connection.close()
    }

    @Test func pipelinedGetsOfALargeResourceWaitForTheReader() async throws {
        let cosid = try await CosidProcess()
        // A resource of 3.5 MiB.
        try await withCosiClient(try cosid.clientConfiguration()) { client in
            _ = try await client.create(Resource(
                metadata: Metadata(namespace: "default", type: "Blobs.test.dev", id: "big"),
                spec: Spec(yamlSpec: "data: " + String(repeating: "x", count: 7 * Self.mib / 2) + "\n")
            ))
        }
        let connection = try await RawConnection.connect(port: cosid.port, tls: cosid.clientContext())
        try await connection.send([Self.openWindows])
        try await Self.settled(connection)
        try await connection.setReading(false)
        let baseline = try cosid.residentBytes()
        // 150 Gets in one write (~15 KiB), and never a byte read.
        var bytes = ByteBuffer()
        let request = GetRequest(namespace: "default", type: "Blobs.test.dev", id: "big").serializedBytes()
        for index in 0..<150 {
            let id = UInt32(2 * index + 1)
            bytes.writeFrame(Self.headers(id, "/cosi.resource.State/Get"))
            bytes.writeFrame(Frame(type: .message, flags: .endStream, streamID: id, payload: request))
        }
        connection.sendWithoutWaiting(bytes)
        let grown = try await Self.growth(cosid, from: baseline, window: .seconds(3))
        #expect(grown < 48 * Self.mib, "cosid grew by \(grown / Self.mib) MiB for 150 Gets of 3.5 MiB")
        await connection.close()
    }

    @Test func aListToAPeerThatDoesNotReadHoldsAWindowNotTheList() async throws {
        let cosid = try await CosidProcess()
        // 200 resources of 1 MiB.
        try await withCosiClient(try cosid.clientConfiguration()) { client in
            let data = "data: " + String(repeating: "x", count: Self.mib - 64) + "\n"
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<200 {
                    group.addTask {
                        _ = try await client.create(Resource(metadata: Metadata(namespace: "default", type: "Blobs.test.dev", id: "b\(index)"), spec: Spec(yamlSpec: data)))
                    }
                }
                try await group.waitForAll()
            }
        }
        // A reader with a 16 KiB window that starts 8 Lists and never reads.
        let connection = try await RawConnection.connect(port: cosid.port, tls: cosid.clientContext(name: "reader", roles: ["os:reader"]))
        try await connection.send([Frame.settings(Envelope.Settings(initialWindow: 16 << 10))])
        try await Self.settled(connection)
        try await connection.setReading(false)
        let baseline = try cosid.residentBytes()
        var bytes = ByteBuffer()
        let request = ListRequest(namespace: "default", type: "Blobs.test.dev").serializedBytes()
        for index in 0..<8 {
            let id = UInt32(2 * index + 1)
            bytes.writeFrame(Self.headers(id, "/cosi.resource.State/List"))
            bytes.writeFrame(Frame(type: .message, flags: .endStream, streamID: id, payload: request))
        }
        connection.sendWithoutWaiting(bytes)
        let grown = try await Self.growth(cosid, from: baseline, window: .seconds(3))
        // Each List holds its current message (1 MiB) and at most a 64 KiB chunk: not 200 MiB.
        #expect(grown < 48 * Self.mib, "cosid grew by \(grown / Self.mib) MiB for 8 unread Lists of 200 MiB")
        await connection.close()
    }

    @Test func overTheConnectionLimitAClientIsRefusedAtOnce() async throws {
        let cosid = try await CosidProcess(["--max-connections", "3"])
        var open: [RawConnection] = []
        for _ in 0..<3 {
            let connection = try await RawConnection.connect(port: cosid.port, tls: cosid.clientContext())
            try await connection.send([.settings()])
            try await Self.settled(connection)
            open.append(connection)
        }
        let clock = ContinuousClock()
        let started = clock.now
        await #expect {
            try await withCosiClient(try cosid.clientConfiguration()) { _ = try await $0.info() }
        } throws: { error in
            // Closed as it was accepted: the client sees the close, or a reset when its hello
            // arrived first.
            (error as? RPCError)?.code == .unavailable && ("\(error)".contains("closed the connection") || "\(error)".contains("reset by peer"))
        }
        // Refused, not left to time out (the client's own timeout is 10 s).
        #expect(clock.now - started < .seconds(2), "refused after \(clock.now - started)")
        try await CosidProcessTests.waitFor("connection refused: the server has 3 connections open", in: cosid.output)
        // One goes: a new client gets in.
        await open.removeLast().close()
        try await eventually("a place again") {
            (try? await withCosiClient(try cosid.clientConfiguration()) { try await $0.info() }) != nil
        }
        for connection in open { await connection.close() }
    }

    /// HEADERS and a 4 MiB request message without END_STREAM on `count` streams.
    static func incompleteRequests(_ count: Int) -> ByteBuffer {
        var bytes = ByteBuffer()
        let body = ByteBuffer(repeating: 0x0a, count: 4 * mib - 64)
        for index in 0..<count {
            let id = UInt32(2 * index + 1)
            bytes.writeFrame(headers(id, "/cosi.resource.State/Get"))
            bytes.writeFrame(Frame(type: .message, streamID: id, payload: body))
        }
        return bytes
    }

    @Test func aCallerWithoutARoleIsRefusedBeforeItsRequestIsBuffered() async throws {
        let cosid = try await CosidProcess()
        let connection = try await RawConnection.connect(port: cosid.port, tls: cosid.clientContext(roles: []))
        try await connection.send([.settings()])
        try await Self.settled(connection)
        let baseline = try cosid.residentBytes()
        // 64 incomplete requests of 4 MiB (256 MiB): each call is refused at its HEADERS, and
        // what follows is dropped, its connection credit given back.
        try await connection.send(Self.incompleteRequests(64))
        let last = try await connection.waitForFrame { $0.type == .trailers && $0.streamID == 127 }
        #expect(last?.status?.code == RPCStatus.Code.permissionDenied.rawValue)
        #expect(connection.frames.filter { $0.type == .trailers }.count == 64)
        #expect(connection.frames.compactMap(\.goAway).isEmpty, "the connection stays usable")
        let grown = try await Self.growth(cosid, from: baseline)
        #expect(grown < 32 * Self.mib, "cosid grew by \(grown / Self.mib) MiB")
        await connection.close()
    }

    @Test func incompleteRequestsAreBoundedByTheConnectionWindow() async throws {
        let cosid = try await CosidProcess()
        let connection = try await RawConnection.connect(port: cosid.port, tls: cosid.clientContext(roles: ["os:reader"]))
        try await connection.send([.settings()])
        try await Self.settled(connection)
        let baseline = try cosid.residentBytes()
        // A reader may call Get, but its incomplete requests keep their connection credit: past
        // the 16 MiB window (plus the message that crossed it), the next is a flow-control error.
        connection.sendWithoutWaiting(Self.incompleteRequests(64))
        let (frames, closed) = try await connection.framesUntilClosed(timeout: .seconds(20))
        #expect(frames.compactMap(\.goAway).last?.code == ConnectionErrorCode.flowControlError.rawValue)
        #expect(closed)
        let grown = try await Self.growth(cosid, from: baseline)
        #expect(grown < 48 * Self.mib, "cosid grew by \(grown / Self.mib) MiB")
    }

    @Test func aPeerThatTricklesItsSettingsIsDropped() async throws {
        let cosid = try await CosidProcess(["--handshake-timeout", "1"])
        let connection = try await RawConnection.connect(port: cosid.port, tls: cosid.clientContext())
        var settings = ByteBuffer()
        settings.writeFrame(.settings())
        let clock = ContinuousClock()
        let start = clock.now
        // One byte every 300 ms (the hostile peer's pace, not a wait): it would take 3 s to
        // complete the frame.
        while connection.isOpen, let byte = settings.readSlice(length: 1) {
            try? await connection.send(byte)
            try await Task.sleep(for: .milliseconds(300))
        }
        _ = try await connection.framesUntilClosed(timeout: .seconds(5))
        #expect(!connection.isOpen)
        #expect(clock.now - start < .seconds(3), "dropped after \(clock.now - start)")
    }

    @Test func aCatastrophicRegexpCostsNothingAndStarvesNoOne() async throws {
        let cosid = try await CosidProcess()
        let admin = try cosid.clientConfiguration()
        let reader = try cosid.clientConfiguration(name: "reader", roles: ["os:reader"])
        try await withCosiClient(admin) { client in
            for index in 0..<200 {
                _ = try await client.create(Resource(
                    metadata: Metadata(namespace: "default", type: "Ids.test.dev", id: String(repeating: "a", count: 40) + "!\(index)"),
                    spec: Spec(yamlSpec: "x: 1\n")
                ))
            }
        }
        let clock = ContinuousClock()
        try await withCosiClient(admin) { writer in
            try await withThrowingTaskGroup(of: Duration.self) { group in
                // Two readers list with (a+)+$, which never ends on a backtracking engine...
                for _ in 0..<2 {
                    group.addTask {
                        try await withCosiClient(reader) { client in
                            let start = clock.now
                            let found = try await client.list(namespace: "default", type: "Ids.test.dev", idQuery: IDQuery(regexp: "^(a+)+$"), timeout: .seconds(30))
                            #expect(found.isEmpty)
                            return clock.now - start
                        }
                    }
                }
                // ...while someone else writes.
                group.addTask {
                    let start = clock.now
                    _ = try await writer.create(Resource(metadata: Metadata(namespace: "default", type: "Ids.test.dev", id: "other"), spec: Spec(yamlSpec: "x: 2\n")))
                    return clock.now - start
                }
                for try await elapsed in group {
                    #expect(elapsed < .seconds(2), "a call took \(elapsed)")
                }
            }
        }
    }
}
