import COpenSSL
import CosiTesting
import NIOCore
import Testing

@testable import CosiTLS

/// OpenSSL keeps one error queue per thread, and `SSL_get_error` reports SSL_ERROR_SSL whenever
/// that queue is not empty: an error some other code left on an event loop's thread must not
/// fail an unrelated connection's handshake or reads there.
@Suite("OpenSSL's error queue")
struct ErrorQueueTests {
    /// Leaves a stale error on this thread's queue, as a failed parse elsewhere would.
    func pollute() {
        let garbage = "not a certificate"
        let bio = garbage.withCString { BIO_new_mem_buf($0, Int32(garbage.utf8.count)) }
        #expect(PEM_read_bio_X509(bio, nil, nil, nil) == nil)
        BIO_free(bio)
        #expect(ERR_peek_error() != 0, "the queue holds an error")
    }

    @Test func aStaleErrorDoesNotFailAHandshakeOrAnExchange() throws {
        let pki = try TestPKI()
        let server = try TLSConnection(context: pki.serverContext(), serverName: nil)
        let client = try TLSConnection(context: pki.clientContext(), serverName: "127.0.0.1")
        func move(_ from: TLSConnection, _ to: TLSConnection) {
            while let bytes = from.takeCiphertext(allocator: ByteBufferAllocator()) { to.receive(bytes) }
        }
        var done = (client: false, server: false)
        for _ in 0..<10 where !(done.client && done.server) {
            pollute()
            switch client.doHandshake() {
            case .complete: done.client = true
            case .wantsMoreInput: break
            case .closedByPeer, .failed: Issue.record("the client's handshake failed"); return
            }
            move(client, server)
            pollute()
            switch server.doHandshake() {
            case .complete: done.server = true
            case .wantsMoreInput: break
            case .closedByPeer, .failed(_): Issue.record("the server's handshake failed"); return
            }
            move(server, client)
        }
        #expect(done.client && done.server)

        pollute()
        guard case .complete = client.writePlaintext(ByteBuffer(string: "hello")) else { Issue.record("write failed"); return }
        move(client, server)
        pollute()
        var plaintext = ByteBuffer()
        guard case .wantsMoreInput = server.readPlaintext(into: &plaintext) else { Issue.record("read failed"); return }
        #expect(String(buffer: plaintext) == "hello")
        ERR_clear_error()
    }
}
