import CosiProtobuf
import CosiRPC
import CosiTesting
import NIOCore
import Testing

/// The COSI-RPC/1 envelope messages (generated into CosiRPC) round-trip through protobuf-c, and
/// garbage never crashes their decoders.
@Suite("Envelope messages")
struct EnvelopeTests {
    @Test func envelopeRoundTrip() throws {
        let headers = Envelope.CallHeaders(method: "/cosi.resource.State/Get", metadata: ["b": "2", "a": "1"], timeoutMS: 1500)
        #expect(try Envelope.CallHeaders(serializedBytes: headers.serializedBytes()) == headers)
        let status = Envelope.Status(code: 5, message: "not found", details: ["field": "id"])
        #expect(try Envelope.Status(serializedBytes: status.serializedBytes()) == status)
        let settings = Envelope.Settings(maxFrameSize: 1 << 20, maxConcurrentStreams: 7, initialWindow: 65536, initialConnectionWindow: 1 << 24)
        #expect(try Envelope.Settings(serializedBytes: settings.serializedBytes()) == settings)
        #expect(try Envelope.InfoRequest(serializedBytes: ByteBuffer()) == Envelope.InfoRequest())
    }

    /// Random bytes decode or fail cleanly, and what decodes encodes to bytes that decode to the
    /// same value (COSI_TEST_SEED replays a failure's seed).
    @Test func randomBytesDecodeOrFailAndWhatDecodesRoundTrips() throws {
        var generator = SeededGenerator()
        let seed = generator.seed
        func roundTrips<M: ProtobufMessage & Equatable>(_ type: M.Type, _ bytes: [UInt8]) -> Bool {
            guard let message = try? M(serializedBytes: bytes) else { return true }
            return (try? M(serializedBytes: message.serializedBytes())) == message
        }
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(roundTrips(Envelope.CallHeaders.self, bytes), "seed \(seed): \(bytes)")
            #expect(roundTrips(Envelope.Settings.self, bytes), "seed \(seed): \(bytes)")
            #expect(roundTrips(Envelope.Status.self, bytes), "seed \(seed): \(bytes)")
            #expect(roundTrips(Envelope.GoAway.self, bytes), "seed \(seed): \(bytes)")
        }
    }
}
