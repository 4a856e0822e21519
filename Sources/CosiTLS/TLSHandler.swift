import Logging
import NIOCore

/// Fired through the pipeline when the TLS handshake has completed and the peer is authenticated.
public struct TLSHandshakeCompleted: Sendable {
    /// The identity in the peer's certificate (always present on a server: clients must present one).
    public var peer: PeerIdentity?
    /// The protocol agreed through ALPN, or nil when the client offered none.
    public var alpn: String?
    /// The peer's certificate, kept to check it again later (expiry, a changed trust store).
    public var certificate: PeerCertificate?

    public init(peer: PeerIdentity?, alpn: String?, certificate: PeerCertificate? = nil) {
        self.peer = peer
        self.alpn = alpn
        self.certificate = certificate
    }
}

/// A SwiftNIO handler that runs TLS over OpenSSL memory BIOs.
///
/// Inbound: ciphertext in, plaintext out. Outbound: plaintext in, ciphertext out. Application
/// writes made before the handshake completes are held until it does. A handshake that has not
/// completed within `handshakeTimeout` closes the channel. Errors are fired as ``TLSError`` and
/// the channel is closed.
///
/// Not `Sendable`: it lives on its channel's event loop.
public final class TLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        case handshaking
        case active
        case closed
    }

    private let connection: TLSConnection
    private let handshakeTimeout: TimeAmount
    private var state: State = .idle
    private var timeoutTask: Scheduled<Void>?
    private var heldWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var heldFlush = false
    /// Promises of plaintext writes whose ciphertext has not been written to the channel yet.
    private var pendingPromises: [EventLoopPromise<Void>] = []

    /// - Parameters:
    ///   - context: the shared OpenSSL context (its role decides client or server behaviour).
    ///   - serverName: for a client, the host name or IP the server certificate must match.
    ///   - handshakeTimeout: how long the handshake may take.
    public init(context: TLSContext, serverName: String? = nil, handshakeTimeout: TimeAmount = .seconds(10)) throws(TLSError) {
        self.connection = try TLSConnection(context: context, serverName: serverName)
        self.handshakeTimeout = handshakeTimeout
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startHandshake(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        startHandshake(context: context)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        let wasHandshaking = state == .handshaking || state == .idle
        state = .closed
        timeoutTask?.cancel()
        failPending(ChannelError.ioOnClosedChannel)
        if wasHandshaking {
            context.fireErrorCaught(TLSError(code: .handshakeFailed, message: "the peer closed the connection during the TLS handshake"))
        }
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        timeoutTask?.cancel()
        failPending(ChannelError.ioOnClosedChannel)
    }

    private func startHandshake(context: ChannelHandlerContext) {
        guard state == .idle else { return }
        state = .handshaking
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timeoutTask = context.eventLoop.scheduleTask(in: handshakeTimeout) {
            let (handler, context) = loopBound.value
            guard handler.state == .handshaking else { return }
            handler.fail(context: context, TLSError(code: .handshakeTimeout, message: "the TLS handshake did not complete within \(handler.handshakeTimeout)"))
        }
        advanceHandshake(context: context)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard state != .closed else { return }
        connection.receive(unwrapInboundIn(data))
        if state == .handshaking {
            advanceHandshake(context: context)
        }
        if state == .active {
            readApplicationData(context: context)
        }
    }

    private func advanceHandshake(context: ChannelHandlerContext) {
        switch connection.doHandshake() {
        case .complete:
            state = .active
            timeoutTask?.cancel()
            timeoutTask = nil
            flushCiphertext(context: context)
            let certificate = connection.peerCertificate()
            let event = TLSHandshakeCompleted(peer: certificate?.identity, alpn: connection.negotiatedALPN(), certificate: certificate)
            context.fireUserInboundEventTriggered(event)
            // Release writes made during the handshake.
            let held = heldWrites
            heldWrites = []
            for (buffer, promise) in held { write(context: context, data: wrapOutboundOut(buffer), promise: promise) }
            if heldFlush || !held.isEmpty { heldFlush = false; flush(context: context) }
        case .wantsMoreInput:
            flushCiphertext(context: context)
        case .closedByPeer:
            fail(context: context, TLSError(code: .handshakeFailed, message: "the peer closed the connection during the TLS handshake"))
        case .failed(let error):
            fail(context: context, error)
        }
    }

    private func readApplicationData(context: ChannelHandlerContext) {
        var plaintext = context.channel.allocator.buffer(capacity: 0)
        let result = connection.readPlaintext(into: &plaintext)
        if plaintext.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(plaintext))
        }
        switch result {
        case .complete, .wantsMoreInput:
            // Post-handshake messages (e.g. a TLS 1.3 alert or key update) may need an answer.
            flushCiphertext(context: context)
        case .closedByPeer:
            connection.shutdown()
            flushCiphertext(context: context)
            state = .closed
            context.close(promise: nil)
        case .failed(let error):
            fail(context: context, error)
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        switch state {
        case .idle, .handshaking:
            heldWrites.append((buffer, promise))
        case .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        case .active:
            switch connection.writePlaintext(buffer) {
            case .complete, .wantsMoreInput:
                if let promise { pendingPromises.append(promise) }
            case .closedByPeer:
                promise?.fail(ChannelError.ioOnClosedChannel)
            case .failed(let error):
                promise?.fail(error)
                fail(context: context, error)
            }
        }
    }

    public func flush(context: ChannelHandlerContext) {
        switch state {
        case .idle, .handshaking: heldFlush = true
        case .closed: break
        case .active: flushCiphertext(context: context)
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if state == .active, mode == .all {
            connection.shutdown()
            flushCiphertext(context: context)
        }
        state = .closed
        context.close(mode: mode, promise: promise)
    }

    /// Writes all pending ciphertext to the channel and flushes it.
    private func flushCiphertext(context: ChannelHandlerContext) {
        guard let ciphertext = connection.takeCiphertext(allocator: context.channel.allocator) else {
            // Nothing new to send, but earlier plaintext writes are already on their way.
            let promises = pendingPromises
            pendingPromises = []
            promises.forEach { $0.succeed() }
            return
        }
        let promise: EventLoopPromise<Void>?
        switch pendingPromises.count {
        case 0: promise = nil
        case 1: promise = pendingPromises[0]
        default:
            let combined = context.eventLoop.makePromise(of: Void.self)
            for pending in pendingPromises { combined.futureResult.cascade(to: pending) }
            promise = combined
        }
        pendingPromises = []
        context.writeAndFlush(wrapOutboundOut(ciphertext), promise: promise)
    }

    private func fail(context: ChannelHandlerContext, _ error: TLSError) {
        guard state != .closed else { return }
        // Send any alert OpenSSL queued so the peer learns why.
        flushCiphertext(context: context)
        state = .closed
        timeoutTask?.cancel()
        failPending(error)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    private func failPending(_ error: Error) {
        let held = heldWrites
        heldWrites = []
        held.forEach { $0.1?.fail(error) }
        let promises = pendingPromises
        pendingPromises = []
        promises.forEach { $0.fail(error) }
    }
}
