import CosiTLS

/// A throwaway PKI for tests, generated in memory per run: a CA, a server certificate for
/// localhost/127.0.0.1, and client certificates on request. Nothing is written to disk.
public struct TestPKI: Sendable {
    public let caCertificate: Certificate
    public let caKey: PrivateKey
    public let caPEM: String
    public let server: TLSConfiguration

    /// - Parameters:
    ///   - serverNames: DNS names in the server certificate's SAN.
    ///   - serverIPs: IP addresses in the server certificate's SAN.
    ///   - serverValidForSeconds: make the server certificate expire this many seconds from now.
    public init(
        algorithm: KeyAlgorithm = .ed25519, caName: String = "test CA",
        serverNames: [String] = ["localhost"], serverIPs: [String] = ["127.0.0.1"], serverValidForSeconds: Int? = nil
    ) throws {
        caKey = try PrivateKey(generating: algorithm)
        caCertificate = try CertificateFactory.issue(
            CertificateProfile(commonName: caName, usage: .certificateAuthority, validDays: 30), key: caKey
        )
        caPEM = try caCertificate.pemEncoded()
        let serverKey = try PrivateKey(generating: algorithm)
        var serverProfile = CertificateProfile(commonName: "test server", usage: .server, dnsNames: serverNames, ipAddresses: serverIPs, validDays: 30)
        if let serverValidForSeconds {
            serverProfile.notBefore = -60
            serverProfile.notAfter = serverValidForSeconds
        }
        let serverCertificate = try CertificateFactory.issue(serverProfile, key: serverKey, issuer: (caCertificate, caKey))
        server = TLSConfiguration(
            certificateChain: .pem(try serverCertificate.pemEncoded()),
            privateKey: .pem(try serverKey.pemEncoded()),
            trustRoots: .pem(caPEM)
        )
    }

    /// A client certificate signed by this CA.
    ///
    /// - Parameters:
    ///   - roles: the Organization values.
    ///   - expired: make a certificate whose validity ended yesterday.
    ///   - usage: `.client` normally; `.server` makes one without the clientAuth usage.
    public func client(
        name: String = "tester", roles: [String] = ["os:admin"], expired: Bool = false,
        algorithm: KeyAlgorithm = .ed25519, usage: CertificateProfile.Usage = .client
    ) throws -> TLSConfiguration {
        let key = try PrivateKey(generating: algorithm)
        var profile = CertificateProfile(commonName: name, organizations: roles, usage: usage, validDays: 30)
        if expired {
            profile.notBefore = -10 * 86_400
            profile.notAfter = -86_400
        }
        let certificate = try CertificateFactory.issue(profile, key: key, issuer: (caCertificate, caKey))
        return TLSConfiguration(
            certificateChain: .pem(try certificate.pemEncoded()),
            privateKey: .pem(try key.pemEncoded()),
            trustRoots: .pem(caPEM)
        )
    }

    /// A CRL of this CA (PEM) revoking the certificates of `clients` (configurations made by
    /// ``client(name:roles:expired:algorithm:usage:)``).
    public func revocationList(revoking clients: [TLSConfiguration] = []) throws -> String {
        let certificates = try clients.flatMap { client -> [Certificate] in
            guard case .pem(let text) = client.certificateChain else { return [] }
            return try Certificate.load(.pem(text)).prefix(1).map { $0 }
        }
        return try CertificateFactory.revocationList(revoking: certificates, issuer: (caCertificate, caKey))
    }

    /// A client certificate of this CA valid for `seconds` more.
    public func client(name: String, roles: [String] = ["os:admin"], validForSeconds seconds: Int) throws -> TLSConfiguration {
        let key = try PrivateKey(generating: .ed25519)
        var profile = CertificateProfile(commonName: name, organizations: roles, usage: .client, validDays: 1)
        profile.notBefore = -60
        profile.notAfter = seconds
        let certificate = try CertificateFactory.issue(profile, key: key, issuer: (caCertificate, caKey))
        return TLSConfiguration(certificateChain: .pem(try certificate.pemEncoded()), privateKey: .pem(try key.pemEncoded()), trustRoots: .pem(caPEM))
    }

    public func serverContext() throws -> TLSContext {
        try TLSContext(role: .server, configuration: server)
    }

    public func clientContext(name: String = "tester", roles: [String] = ["os:admin"]) throws -> TLSContext {
        try TLSContext(role: .client, configuration: client(name: name, roles: roles))
    }
}
