import COpenSSL
import COpenSSLShims
import NIOCore

/// One OpenSSL `SSL` object driven over two memory BIOs: ciphertext from the network goes into
/// the read BIO, ciphertext for the network comes out of the write BIO.
///
/// Not thread-safe: owned by one ``TLSHandler`` on one event loop. Every `SSL_*` call starts
/// with an empty error queue (`ERR_clear_error()`, as swift-nio-ssl does): `SSL_get_error`
/// reports any error on the thread's queue, whoever left it there.
final class TLSConnection {
    /// The outcome of one OpenSSL step, from `SSL_get_error`.
    enum StepResult {
        case complete
        case wantsMoreInput
        case closedByPeer
        case failed(TLSError)
    }

    private let ssl: OpaquePointer
    private let networkIn: OpaquePointer
    private let networkOut: OpaquePointer
    let context: TLSContext

    init(context: TLSContext, serverName: String?) throws(TLSError) {
        guard let ssl = SSL_new(context.pointer) else {
            throw TLSError.drainingQueue(.configuration, "SSL_new failed")
        }
        guard let rbio = BIO_new(BIO_s_mem()), let wbio = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError.drainingQueue(.configuration, "BIO_new failed")
        }
        // An empty memory BIO means "no data yet", not end of file.
        _ = cosi_BIO_set_mem_eof_return(rbio, -1)
        _ = cosi_BIO_set_mem_eof_return(wbio, -1)
        SSL_set_bio(ssl, rbio, wbio) // the SSL now owns both BIOs
        self.ssl = ssl
        self.networkIn = rbio
        self.networkOut = wbio
        self.context = context

        switch context.role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client:
            SSL_set_connect_state(ssl)
            if let alpn = context.clientALPN {
                if !alpn.isEmpty {
                    var wire: [UInt8] = []
                    for name in alpn { wire.append(UInt8(name.utf8.count)); wire += name.utf8 }
                    _ = SSL_set_alpn_protos(ssl, wire, UInt32(wire.count))
                }
            } else {
                _ = cosi_SSL_set_cosi_alpn(ssl)
            }
            if let serverName {
                try Self.expectServerName(ssl, serverName)
            }
        }
    }

    deinit {
        SSL_free(ssl)
    }

    /// Makes the handshake check the server certificate's SAN against the dialled name or IP.
    private static func expectServerName(_ ssl: OpaquePointer, _ name: String) throws(TLSError) {
        let isIP = name.contains(":") || name.allSatisfy { $0.isNumber || $0 == "." }
        if isIP {
            guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 else {
                throw TLSError.drainingQueue(.configuration, "invalid server address \(name)")
            }
        } else {
            guard SSL_set1_host(ssl, name) == 1, cosi_SSL_set_tlsext_host_name(ssl, name) == 1 else {
                throw TLSError.drainingQueue(.configuration, "invalid server name \(name)")
            }
        }
    }

    /// Feeds ciphertext received from the network.
    func receive(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else { return }
            _ = BIO_write(networkIn, base, Int32(raw.count))
        }
    }

    /// Advances the handshake.
    func doHandshake() -> StepResult {
        ERR_clear_error()
        return result(of: SSL_do_handshake(ssl), failure: .handshakeFailed, context: "TLS handshake failed")
    }

    /// Decrypts whatever application data is available, appending it to `buffer`.
    func readPlaintext(into buffer: inout ByteBuffer) -> StepResult {
        ERR_clear_error()
        while true {
            var rc: Int32 = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 16_384) { raw in
                rc = SSL_read(ssl, raw.baseAddress, Int32(min(raw.count, Int(Int32.max))))
                return rc > 0 ? Int(rc) : 0
            }
            if rc > 0 { continue }
            return classify(SSL_get_error(ssl, rc), failure: .protocolFailure, context: "TLS read failed")
        }
    }

    /// Encrypts application data into the write BIO. Memory BIOs grow as needed, so the whole
    /// buffer is always consumed.
    func writePlaintext(_ buffer: ByteBuffer) -> StepResult {
        buffer.withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else { return .complete }
            ERR_clear_error()
            let rc = SSL_write(ssl, base, Int32(raw.count))
            return rc > 0 ? .complete : result(of: rc, failure: .protocolFailure, context: "TLS write failed")
        }
    }

    /// Queues a close_notify alert.
    func shutdown() {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        _ = drainOpenSSLErrors()
    }

    /// Moves pending ciphertext for the network into a buffer, or returns nil when there is none.
    func takeCiphertext(allocator: ByteBufferAllocator) -> ByteBuffer? {
        let pending = Int(BIO_ctrl_pending(networkOut))
        guard pending > 0 else { return nil }
        var buffer = allocator.buffer(capacity: pending)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { raw in
            Int(max(0, BIO_read(networkOut, raw.baseAddress, Int32(pending))))
        }
        return buffer
    }

    /// The peer's certificate (and the intermediates it sent), once the handshake has completed.
    func peerCertificate() -> PeerCertificate? {
        PeerCertificate(ssl: ssl)
    }

    /// The protocol agreed through ALPN, if any.
    func negotiatedALPN() -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        let length = cosi_SSL_get_alpn(ssl, &buffer, Int32(buffer.count))
        guard length > 0 else { return nil }
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func result(of rc: Int32, failure: TLSError.Code, context: String) -> StepResult {
        if rc == 1 { return .complete }
        return classify(SSL_get_error(ssl, rc), failure: failure, context: context)
    }

    private func classify(_ code: Int32, failure: TLSError.Code, context: String) -> StepResult {
        switch code {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wantsMoreInput
        case SSL_ERROR_ZERO_RETURN:
            return .closedByPeer
        default:
            var error = TLSError.drainingQueue(failure, context)
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK, let reason = X509_verify_cert_error_string(verify) {
                error.message += " (certificate verification: \(String(cString: reason)))"
            }
            return .failed(error)
        }
    }
}
