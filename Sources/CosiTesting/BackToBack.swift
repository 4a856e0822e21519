import NIOCore
import NIOEmbedded

/// Two `EmbeddedChannel`s joined back to back, as swift-nio-ssl tests its handler: what one
/// writes to its "socket" the other reads, when ``interact()`` moves it. Handlers that speak to a
/// peer (TLS, the connection handlers) are tested so without sockets, on the loops' virtual time
/// (`advanceTime`), deterministically.
public struct BackToBack {
    public let client: EmbeddedChannel
    public let server: EmbeddedChannel
    /// What reached the end of each pipeline: user events, errors, and reads.
    public let clientEvents = Recorder()
    public let serverEvents = Recorder()

    /// Both channels with their handlers (and a ``Recorder`` at the end), connected: their
    /// handlers see `channelActive` (a TLS client starts its handshake).
    public init(client clientHandlers: [any ChannelHandler], server serverHandlers: [any ChannelHandler]) throws {
        client = EmbeddedChannel()
        server = EmbeddedChannel()
        try client.pipeline.syncOperations.addHandlers(clientHandlers + [clientEvents])
        try server.pipeline.syncOperations.addHandlers(serverHandlers + [serverEvents])
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
        try server.connect(to: address).wait()
        try client.connect(to: address).wait()
    }

    /// Moves bytes both ways until neither side has anything more to send.
    public func interact() throws {
        var moved = true
        while moved {
            moved = false
            client.embeddedEventLoop.run()
            server.embeddedEventLoop.run()
            while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                try server.writeInbound(bytes)
                moved = true
            }
            while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                try client.writeInbound(bytes)
                moved = true
            }
        }
    }

    /// Records what reaches the end of a pipeline (and keeps errors from the channel's own
    /// error check, so a test can look at them).
    public final class Recorder: ChannelInboundHandler, @unchecked Sendable {
        // @unchecked Sendable: used on its embedded loop only, which is the test's thread.
        public typealias InboundIn = Any
        public private(set) var events: [Any] = []
        /// Reads that are not bytes (a connection handler's calls).
        public private(set) var messages: [Any] = []
        public private(set) var errors: [any Error] = []
        public private(set) var received = ByteBuffer()
        public private(set) var active = false

        public init() {}

        public func channelActive(context: ChannelHandlerContext) { active = true }
        public func channelInactive(context: ChannelHandlerContext) { active = false }
        public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let value = unwrapInboundIn(data)
            if let data = value as? IOData, case .byteBuffer(var bytes) = data {
                received.writeBuffer(&bytes)
            } else {
                messages.append(value)
            }
        }
        public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) { events.append(event) }
        public func errorCaught(context: ChannelHandlerContext, error: any Error) { errors.append(error) }

        /// The bytes read since the last call.
        public func takeReceived() -> ByteBuffer {
            defer { received.clear() }
            return received
        }

        /// The first event of a type.
        public func first<T>(_ type: T.Type) -> T? { events.lazy.compactMap { $0 as? T }.first }
    }
}
