import COpenSSL
import COpenSSLShims

/// Who is on the other end of an authenticated TLS connection, read from its certificate.
public struct PeerIdentity: Hashable, Sendable, CustomStringConvertible {
    /// The subject common name: the identity.
    public var commonName: String
    /// Every subject Organization value: the roles, e.g. `os:admin`.
    public var organizations: [String]
    /// The certificate's SHA-256 fingerprint, lower-case hex without separators.
    public var fingerprint: String

    public init(commonName: String, organizations: [String], fingerprint: String) {
        self.commonName = commonName
        self.organizations = organizations
        self.fingerprint = fingerprint
    }

    public var description: String {
        "cn=\(commonName) roles=[\(organizations.joined(separator: ","))] sha256=\(fingerprint.prefix(16))"
    }

    /// Reads the identity of an `X509` certificate.
    init(certificate: OpaquePointer) {
        var commonName = ""
        var organizations: [String] = []
        if let name = X509_get_subject_name(certificate) {
            for index in 0..<X509_NAME_entry_count(name) {
                guard let entry = X509_NAME_get_entry(name, index) else { continue }
                let nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(entry))
                guard nid == NID_commonName || nid == NID_organizationName else { continue }
                var utf8: UnsafeMutablePointer<UInt8>?
                let length = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry))
                guard length >= 0, let utf8 else { continue }
                let value = String(decoding: UnsafeBufferPointer(start: utf8, count: Int(length)), as: UTF8.self)
                cosi_OPENSSL_free(utf8)
                if nid == NID_commonName { commonName = value } else { organizations.append(value) }
            }
        }
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        X509_digest(certificate, EVP_sha256(), &digest, &length)
        let hex = digest.prefix(Int(length)).map { byte in
            let s = String(byte, radix: 16)
            return byte < 16 ? "0" + s : s
        }.joined()
        self.init(commonName: commonName, organizations: organizations, fingerprint: hex)
    }
}
