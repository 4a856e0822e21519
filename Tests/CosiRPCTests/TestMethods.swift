import CosiRPC
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Methods for transport tests: they work on raw bytes and record what they observed.
final class Observations: Sendable {
    private let state = NIOLockedValueBox((cancelled: Set<String>(), written: [String: Int](), started: Set<String>(), ended: Set<String>()))

    func markEnded(_ key: String) { _ = state.withLockedValue { $0.ended.insert(key) } }
    func wasEnded(_ key: String) -> Bool { state.withLockedValue { $0.ended.contains(key) } }

    func markStarted(_ key: String) { _ = state.withLockedValue { $0.started.insert(key) } }
    func wasStarted(_ key: String) -> Bool { state.withLockedValue { $0.started.contains(key) } }

    func markCancelled(_ key: String) { _ = state.withLockedValue { $0.cancelled.insert(key) } }
    func wasCancelled(_ key: String) -> Bool { state.withLockedValue { $0.cancelled.contains(key) } }
    func setWritten(_ key: String, _ count: Int) { state.withLockedValue { $0.written[key] = count } }
    func written(_ key: String) -> Int { state.withLockedValue { $0.written[key] ?? 0 } }
}

enum TestMethods {
    static let echo = "/test.Echo/Echo"
    static let count = "/test.Echo/Count"
    static let sleep = "/test.Echo/Sleep"
    static let hang = "/test.Echo/Hang"
    static let infinite = "/test.Echo/Infinite"
    static let lingering = "/test.Echo/Lingering"
    static let typed = "/test.Echo/Typed"
    static let typedInline = "/test.Echo/TypedInline"

    /// A request holding `value` as a big-endian UInt32 (a count, or milliseconds).
    static func number(_ value: UInt32) -> ByteBuffer {
        var request = ByteBuffer()
        request.writeInteger(value)
        return request
    }

    /// Reads a big-endian UInt32 from the request (the count, or milliseconds to sleep).
    static func number(_ request: ByteBuffer) -> Int {
        Int(request.getInteger(at: request.readerIndex, as: UInt32.self) ?? 0)
    }

    static func table(_ observations: Observations) -> RPCMethodTable {
        RPCMethodTable([
            RPCMethod(name: echo, handler: .unary { request, _ in request }),
            // Streams N messages, each holding its index.
            RPCMethod(name: count, handler: .serverStreaming { request, _, writer in
                for index in 0..<number(request) {
                    var message = ByteBuffer()
                    message.writeInteger(UInt32(index))
                    try await writer.write(message)
                }
            }),
            // Sleeps N ms, then echoes.
            RPCMethod(name: sleep, handler: .unary { request, context in
                observations.markStarted(context.metadata["key"] ?? "")
                do {
                    try await Task.sleep(for: .milliseconds(number(request)))
                } catch {
                    observations.markCancelled(context.metadata["key"] ?? "")
                    throw error
                }
                return request
            }),
            // Waits until cancelled (a watch-like call).
            RPCMethod(name: hang, handler: .serverStreaming { _, context, _ in
                observations.markStarted(context.metadata["key"] ?? "")
                do {
                    try await Task.sleep(for: .seconds(3600))
                } catch {
                    observations.markCancelled(context.metadata["key"] ?? "")
                    throw error
                }
            }, waitsOnOthers: true),
            // Waits until cancelled, then takes 200 ms to clean up before it ends.
            RPCMethod(name: lingering, handler: .unary { request, context in
                let key = context.metadata["key"] ?? ""
                observations.markStarted(key)
                defer { observations.markEnded(key) }
                do {
                    try await Task.sleep(for: .seconds(3600))
                } catch {
                    usleep(200_000)
                    throw error
                }
                return request
            }),
            // Writes 1 KiB messages forever, recording how many were accepted.
            RPCMethod(name: infinite, handler: .serverStreaming { _, context, writer in
                let key = context.metadata["key"] ?? ""
                let message = ByteBuffer(repeating: 0x5a, count: 1024)
                var written = 0
                while true {
                    try await writer.write(message)
                    written += 1
                    observations.setWritten(key, written)
                }
            }),
            .unary(typed, Envelope.InfoRequest.self, Envelope.InfoResponse.self) { _, context in
                Envelope.InfoResponse(version: "typed", identity: context.peer.commonName, roles: context.peer.organizations)
            },
            .unaryOnLoop(typedInline, Envelope.InfoRequest.self, Envelope.InfoResponse.self) { _, context in
                guard context.metadata["fail"] == nil else { throw RPCError(code: .notFound, message: "asked to fail") }
                return Envelope.InfoResponse(version: "inline", identity: context.peer.commonName)
            },
        ])
    }
}
