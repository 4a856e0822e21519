import CosiTLS
import CosiTesting
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

/// ``TLSHandler`` on two embedded channels back to back: real OpenSSL handshakes and records,
/// no sockets, and timeouts on the loops' virtual time.
@Suite("TLS handler on embedded channels")
struct TLSHandlerTests {
    let pki: TestPKI

    init() throws {
        pki = try TestPKI()
    }

    func link(client: TLSContext? = nil, serverName: String = "127.0.0.1", timeout: TimeAmount = .seconds(10)) throws -> BackToBack {
        try BackToBack(
            client: [try TLSHandler(context: client ?? pki.clientContext(name: "alice", roles: ["os:reader"]), serverName: serverName)],
            server: [try TLSHandler(context: pki.serverContext(), handshakeTimeout: timeout)]
        )
    }

    @Test func theHandshakeCompletesAndEachSideSeesItsPeer() throws {
        let link = try link()
        try link.interact()
        let server = try #require(link.serverEvents.first(TLSHandshakeCompleted.self), "the server completed its handshake")
        #expect(server.peer?.commonName == "alice")
        #expect(server.peer?.organizations == ["os:reader"])
        #expect(server.alpn == cosiALPNProtocol)
        #expect((server.certificate?.secondsUntilExpiry() ?? 0) > 0, "the client's certificate, kept for its expiry")
        let client = try #require(link.clientEvents.first(TLSHandshakeCompleted.self))
        #expect(client.peer?.commonName == "test server")
        #expect(link.serverEvents.errors.isEmpty && link.clientEvents.errors.isEmpty)
    }

    @Test func writesMadeDuringTheHandshakeAreHeldAndDeliveredAfterIt() throws {
        let link = try link()
        let sent = NIOLockedValueBox(false)
        link.client.writeAndFlush(ByteBuffer(string: "early")).whenSuccess { sent.withLockedValue { $0 = true } }
        #expect(!sent.withLockedValue { $0 }, "held until the handshake completes")
        try link.interact()
        #expect(String(buffer: link.serverEvents.received) == "early")
        #expect(sent.withLockedValue { $0 }, "its promise succeeds once it is on its way")
        link.server.writeAndFlush(ByteBuffer(string: "reply"), promise: nil)
        try link.interact()
        #expect(String(buffer: link.clientEvents.received) == "reply")
    }

    @Test func aClientOfAnotherAuthorityIsRefused() throws {
        let other = try TestPKI(caName: "other CA")
        let link = try link(client: try other.clientContext(name: "mallory"))
        try link.interact()
        #expect(link.serverEvents.first(TLSHandshakeCompleted.self) == nil)
        let error = try #require(link.serverEvents.errors.first as? TLSError)
        #expect(error.code == .handshakeFailed, "\(error)")
        #expect(!link.server.isActive, "the server closed the connection")
        #expect(link.clientEvents.first(TLSHandshakeCompleted.self) == nil || !link.client.isActive, "the client does not go on")
    }

    @Test func aServerWhoseCertificateDoesNotNameTheHostIsRefused() throws {
        let link = try link(serverName: "elsewhere.example")
        try link.interact()
        let error = try #require(link.clientEvents.errors.first as? TLSError)
        #expect(error.code == .handshakeFailed, "\(error)")
        #expect(link.serverEvents.first(TLSHandshakeCompleted.self) == nil)
    }

    @Test func aServerWhoseCertificateHasExpiredIsRefusedAndTheClientIsToldWhy() throws {
        let expired = try TestPKI(serverValidForSeconds: -1)
        let link = try BackToBack(
            client: [try TLSHandler(context: expired.clientContext(name: "late"), serverName: "127.0.0.1")],
            server: [try TLSHandler(context: expired.serverContext())]
        )
        try link.interact()
        let error = try #require(link.clientEvents.errors.first as? TLSError)
        #expect(error.code == .handshakeFailed)
        #expect(error.message.contains("expired"), "\(error.message)")
        #expect(link.serverEvents.first(TLSHandshakeCompleted.self) == nil)
    }

    @Test func aHandshakeThatStallsEndsAtItsTimeout() throws {
        let link = try link(timeout: .seconds(10))
        // The client's first flight never reaches the server.
        link.server.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(link.server.isActive)
        #expect(link.serverEvents.errors.isEmpty)
        link.server.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect((link.serverEvents.errors.first as? TLSError)?.code == .handshakeTimeout)
        #expect(!link.server.isActive)
    }

    @Test func aCompletedHandshakeHasNoTimeout() throws {
        let link = try link(timeout: .seconds(10))
        try link.interact()
        link.server.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(link.server.isActive)
        #expect(link.serverEvents.errors.isEmpty)
    }

    @Test func aPeerThatLeavesDuringTheHandshakeIsAHandshakeFailure() throws {
        let link = try link()
        link.server.pipeline.fireChannelInactive()
        #expect((link.serverEvents.errors.first as? TLSError)?.code == .handshakeFailed)
    }

    @Test func closingSendsCloseNotifyAndThePeerClosesToo() throws {
        let link = try link()
        try link.interact()
        try link.client.close().wait()
        try link.interact()
        #expect(!link.server.isActive, "close_notify ends the server's side")
        #expect(link.serverEvents.errors.isEmpty)
    }
}
