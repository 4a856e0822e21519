import CosiMessages
import CosiProtobuf
import CosiTesting
import Foundation
import NIOCore
import Testing

@Suite("Wire compatibility with an independent protobuf implementation")
struct WireCompatibilityTests {
    static func golden(_ name: String) throws -> [UInt8] {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "bin", subdirectory: "Golden"))
        return Array(try Data(contentsOf: url))
    }

    static func resource(version: String, yaml: String) -> Resource {
        Resource(
            metadata: Metadata(
                namespace: "network", type: "HostnameSpecs.net.talos.dev", id: "hostname", version: version,
                owner: "network.HostnameSpecController", phase: "running",
                created: Timestamp(seconds: 1_700_000_000, nanos: 123_456_789),
                updated: Timestamp(seconds: 1_700_000_100, nanos: 42),
                finalizers: ["network.HostnameController", "ünïcode-finalizer"],
                labels: ["zone": "eu-1", "app": "cosi", "tier": "node"],
                annotations: ["note": "golden bytes", "empty": ""]
            ),
            spec: Spec(protoSpec: Array(stride(from: 0, to: 256, by: 7).map { UInt8($0) }), yamlSpec: yaml)
        )
    }

    static let fullResource = resource(version: "3", yaml: "hostname: talos-1\ndomainname: example.org\n")
    static let fullEvent = Event(
        resource: fullResource, type: .updated,
        old: resource(version: "2", yaml: "hostname: talos-0\n"),
        error: "", bookmark: [0, 0, 0, 0, 0, 0, 0x30, 0x39]
    )

    @Test func resourceBytesEqualTheIndependentEncoding() throws {
        let ours = Array(buffer: Self.fullResource.serializedBytes())
        #expect(ours == (try Self.golden("resource")))
    }

    @Test func eventBytesEqualTheIndependentEncoding() throws {
        let ours = Array(buffer: Self.fullEvent.serializedBytes())
        #expect(ours == (try Self.golden("event")))
    }

    @Test func independentBytesDecodeToTheSameValues() throws {
        #expect(try Resource(serializedBytes: Self.golden("resource")) == Self.fullResource)
        let event = try Event(serializedBytes: Self.golden("event"))
        #expect(event == Self.fullEvent)
        // Explicit presence: an empty error string is present, not absent.
        #expect(event.error == "")
    }

    @Test func absentOptionalFieldsStayAbsent() throws {
        let event = Event(resource: Self.fullResource, type: .created)
        let decoded = try Event(serializedBytes: event.serializedBytes())
        #expect(decoded.error == nil)
        #expect(decoded.bookmark == nil)
        #expect(decoded.old == nil)
    }
}

@Suite("Decoding bad input")
struct DecodingTests {
    @Test func truncatedBufferThrows() throws {
        let bytes = Array(buffer: WireCompatibilityTests.fullEvent.serializedBytes())
        for cut in [1, 2, 10, bytes.count / 2, bytes.count - 1] {
            #expect(throws: MessageDecodingError.self) { try Event(serializedBytes: Array(bytes.prefix(cut))) }
        }
    }

    @Test func garbageThrows() throws {
        #expect(throws: MessageDecodingError.self) { try Resource(serializedBytes: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) }
        // Field 1 (metadata) claims 100 bytes, only 2 follow.
        #expect(throws: MessageDecodingError.self) { try Resource(serializedBytes: [0x0a, 100, 1, 2]) }
    }

    /// Random bytes decode or fail cleanly, and an event that decodes encodes to bytes that decode
    /// to the same event (COSI_TEST_SEED replays a failure's seed).
    @Test func randomBytesDecodeOrFailAndWhatDecodesRoundTrips() throws {
        var generator = SeededGenerator()
        let seed = generator.seed
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            guard let event = try? Event(serializedBytes: bytes) else { continue }
            #expect((try? Event(serializedBytes: event.serializedBytes())) == event, "seed \(seed): \(bytes)")
        }
    }

    @Test func unknownFieldsAreTolerated() throws {
        var bytes = Array(buffer: WireCompatibilityTests.fullResource.serializedBytes())
        // Field 15, length-delimited, and field 16, varint: unknown to this schema.
        bytes += [0x7a, 3, 0x61, 0x62, 0x63, 0x80, 0x01, 0x2a]
        #expect(try Resource(serializedBytes: bytes) == WireCompatibilityTests.fullResource)
    }
}
