#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A certificate authority and the certificates a cosid deployment needs from it: the one recipe
/// that cosid's development certificates, `cosictl gen` and the tests' `TestPKI` share.
///
/// - A server certificate names its hosts in the subjectAltName (DNS names and IP addresses,
///   told apart by parsing), with the serverAuth usage.
/// - A client certificate's common name is the identity and its Organization values are the
///   roles (access.md), with the clientAuth usage.
public struct CertificateAuthority: Sendable {
    public let certificate: Certificate
    public let key: PrivateKey

    /// How long a certificate is valid, from now.
    public enum Validity: Sendable {
        /// From five minutes ago (clock skew) for this many days.
        case days(Int)
        /// From `from` to `to` seconds from now (negative: in the past): short-lived or expired
        /// certificates for tests.
        case seconds(from: Int, to: Int)

        func apply(to profile: inout CertificateProfile) {
            switch self {
            case .days(let days):
                profile.notBefore = -300
                profile.notAfter = days * 86_400
            case .seconds(let from, let to):
                profile.notBefore = from
                profile.notAfter = to
            }
        }
    }

    public init(certificate: Certificate, key: PrivateKey) {
        self.certificate = certificate
        self.key = key
    }

    /// A new self-signed CA.
    public static func create(name: String, algorithm: KeyAlgorithm = .ed25519, validity: Validity = .days(3650)) throws(TLSError) -> CertificateAuthority {
        let key = try PrivateKey(generating: algorithm)
        var profile = CertificateProfile(commonName: name, usage: .certificateAuthority)
        validity.apply(to: &profile)
        return CertificateAuthority(certificate: try CertificateFactory.issue(profile, key: key), key: key)
    }

    /// A server certificate for `hosts` (names and addresses; the first is the common name unless
    /// one is given), and its new key.
    public func issueServer(
        hosts: [String], commonName: String? = nil, algorithm: KeyAlgorithm = .ed25519, validity: Validity = .days(365)
    ) throws(TLSError) -> (certificate: Certificate, key: PrivateKey) {
        let addresses = hosts.filter(Self.isIPAddress)
        let names = hosts.filter { !Self.isIPAddress($0) }
        var profile = CertificateProfile(commonName: commonName ?? hosts.first ?? "server", usage: .server, dnsNames: names, ipAddresses: addresses)
        validity.apply(to: &profile)
        return try issue(profile, algorithm)
    }

    /// A client certificate: `name` is the identity, `roles` its Organization values. `usage`
    /// `.server` makes one without the clientAuth usage (for tests of refusals).
    public func issueClient(
        name: String, roles: [String], algorithm: KeyAlgorithm = .ed25519, validity: Validity = .days(365),
        usage: CertificateProfile.Usage = .client
    ) throws(TLSError) -> (certificate: Certificate, key: PrivateKey) {
        var profile = CertificateProfile(commonName: name, organizations: roles, usage: usage)
        validity.apply(to: &profile)
        return try issue(profile, algorithm)
    }

    /// A CRL (PEM) revoking `certificates`.
    public func revocationList(revoking certificates: [Certificate] = [], validDays: Int = 30) throws(TLSError) -> String {
        try CertificateFactory.revocationList(revoking: certificates, issuer: (certificate, key), validDays: validDays)
    }

    private func issue(_ profile: CertificateProfile, _ algorithm: KeyAlgorithm) throws(TLSError) -> (certificate: Certificate, key: PrivateKey) {
        let key = try PrivateKey(generating: algorithm)
        return (try CertificateFactory.issue(profile, key: key, issuer: (certificate, self.key)), key)
    }

    /// Whether `host` is an IPv4 or IPv6 address (else a DNS name).
    public static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }
}
