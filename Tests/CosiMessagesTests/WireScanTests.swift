import CosiMessages
import CosiProtobuf
import NIOCore
import Testing

/// The access check reads a request's namespace and type with `WireScan` instead of decoding it;
/// what it reads must be what the decoder (and so the handler) reads, or a check could pass on
/// one value while the handler acts on another.
@Suite("Wire scan")
struct WireScanTests {
    func bytes(_ message: some ProtobufMessage) -> ByteBuffer {
        message.serializedBytes()
    }

    @Test func readsTheFieldsTheDecoderReads() throws {
        let get = bytes(GetRequest(namespace: "default", type: "Hostnames", id: "node-1"))
        #expect(try WireScan.string(at: [1], in: get) == "default")
        #expect(try WireScan.string(at: [2], in: get) == "Hostnames")
        #expect(try WireScan.string(at: [4], in: get) == nil)

        let resource = Resource(metadata: Metadata(namespace: "ns", type: "Type", id: "x", version: "1"), spec: Spec(yamlSpec: "a: 1"))
        let create = bytes(CreateRequest(resource: resource))
        #expect(try WireScan.string(at: [1, 1, 1], in: create) == "ns")
        #expect(try WireScan.string(at: [1, 1, 2], in: create) == "Type")
        #expect(try WireScan.contains([1], in: create))
        #expect(try !WireScan.contains([2], in: bytes(CreateRequest(resource: nil))))
    }

    /// Repeated fields: the last occurrence wins, embedded messages merge (protobuf's rules),
    /// exactly as protobuf-c decodes them.
    @Test func lastOccurrenceWinsAsInTheDecoder() throws {
        var buffer = bytes(GetRequest(namespace: "first", type: "A"))
        buffer.writeImmutableBuffer(bytes(GetRequest(namespace: "second")))
        #expect(try WireScan.string(at: [1], in: buffer) == "second")
        #expect(try WireScan.string(at: [2], in: buffer) == "A")
        let decoded = try GetRequest(serializedBytes: buffer)
        #expect(decoded.namespace == "second" && decoded.type == "A")

        // Two Resource fields in one CreateRequest: metadata merges field by field.
        var create = bytes(CreateRequest(resource: Resource(metadata: Metadata(namespace: "ns1", type: "T1", id: "i", version: "1"))))
        create.writeImmutableBuffer(bytes(CreateRequest(resource: Resource(metadata: Metadata(namespace: "", type: "T2", id: "", version: "")))))
        let merged = try CreateRequest(serializedBytes: create)
        #expect(try WireScan.string(at: [1, 1, 1], in: create) == merged.resource?.metadata.namespace)
        #expect(try WireScan.string(at: [1, 1, 2], in: create) == merged.resource?.metadata.type)
    }

    /// A NUL byte or invalid UTF-8 in a string reads the same in the scan and in the decoder.
    @Test func oddStringsReadAsTheDecoderReadsThem() throws {
        for raw: [UInt8] in [Array("safe\u{0}Secrets".utf8), [0x73, 0xff, 0xfe, 0x74], [0]] {
            var buffer = ByteBuffer()
            buffer.writeBytes([0x0a, UInt8(raw.count)] + raw)  // field 1 (namespace), length-delimited
            buffer.writeBytes([0x12, UInt8(raw.count)] + raw)  // field 2 (type)
            let decoded = try GetRequest(serializedBytes: buffer)
            #expect(try WireScan.string(at: [1], in: buffer) == decoded.namespace)
            #expect(try WireScan.string(at: [2], in: buffer) == decoded.type)
        }
    }

    /// What a light client reads from a watch response without decoding it: each event, its
    /// type, its resource's id and update time, its bookmark.
    @Test func readsEventsOfAWatchResponseAsTheDecoderDoes() throws {
        var metadata = Metadata(namespace: "ns", type: "T", id: "r1", version: "3")
        metadata.updated = Timestamp(seconds: 1_700_000_000, nanos: 123_456_789)
        let events = [
            Event(resource: Resource(metadata: metadata, spec: Spec(yamlSpec: "a: 1")), type: .updated, bookmark: [1, 0, 0, 0, 0, 0, 0, 0, 42]),
            Event(resource: nil, type: .errored, error: "gone"),
        ]
        let response = encodeWatchResponse(events)
        let scanned = try WireScan.occurrences(of: 1, in: response)
        #expect(scanned.count == 2)
        #expect(try WireScan.varint(at: [2], in: scanned[0]) == UInt64(EventType.updated.rawValue))
        #expect(try WireScan.string(at: [1, 1, 3], in: scanned[0]) == "r1")
        #expect(try WireScan.varint(at: [1, 1, 8, 1], in: scanned[0]) == 1_700_000_000)
        #expect(try WireScan.varint(at: [1, 1, 8, 2], in: scanned[0]) == 123_456_789)
        #expect(try WireScan.bytes(at: [5], in: scanned[0]).map { Array(buffer: $0) } == [1, 0, 0, 0, 0, 0, 0, 0, 42])
        #expect(try WireScan.varint(at: [2], in: scanned[1]) == UInt64(EventType.errored.rawValue))
        #expect(try WireScan.string(at: [1, 1, 3], in: scanned[1]) == nil)
    }

    @Test func garbageIsRefused() {
        let cases: [[UInt8]] = [
            [0x0a, 0x05, 0x61],  // a length past the end
            [0x0b],  // wire type 3 (groups) is not accepted
            [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],  // an 11-byte varint
            [0x09, 0x00],  // a fixed64 cut short
        ]
        for garbage in cases {
            #expect(throws: WireScanError.self) { try WireScan.string(at: [1], in: ByteBuffer(bytes: garbage)) }
        }
    }
}
