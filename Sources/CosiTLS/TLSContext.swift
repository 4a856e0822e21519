import COpenSSL
import COpenSSLShims

/// The ALPN protocol identifier of COSI-RPC/1.
public let cosiALPNProtocol = "cosi-rpc/1"

/// Where a TLS endpoint's certificate material comes from: PEM files on disk or PEM text.
public enum PEMSource: Hashable, Sendable {
    case file(String)
    case pem(String)
}

/// The certificate material and policy of one side of a COSI-RPC/1 connection.
public struct TLSConfiguration: Hashable, Sendable {
    /// This endpoint's certificate, followed by any intermediates.
    public var certificateChain: PEMSource
    /// This endpoint's private key.
    public var privateKey: PEMSource
    /// The CA certificates that peers must chain to (a bundle may hold several, for rotation).
    public var trustRoots: PEMSource
    /// Certificate revocation lists (PEM, one or several) a server checks client certificates
    /// against. With CRLs, every CA that issues client certificates needs its CRL here: OpenSSL
    /// refuses a certificate whose issuer has none.
    public var revocationLists: PEMSource?

    public init(certificateChain: PEMSource, privateKey: PEMSource, trustRoots: PEMSource, revocationLists: PEMSource? = nil) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.trustRoots = trustRoots
        self.revocationLists = revocationLists
    }
}

/// An OpenSSL `SSL_CTX` configured for COSI-RPC/1: TLS 1.3 only, mutual authentication, ALPN.
///
/// One context is shared by every connection of a server or client.
// @unchecked Sendable: an SSL_CTX is thread-safe once configured, and this type never changes it
// after `init` (connections only read it when created).
public final class TLSContext: @unchecked Sendable {
    /// Which end of the connection this context serves.
    public enum Role: Sendable { case server, client }

    let pointer: OpaquePointer
    public let role: Role
    /// ALPN protocols a client offers (nil: exactly `cosi-rpc/1`).
    let clientALPN: [String]?

    /// Deviations from the protocol, for tests that check a server refuses them.
    package struct Deviations: Sendable {
        /// Present no client certificate.
        package var omitCertificate = false
        /// Speak TLS 1.2 at most.
        package var maximumTLS12 = false
        /// Offer these ALPN protocols instead of `cosi-rpc/1` (empty: offer none).
        package var alpn: [String]?
        package init(omitCertificate: Bool = false, maximumTLS12: Bool = false, alpn: [String]? = nil) {
            self.omitCertificate = omitCertificate
            self.maximumTLS12 = maximumTLS12
            self.alpn = alpn
        }
    }

    /// Builds a context, loading and checking all material now so that mistakes surface at start-up.
    public convenience init(role: Role, configuration: TLSConfiguration) throws(TLSError) {
        try self.init(role: role, configuration: configuration, deviations: Deviations())
    }

    /// Builds a client context that breaks the protocol as `deviations` says (tests only).
    package init(role: Role, configuration: TLSConfiguration, deviations: Deviations) throws(TLSError) {
        guard let method = role == .server ? TLS_server_method() : TLS_client_method(),
              let ctx = SSL_CTX_new(method) else {
            throw TLSError.drainingQueue(.configuration, "SSL_CTX_new failed")
        }
        self.pointer = ctx
        self.role = role
        self.clientALPN = deviations.alpn

        if deviations.maximumTLS12 {
            _ = cosi_SSL_CTX_set_min_proto_version(ctx, cosi_TLS1_2_VERSION)
            _ = cosi_SSL_CTX_set_max_proto_version(ctx, cosi_TLS1_2_VERSION)
        } else {
            guard cosi_SSL_CTX_set_min_proto_version(ctx, cosi_TLS1_3_VERSION) == 1 else {
                throw TLSError.drainingQueue(.configuration, "cannot require TLS 1.3")
            }
        }
        _ = cosi_SSL_CTX_set_options(ctx, cosi_SSL_OP_NO_COMPRESSION | cosi_SSL_OP_NO_RENEGOTIATION | cosi_SSL_OP_NO_TICKET)
        // Return read/write buffers to the allocator while a connection is idle: many idle
        // connections (watchers) should cost little memory.
        _ = cosi_SSL_CTX_set_mode(ctx, cosi_SSL_MODE_RELEASE_BUFFERS)
        // Session tickets are off (no resumption), so the server sends none after the handshake.
        SSL_CTX_set_num_tickets(ctx, 0)

        if !deviations.omitCertificate {
            try Self.loadCertificateChain(ctx, configuration.certificateChain)
            try Self.loadPrivateKey(ctx, configuration.privateKey)
            guard SSL_CTX_check_private_key(ctx) == 1 else {
                throw TLSError.drainingQueue(.invalidMaterial, "the private key does not match the certificate")
            }
        }
        try Self.loadTrustRoots(ctx, configuration.trustRoots, role: role)
        if let revocationLists = configuration.revocationLists {
            try Self.loadRevocationLists(ctx, revocationLists)
        }

        switch role {
        case .server:
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
            // Client certificates must allow clientAuth when they carry an extended key usage.
            SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT)
            cosi_SSL_CTX_require_cosi_alpn(ctx)
        case .client:
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER)
        }
    }

    deinit {
        SSL_CTX_free(pointer)
    }

    private static func describe(_ source: PEMSource) -> String {
        switch source {
        case .file(let path): path
        case .pem: "inline PEM"
        }
    }

    private static func readCertificates(_ source: PEMSource, what: String) throws(TLSError) -> [OpaquePointer] {
        let bio = try openBIO(source, what: what)
        defer { BIO_free(bio) }
        var certificates: [OpaquePointer] = []
        while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
            certificates.append(certificate)
        }
        _ = drainOpenSSLErrors() // the read that ended the loop leaves "no start line"
        guard !certificates.isEmpty else {
            throw TLSError(code: .invalidMaterial, message: "no PEM certificate in \(what) \(describe(source))")
        }
        return certificates
    }

    /// A BIO reading `source`; the caller frees it.
    static func openBIO(_ source: PEMSource, what: String) throws(TLSError) -> OpaquePointer {
        switch source {
        case .file(let path):
            guard let bio = BIO_new_file(path, "r") else {
                _ = drainOpenSSLErrors()
                throw TLSError(code: .invalidMaterial, message: "cannot read \(what) file \(path)")
            }
            return bio
        case .pem(let text):
            // A memory BIO that owns a copy of the text.
            guard let bio = BIO_new(BIO_s_mem()) else {
                throw TLSError.drainingQueue(.configuration, "BIO_new failed")
            }
            let bytes = Array(text.utf8)
            _ = bytes.withUnsafeBytes { BIO_write(bio, $0.baseAddress, Int32($0.count)) }
            return bio
        }
    }

    private static func loadCertificateChain(_ ctx: OpaquePointer, _ source: PEMSource) throws(TLSError) {
        let certificates = try readCertificates(source, what: "certificate")
        defer { certificates.forEach { X509_free($0) } }
        guard SSL_CTX_use_certificate(ctx, certificates[0]) == 1 else {
            throw TLSError.drainingQueue(.invalidMaterial, "cannot use certificate \(describe(source))")
        }
        for intermediate in certificates.dropFirst() {
            // add1 takes its own reference.
            guard SSL_CTX_ctrl(ctx, SSL_CTRL_CHAIN_CERT, 1, UnsafeMutableRawPointer(intermediate)) == 1 else {
                throw TLSError.drainingQueue(.invalidMaterial, "cannot add intermediate certificate from \(describe(source))")
            }
        }
    }

    private static func loadPrivateKey(_ ctx: OpaquePointer, _ source: PEMSource) throws(TLSError) {
        let bio = try openBIO(source, what: "private key")
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            throw TLSError.drainingQueue(.invalidMaterial, "no usable PEM private key in \(describe(source))")
        }
        defer { EVP_PKEY_free(key) }
        guard SSL_CTX_use_PrivateKey(ctx, key) == 1 else {
            throw TLSError.drainingQueue(.invalidMaterial, "the private key \(describe(source)) does not match the certificate or cannot be used")
        }
    }

    private static func loadRevocationLists(_ ctx: OpaquePointer, _ source: PEMSource) throws(TLSError) {
        let bio = try openBIO(source, what: "CRL")
        defer { BIO_free(bio) }
        guard let store = SSL_CTX_get_cert_store(ctx) else {
            throw TLSError.drainingQueue(.configuration, "no certificate store")
        }
        var count = 0
        while let crl = PEM_read_bio_X509_CRL(bio, nil, nil, nil) {
            defer { X509_CRL_free(crl) }
            guard X509_STORE_add_crl(store, crl) == 1 else {
                throw TLSError.drainingQueue(.invalidMaterial, "cannot use a CRL from \(describe(source))")
            }
            count += 1
        }
        _ = drainOpenSSLErrors() // the read that ended the loop leaves "no start line"
        guard count > 0 else {
            throw TLSError(code: .invalidMaterial, message: "no PEM CRL in \(describe(source))")
        }
        _ = X509_STORE_set_flags(store, UInt(X509_V_FLAG_CRL_CHECK))
    }

    private static func loadTrustRoots(_ ctx: OpaquePointer, _ source: PEMSource, role: Role) throws(TLSError) {
        let certificates = try readCertificates(source, what: "CA bundle")
        defer { certificates.forEach { X509_free($0) } }
        guard let store = SSL_CTX_get_cert_store(ctx) else {
            throw TLSError.drainingQueue(.configuration, "no certificate store")
        }
        for certificate in certificates {
            guard X509_STORE_add_cert(store, certificate) == 1 else {
                throw TLSError.drainingQueue(.invalidMaterial, "cannot trust a certificate from \(describe(source))")
            }
            if role == .server {
                // Tell clients which CAs we accept (the CertificateRequest's authorities list).
                SSL_CTX_add_client_CA(ctx, certificate)
            }
        }
    }
}
