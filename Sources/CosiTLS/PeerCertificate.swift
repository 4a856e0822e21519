import COpenSSL
import COpenSSLShims

/// The certificate a peer presented and the intermediates it sent with it (an owned `X509` and
/// `STACK_OF(X509)`), kept for the life of a connection so that the server can check it again:
/// when its trusted CAs or its CRL change (SIGHUP), and when it expires.
public final class PeerCertificate: @unchecked Sendable {
    // @unchecked Sendable: both objects are only read after the handshake (OpenSSL reference
    // counts them atomically).
    private let leaf: OpaquePointer
    private let intermediates: OpaquePointer?

    /// The peer certificate of a completed handshake, or nil when there is none.
    init?(ssl: OpaquePointer) {
        guard let leaf = SSL_get1_peer_certificate(ssl) else { return nil }
        self.leaf = leaf
        self.intermediates = SSL_get_peer_cert_chain(ssl).flatMap { X509_chain_up_ref($0) }
    }

    deinit {
        X509_free(leaf)
        if let intermediates { cosi_sk_X509_free_all(intermediates) }
    }

    /// The identity the certificate presents.
    public var identity: PeerIdentity { PeerIdentity(certificate: leaf) }

    /// Seconds from now until the certificate expires (negative once it has), or nil when its
    /// date cannot be read.
    public func secondsUntilExpiry(now: Int64? = nil) -> Int64? {
        X509_get0_notAfter(leaf).flatMap { secondsUntil($0, from: now) }
    }

    /// Verifies the certificate again against a server context's trusted CAs and CRLs, as a
    /// handshake would now. Returns nil when it verifies, or why it does not.
    public func verificationFailure(against context: TLSContext) -> String? {
        guard let store = SSL_CTX_get_cert_store(context.pointer), let verification = X509_STORE_CTX_new() else {
            return "cannot verify the certificate"
        }
        defer { X509_STORE_CTX_free(verification) }
        ERR_clear_error()
        guard X509_STORE_CTX_init(verification, store, leaf, intermediates) == 1 else {
            return TLSError.drainingQueue(.configuration, "cannot verify the certificate").message
        }
        _ = X509_STORE_CTX_set_purpose(verification, X509_PURPOSE_SSL_CLIENT)
        if X509_verify_cert(verification) == 1 { return nil }
        _ = drainOpenSSLErrors()
        let code = X509_STORE_CTX_get_error(verification)
        return X509_verify_cert_error_string(Int(code)).map { String(cString: $0) } ?? "verification error \(code)"
    }
}
