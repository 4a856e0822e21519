import COpenSSL
import COpenSSLShims

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The public-key algorithm of a generated key.
public enum KeyAlgorithm: String, Sendable, CaseIterable {
    /// Ed25519, the default (as in Talos).
    case ed25519
    /// ECDSA on NIST P-256.
    case ecdsaP256 = "ecdsa-p256"
    /// RSA, 2048 bits.
    case rsa2048 = "rsa-2048"
}

/// A private key (an owned OpenSSL `EVP_PKEY`).
public final class PrivateKey: @unchecked Sendable {
    // @unchecked Sendable: the key is never mutated after generation or loading.
    let pointer: OpaquePointer
    public let algorithm: KeyAlgorithm

    /// Generates a new key.
    public init(generating algorithm: KeyAlgorithm = .ed25519) throws(TLSError) {
        let id: Int32 = switch algorithm {
        case .ed25519: EVP_PKEY_ED25519
        case .ecdsaP256: EVP_PKEY_EC
        case .rsa2048: EVP_PKEY_RSA
        }
        guard let ctx = EVP_PKEY_CTX_new_id(id, nil) else {
            throw TLSError.drainingQueue(.generation, "EVP_PKEY_CTX_new_id failed")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_keygen_init(ctx) == 1 else {
            throw TLSError.drainingQueue(.generation, "EVP_PKEY_keygen_init failed")
        }
        switch algorithm {
        case .ecdsaP256:
            guard EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx, NID_X9_62_prime256v1) == 1 else {
                throw TLSError.drainingQueue(.generation, "cannot select P-256")
            }
        case .rsa2048:
            guard EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) == 1 else {
                throw TLSError.drainingQueue(.generation, "cannot set RSA key size")
            }
        case .ed25519:
            break
        }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen(ctx, &key) == 1, let key else {
            throw TLSError.drainingQueue(.generation, "key generation failed")
        }
        self.pointer = key
        self.algorithm = algorithm
    }

    /// Reads a PEM private key.
    public init(pem source: PEMSource) throws(TLSError) {
        let bio = try TLSContext.openBIO(source, what: "private key")
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            throw TLSError.drainingQueue(.invalidMaterial, "no usable PEM private key in \(source)")
        }
        self.pointer = key
        self.algorithm = switch EVP_PKEY_get_base_id(key) {
        case EVP_PKEY_ED25519: .ed25519
        case EVP_PKEY_EC: .ecdsaP256
        default: .rsa2048
        }
    }

    deinit { EVP_PKEY_free(pointer) }

    /// The key in PKCS#8 PEM form (unencrypted).
    public func pemEncoded() throws(TLSError) -> String {
        try writePEM { bio in PEM_write_bio_PrivateKey(bio, pointer, nil, nil, 0, nil, nil) }
    }
}

/// An X.509 certificate (an owned OpenSSL `X509`).
public final class Certificate: @unchecked Sendable {
    // @unchecked Sendable: the certificate is never mutated after it has been signed.
    let pointer: OpaquePointer

    init(owning pointer: OpaquePointer) { self.pointer = pointer }
    deinit { X509_free(pointer) }

    /// The certificate in PEM form.
    public func pemEncoded() throws(TLSError) -> String {
        try writePEM { bio in PEM_write_bio_X509(bio, pointer) }
    }

    /// The identity this certificate presents (common name, organizations, fingerprint).
    public var identity: PeerIdentity { PeerIdentity(certificate: pointer) }

    /// Seconds from `now` (seconds since the epoch; the system's clock when nil) until the
    /// certificate expires (negative once it has), or nil when its date cannot be read.
    public func secondsUntilExpiry(now: Int64? = nil) -> Int64? {
        X509_get0_notAfter(pointer).flatMap { secondsUntil($0, from: now) }
    }

    /// Every certificate in a PEM file or text (a chain or a CA bundle).
    public static func load(_ source: PEMSource) throws(TLSError) -> [Certificate] {
        let bio = try TLSContext.openBIO(source, what: "certificate")
        defer { BIO_free(bio) }
        var certificates: [Certificate] = []
        while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
            certificates.append(Certificate(owning: certificate))
        }
        _ = drainOpenSSLErrors()
        return certificates
    }
}

/// What to put in a certificate.
public struct CertificateProfile: Sendable {
    /// The kind of certificate, which decides its key usages.
    public enum Usage: Sendable { case certificateAuthority, server, client }

    public var commonName: String
    /// Subject Organization values (for a client: its roles, e.g. `os:admin`).
    public var organizations: [String]
    public var usage: Usage
    /// DNS names for the subjectAltName.
    public var dnsNames: [String]
    /// IP addresses for the subjectAltName.
    public var ipAddresses: [String]
    /// Validity start, in seconds from now (negative: in the past).
    public var notBefore: Int
    /// Validity end, in seconds from now.
    public var notAfter: Int

    public init(
        commonName: String, organizations: [String] = [], usage: Usage,
        dnsNames: [String] = [], ipAddresses: [String] = [],
        notBefore: Int = -300, validDays: Int = 365
    ) {
        self.commonName = commonName
        self.organizations = organizations
        self.usage = usage
        self.dnsNames = dnsNames
        self.ipAddresses = ipAddresses
        self.notBefore = notBefore
        self.notAfter = validDays * 86_400
    }
}

/// Issues certificates with OpenSSL's APIs.
public enum CertificateFactory {
    /// Creates a certificate for `key` described by `profile`, signed by `issuer` (self-signed when nil).
    public static func issue(
        _ profile: CertificateProfile, key: PrivateKey, issuer: (certificate: Certificate, key: PrivateKey)? = nil
    ) throws(TLSError) -> Certificate {
        guard let x509 = X509_new() else { throw TLSError.drainingQueue(.generation, "X509_new failed") }
        let certificate = Certificate(owning: x509)
        guard X509_set_version(x509, 2) == 1 else { throw TLSError.drainingQueue(.generation, "X509_set_version failed") }

        var serial = [UInt8](repeating: 0, count: 16)
        guard RAND_bytes(&serial, Int32(serial.count)) == 1 else { throw TLSError.drainingQueue(.generation, "RAND_bytes failed") }
        serial[0] &= 0x7f // positive
        let bn = BN_bin2bn(serial, Int32(serial.count), nil)
        defer { BN_free(bn) }
        guard BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x509)) != nil else {
            throw TLSError.drainingQueue(.generation, "cannot set serial number")
        }
        guard X509_gmtime_adj(X509_getm_notBefore(x509), profile.notBefore) != nil,
              X509_gmtime_adj(X509_getm_notAfter(x509), profile.notAfter) != nil else {
            throw TLSError.drainingQueue(.generation, "cannot set validity")
        }
        guard X509_set_pubkey(x509, key.pointer) == 1 else { throw TLSError.drainingQueue(.generation, "X509_set_pubkey failed") }

        guard let name = X509_NAME_new() else { throw TLSError.drainingQueue(.generation, "X509_NAME_new failed") }
        defer { X509_NAME_free(name) }
        for organization in profile.organizations {
            _ = X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, organization, -1, -1, 0)
        }
        guard X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, profile.commonName, -1, -1, 0) == 1 else {
            throw TLSError.drainingQueue(.generation, "invalid common name \(profile.commonName)")
        }
        _ = X509_set_subject_name(x509, name)
        _ = X509_set_issuer_name(x509, issuer.map { X509_get_subject_name($0.certificate.pointer) } ?? name)

        // keyEncipherment means something only for RSA key exchange.
        let leafKeyUsage = key.algorithm == .rsa2048 ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature"
        var extensions: [(Int32, String)] = []
        switch profile.usage {
        case .certificateAuthority:
            extensions = [
                (NID_basic_constraints, "critical,CA:TRUE"),
                (NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"),
            ]
        case .server:
            extensions = [
                (NID_basic_constraints, "critical,CA:FALSE"),
                (NID_key_usage, leafKeyUsage),
                (NID_ext_key_usage, "serverAuth"),
            ]
        case .client:
            extensions = [
                (NID_basic_constraints, "critical,CA:FALSE"),
                (NID_key_usage, leafKeyUsage),
                (NID_ext_key_usage, "clientAuth"),
            ]
        }
        let san = profile.dnsNames.map { "DNS:\($0)" } + profile.ipAddresses.map { "IP:\($0)" }
        if !san.isEmpty { extensions.append((NID_subject_alt_name, san.joined(separator: ","))) }
        extensions.append((NID_subject_key_identifier, "hash"))
        if issuer != nil { extensions.append((NID_authority_key_identifier, "keyid:always")) }

        var v3 = X509V3_CTX()
        X509V3_set_ctx(&v3, issuer?.certificate.pointer ?? x509, x509, nil, nil, 0)
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &v3, nid, value) else {
                throw TLSError.drainingQueue(.generation, "invalid certificate extension \(value)")
            }
            defer { X509_EXTENSION_free(ext) }
            guard X509_add_ext(x509, ext, -1) == 1 else { throw TLSError.drainingQueue(.generation, "X509_add_ext failed") }
        }

        let signer = issuer?.key ?? key
        // Ed25519 signs the whole message; it takes no separate digest.
        let digest = signer.algorithm == .ed25519 ? nil : EVP_sha256()
        guard X509_sign(x509, signer.pointer, digest) > 0 else {
            throw TLSError.drainingQueue(.generation, "signing the certificate failed")
        }
        return certificate
    }
}

/// Runs a PEM writer against a memory BIO and returns what it wrote.
private func writePEM(_ write: (OpaquePointer) -> Int32) throws(TLSError) -> String {
    guard let bio = BIO_new(BIO_s_mem()) else { throw TLSError.drainingQueue(.generation, "BIO_new failed") }
    defer { BIO_free(bio) }
    guard write(bio) == 1 else { throw TLSError.drainingQueue(.generation, "PEM encoding failed") }
    let length = Int(BIO_ctrl_pending(bio))
    var bytes = [UInt8](repeating: 0, count: length)
    _ = BIO_read(bio, &bytes, Int32(length))
    return String(decoding: bytes, as: UTF8.self)
}

extension CertificateFactory {
    /// Issues a certificate revocation list in PEM form: `revoked` are revoked by `issuer`, as of
    /// now, with the next update in `validDays`.
    public static func revocationList(
        revoking revoked: [Certificate], issuer: (certificate: Certificate, key: PrivateKey), validDays: Int = 30
    ) throws(TLSError) -> String {
        guard let crl = X509_CRL_new() else { throw TLSError.drainingQueue(.generation, "X509_CRL_new failed") }
        defer { X509_CRL_free(crl) }
        guard X509_CRL_set_version(crl, 1) == 1,
              X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer.certificate.pointer)) == 1 else {
            throw TLSError.drainingQueue(.generation, "cannot set the CRL's issuer")
        }
        guard let now = X509_gmtime_adj(nil, 0) else { throw TLSError.drainingQueue(.generation, "cannot read the time") }
        defer { ASN1_TIME_free(now) }
        guard let next = X509_gmtime_adj(nil, validDays * 86_400) else { throw TLSError.drainingQueue(.generation, "cannot read the time") }
        defer { ASN1_TIME_free(next) }
        guard X509_CRL_set1_lastUpdate(crl, now) == 1, X509_CRL_set1_nextUpdate(crl, next) == 1 else {
            throw TLSError.drainingQueue(.generation, "cannot set the CRL's dates")
        }
        for certificate in revoked {
            guard let entry = X509_REVOKED_new() else { throw TLSError.drainingQueue(.generation, "X509_REVOKED_new failed") }
            guard X509_REVOKED_set_serialNumber(entry, X509_get_serialNumber(certificate.pointer)) == 1,
                  X509_REVOKED_set_revocationDate(entry, now) == 1,
                  X509_CRL_add0_revoked(crl, entry) == 1 else {
                X509_REVOKED_free(entry)
                throw TLSError.drainingQueue(.generation, "cannot add a revoked certificate")
            }
        }
        _ = X509_CRL_sort(crl)
        let digest = issuer.key.algorithm == .ed25519 ? nil : EVP_sha256()
        guard X509_CRL_sign(crl, issuer.key.pointer, digest) > 0 else {
            throw TLSError.drainingQueue(.generation, "signing the CRL failed")
        }
        return try writePEM { bio in PEM_write_bio_X509_CRL(bio, crl) }
    }
}

/// Seconds from `now` (the system's clock when nil) until `time`.
func secondsUntil(_ time: UnsafePointer<ASN1_TIME>, from now: Int64?) -> Int64? {
    var from: UnsafeMutablePointer<ASN1_TIME>?
    if let now {
        // A temporary ASN1_TIME, freed here.
        guard let made = ASN1_TIME_set(nil, time_t(now)) else { return nil }
        from = made
    }
    defer { ASN1_TIME_free(from) }
    var days: Int32 = 0
    var seconds: Int32 = 0
    guard ASN1_TIME_diff(&days, &seconds, from, time) == 1 else { return nil }
    return Int64(days) * 86_400 + Int64(seconds)
}
