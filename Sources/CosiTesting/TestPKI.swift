import CosiTLS

/// A throwaway PKI for tests, generated in memory per run: a CA, a server certificate for
/// localhost/127.0.0.1, and client certificates on request. Nothing is written to disk.
public struct TestPKI: Sendable {
    public let authority: CertificateAuthority
    public var caCertificate: Certificate { authority.certificate }
    public var caKey: PrivateKey { authority.key }
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
        authority = try CertificateAuthority.create(name: caName, algorithm: algorithm, validity: .days(30))
        caPEM = try authority.certificate.pemEncoded()
        let (certificate, key) = try authority.issueServer(
            hosts: serverNames + serverIPs, commonName: "test server", algorithm: algorithm,
            validity: serverValidForSeconds.map { .seconds(from: -60, to: $0) } ?? .days(30)
        )
        server = try Self.configuration(certificate, key, caPEM)
    }

    static func configuration(_ certificate: Certificate, _ key: PrivateKey, _ caPEM: String) throws -> TLSConfiguration {
        TLSConfiguration(certificateChain: .pem(try certificate.pemEncoded()), privateKey: .pem(try key.pemEncoded()), trustRoots: .pem(caPEM))
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
        let (certificate, key) = try authority.issueClient(
            name: name, roles: roles, algorithm: algorithm,
            validity: expired ? .seconds(from: -10 * 86_400, to: -86_400) : .days(30), usage: usage
        )
        return try Self.configuration(certificate, key, caPEM)
    }

    /// A CRL of this CA (PEM) revoking the certificates of `clients` (configurations made by
    /// ``client(name:roles:expired:algorithm:usage:)``).
    public func revocationList(revoking clients: [TLSConfiguration] = []) throws -> String {
        let certificates = try clients.flatMap { client -> [Certificate] in
            guard case .pem(let text) = client.certificateChain else { return [] }
            return try Certificate.load(.pem(text)).prefix(1).map { $0 }
        }
        return try authority.revocationList(revoking: certificates)
    }

    /// A client certificate of this CA valid for `seconds` more.
    public func client(name: String, roles: [String] = ["os:admin"], validForSeconds seconds: Int) throws -> TLSConfiguration {
        let (certificate, key) = try authority.issueClient(name: name, roles: roles, validity: .seconds(from: -60, to: seconds))
        return try Self.configuration(certificate, key, caPEM)
    }

    /// Another server certificate of this CA (a machine of a fleet with its own certificate).
    public func server(commonName: String, hosts: [String] = ["localhost", "127.0.0.1"]) throws -> TLSConfiguration {
        let (certificate, key) = try authority.issueServer(hosts: hosts, commonName: commonName, algorithm: .ed25519, validity: .days(30))
        return try Self.configuration(certificate, key, caPEM)
    }

    public func serverContext() throws -> TLSContext {
        try TLSContext(role: .server, configuration: server)
    }

    public func clientContext(name: String = "tester", roles: [String] = ["os:admin"]) throws -> TLSContext {
        try TLSContext(role: .client, configuration: client(name: name, roles: roles))
    }
}
