import CosiTLS

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The development PKI `cosid` creates on first run: a CA, a server certificate for
/// localhost/127.0.0.1 and an `os:admin` client certificate, as PEM files in one directory.
///
/// Private keys are written with mode 0600. The files are made only when the CA (ca.crt and
/// ca.key) is missing: then all six are written, replacing a server or admin certificate and key
/// left from an earlier CA. A CA present with any of the others missing is refused as a partial set
/// (nothing is written), so an existing CA is never replaced.
public struct DevelopmentCertificates: Sendable {
    public var directory: String
    public var caCertificate: String { directory + "/ca.crt" }
    public var caKey: String { directory + "/ca.key" }
    public var serverCertificate: String { directory + "/server.crt" }
    public var serverKey: String { directory + "/server.key" }
    public var adminCertificate: String { directory + "/admin.crt" }
    public var adminKey: String { directory + "/admin.key" }

    public init(directory: String) { self.directory = directory }

    /// Whether every file exists.
    public var isComplete: Bool {
        [caCertificate, caKey, serverCertificate, serverKey, adminCertificate, adminKey].allSatisfy { fileExists($0) }
    }

    /// Creates the files if the CA is missing; returns true when it generated them.
    @discardableResult
    public func ensure() throws -> Bool {
        if isComplete { return false }
        guard !fileExists(caCertificate), !fileExists(caKey) else {
            throw TLSError(code: .invalidMaterial, message: "\(directory) holds a partial set of certificates; remove it or complete it (expected ca.crt, ca.key, server.crt, server.key, admin.crt, admin.key)")
        }
        // The directory and its parents (a failure shows as the first file that cannot be created).
        var path = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/") {
            path += "/" + component
            mkdir(path, 0o755)
        }
        let authority = try CertificateAuthority.create(name: "swift-cosi development CA", validity: .days(3650))
        let (server, serverKey) = try authority.issueServer(hosts: ["localhost", "127.0.0.1", "::1"], commonName: "cosid")
        let (admin, adminKey) = try authority.issueClient(name: "admin", roles: ["os:admin"])
        try writeFile(authority.key.pemEncoded(), to: self.caKey, mode: 0o600)
        try writeFile(authority.certificate.pemEncoded(), to: caCertificate, mode: 0o644)
        try writeFile(serverKey.pemEncoded(), to: self.serverKey, mode: 0o600)
        try writeFile(server.pemEncoded(), to: serverCertificate, mode: 0o644)
        try writeFile(adminKey.pemEncoded(), to: self.adminKey, mode: 0o600)
        try writeFile(admin.pemEncoded(), to: adminCertificate, mode: 0o644)
        return true
    }
}
