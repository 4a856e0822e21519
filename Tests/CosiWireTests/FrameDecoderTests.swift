import CosiWire
import NIOCore
import Testing

@Suite("Frame decoder")
struct FrameDecoderTests {
    static func sampleFrames() -> [Frame] {
        var frames = [Frame(type: .settings, streamID: 0, payload: ByteBuffer(bytes: [0x08, 0x80, 0x80, 0x01]))]
        for id in UInt32(1)...40 {
            frames.append(Frame(type: .headers, streamID: id, payload: ByteBuffer(string: "/svc/Method\(id)")))
            frames.append(Frame(type: .message, flags: .endStream, streamID: id, payload: ByteBuffer(bytes: (0..<Int(id * 37)).map { UInt8($0 & 0xff) })))
            frames.append(Frame(type: .message, streamID: id, payload: ByteBuffer()))
        }
        frames.append(Frame(type: .ping, flags: .ack, streamID: 0, payload: ByteBuffer(bytes: [1, 2, 3, 4, 5, 6, 7, 8])))
        return frames
    }

    static func encode(_ frames: [Frame]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for frame in frames { buffer.writeFrame(frame) }
        return buffer
    }

    static func decodeAll(_ chunks: [ByteBuffer]) throws -> [Frame] {
        var decoder = FrameDecoder(maxFrameSize: 1 << 20)
        var frames: [Frame] = []
        for chunk in chunks {
            decoder.append(chunk)
            while let frame = try decoder.nextFrame() { frames.append(frame) }
        }
        #expect(decoder.bufferedBytes == 0)
        return frames
    }

    @Test func allAtOnce() throws {
        let frames = Self.sampleFrames()
        #expect(try Self.decodeAll([Self.encode(frames)]) == frames)
    }

    @Test func byteByByte() throws {
        let frames = Self.sampleFrames()
        var bytes = Self.encode(frames)
        var chunks: [ByteBuffer] = []
        while let byte = bytes.readSlice(length: 1) { chunks.append(byte) }
        #expect(try Self.decodeAll(chunks) == frames)
    }

    @Test(arguments: [1, 2, 3, 42, 1234])
    func randomSplits(seed: UInt64) throws {
        var generator = SplitMix(seed: seed)
        let frames = Self.sampleFrames()
        var bytes = Self.encode(frames)
        var chunks: [ByteBuffer] = []
        while bytes.readableBytes > 0 {
            let length = Int.random(in: 1...min(64, bytes.readableBytes), using: &generator)
            chunks.append(bytes.readSlice(length: length)!)
        }
        #expect(try Self.decodeAll(chunks) == frames)
    }

    @Test func oversizedLengthIsRejectedBeforeThePayloadArrives() throws {
        var decoder = FrameDecoder(maxFrameSize: 16_384)
        var bytes = ByteBuffer()
        bytes.writeFrame(Frame(type: .settings, streamID: 0))
        // Only the header of a 16 KiB + 1 frame: no payload byte has been sent.
        bytes.writeFrameHeader(FrameHeader(length: 16_385, type: .message, streamID: 1))
        decoder.append(bytes)
        #expect(try decoder.nextFrame()?.type == .settings)
        #expect(throws: FrameDecodingError.self) { try decoder.nextFrame() }
        do {
            _ = try decoder.nextFrame()
        } catch {
            #expect(error.code == .frameTooLarge)
        }
    }

    @Test func frameAtTheLimitIsAccepted() throws {
        var decoder = FrameDecoder(maxFrameSize: 16_384, requireSettingsFirst: false)
        var bytes = ByteBuffer()
        bytes.writeFrame(Frame(type: .message, streamID: 1, payload: ByteBuffer(repeating: 7, count: 16_384)))
        decoder.append(bytes)
        #expect(try decoder.nextFrame()?.payload.readableBytes == 16_384)
    }

    @Test func unknownFrameTypesAreReturnedForTheReceiverToIgnore() throws {
        var bytes = ByteBuffer()
        bytes.writeFrame(Frame(type: .settings, streamID: 0))
        bytes.writeFrame(Frame(type: FrameType(rawValue: 0x42), streamID: 7, payload: ByteBuffer(string: "future")))
        bytes.writeFrame(Frame(type: FrameType(rawValue: 0xff), streamID: 0))
        bytes.writeFrame(Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 1])))
        let frames = try Self.decodeAll([bytes])
        #expect(frames.map(\.type) == [.settings, FrameType(rawValue: 0x42), FrameType(rawValue: 0xff), .ping])
        #expect(frames.map(\.type.isKnown) == [true, false, false, true])
    }

    @Test func bytesOfReturnedFramesAreNotRetained() throws {
        // Frames that straddle reads (as TLS records ending mid-frame make them): the buffer never
        // holds much more than one frame, however many went through.
        var decoder = FrameDecoder(maxFrameSize: 4 << 20)
        var first = ByteBuffer()
        first.writeFrame(Frame(type: .settings, streamID: 0))
        decoder.append(first)
        _ = try decoder.nextFrame()
        var stream = ByteBuffer()
        for _ in 0..<2_000 {
            stream.writeFrame(Frame(type: FrameType(rawValue: 0x42), streamID: 0, payload: ByteBuffer(repeating: 1, count: 10_000)))
        }
        var count = 0
        var largest = 0
        while stream.readableBytes > 0 {
            // 16 KiB + 7: never aligned with a frame boundary.
            decoder.append(stream.readSlice(length: min(16_391, stream.readableBytes))!)
            while try decoder.nextFrame() != nil { count += 1 }
            largest = max(largest, decoder.retainedBytes)
        }
        #expect(count == 2_000)
        #expect(largest < 2 * 16_391 + 10_010, "retained up to \(largest) bytes")
    }

    @Test func httpRequestFirstIsAProtocolErrorNotAFrameSizeError() throws {
        var decoder = FrameDecoder(maxFrameSize: 4 << 20)
        decoder.append(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        do {
            _ = try decoder.nextFrame()
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .notSettingsFirst)
        }
    }

    @Test func settingsAckFirstIsRejected() throws {
        var decoder = FrameDecoder(maxFrameSize: 4 << 20)
        var bytes = ByteBuffer()
        bytes.writeFrame(Frame(type: .settings, flags: .ack, streamID: 0))
        decoder.append(bytes)
        #expect(throws: FrameDecodingError.self) { try decoder.nextFrame() }
    }

    @Test func firstFrameTypeIsCheckedFromSixBytes() throws {
        var decoder = FrameDecoder(maxFrameSize: 4 << 20)
        decoder.append(ByteBuffer(bytes: [0, 0, 0, 0, 0x3, 0]))
        #expect(throws: FrameDecodingError.self) { try decoder.nextFrame() }
    }
}

/// A small deterministic random generator, so split tests are reproducible.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
