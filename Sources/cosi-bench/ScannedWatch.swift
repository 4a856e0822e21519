import CosiClient
import CosiMessages
import CosiProtobuf
import CosiRPC
import NIOCore

/// What the benchmarks check of a watch event.
struct ScannedEvent {
    var type: EventType
    var id: String?
    var yamlSpec: String?
    /// The resource's `metadata.updated`, in microseconds since the epoch.
    var updatedMicroseconds: UInt64?
    var bookmark: [UInt8]?
}

/// The events of a watch, read the way a light client reads them: each response is scanned for
/// the few fields the benchmark checks (`WireScan`) instead of decoded whole, so that the load
/// generator, which shares the machine's cores with the server, spends little per event. With
/// `decode`, each response is decoded whole by the client library (as `cosictl` does).
struct ScannedWatch: AsyncSequence {
    typealias Element = [ScannedEvent]
    let stream: RPCResponseStream
    let decode: Bool

    init(_ client: CosiClient, _ request: WatchRequest, decode: Bool) {
        stream = client.connection.serverStream("/cosi.resource.State/Watch", request: request.serializedBytes())
        self.decode = decode
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: RPCResponseStream.AsyncIterator
        let decode: Bool

        mutating func next() async throws -> [ScannedEvent]? {
            guard let bytes = try await base.next() else { return nil }
            return decode ? try Self.decoded(bytes) : try Self.scanned(bytes)
        }

        static func decoded(_ bytes: ByteBuffer) throws -> [ScannedEvent] {
            try WatchResponse(serializedBytes: bytes).event.map { event in
                ScannedEvent(
                    type: event.type, id: event.resource?.metadata.id, yamlSpec: event.resource?.spec.yamlSpec,
                    updatedMicroseconds: event.resource?.metadata.updated.map { UInt64($0.seconds) * 1_000_000 + UInt64($0.nanos / 1000) },
                    bookmark: event.bookmark
                )
            }
        }

        /// One pass over the response's bytes, no copies: each event's type, bookmark, and its
        /// resource's id, update time and YAML spec.
        static func scanned(_ bytes: ByteBuffer) throws -> [ScannedEvent] {
            try bytes.withUnsafeReadableBytes { response throws(WireScanError) in
                var events: [ScannedEvent] = []
                try WireScan.forEachField(in: response) { number, field throws(WireScanError) in
                    guard number == 1, case .bytes(let event) = field else { return }
                    events.append(try scanEvent(event))
                }
                return events
            }
        }

        static func scanEvent(_ bytes: UnsafeRawBufferPointer) throws(WireScanError) -> ScannedEvent {
            var event = ScannedEvent(type: EventType(rawValue: 0))
            try WireScan.forEachField(in: bytes) { number, field throws(WireScanError) in
                switch (number, field) {
                case (2, .varint(let type)): event.type = EventType(rawValue: Int32(truncatingIfNeeded: type))
                case (5, .bytes(let bookmark)): event.bookmark = Array(bookmark)
                case (1, .bytes(let resource)):
                    try WireScan.forEachField(in: resource) { number, field throws(WireScanError) in
                        switch (number, field) {
                        case (1, .bytes(let metadata)):
                            try WireScan.forEachField(in: metadata) { number, field throws(WireScanError) in
                                switch (number, field) {
                                case (3, .bytes(let id)): event.id = String(decoding: id, as: UTF8.self)
                                case (8, .bytes(let updated)):
                                    var seconds: UInt64 = 0, nanos: UInt64 = 0
                                    try WireScan.forEachField(in: updated) { number, field throws(WireScanError) in
                                        if case .varint(let value) = field {
                                            if number == 1 { seconds = value } else if number == 2 { nanos = value }
                                        }
                                    }
                                    event.updatedMicroseconds = seconds * 1_000_000 + nanos / 1000
                                default: break
                                }
                            }
                        case (2, .bytes(let spec)):
                            try WireScan.forEachField(in: spec) { number, field throws(WireScanError) in
                                if number == 2, case .bytes(let yaml) = field { event.yamlSpec = String(decoding: yaml, as: UTF8.self) }
                            }
                        default: break
                        }
                    }
                default: break
                }
            }
            return event
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: stream.makeAsyncIterator(), decode: decode) }
}
