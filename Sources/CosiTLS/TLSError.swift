import COpenSSL

/// A TLS failure: loading material, configuring a context, or a handshake or record error.
///
/// `code` says what failed; `message` says why in words, including what OpenSSL reported.
public struct TLSError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private var name: String
        private init(_ name: String) { self.name = name }
        /// A certificate, key or CA file could not be read or parsed.
        public static let invalidMaterial = Code("invalidMaterial")
        /// OpenSSL refused the configuration.
        public static let configuration = Code("configuration")
        /// The handshake failed (peer refused, bad certificate, protocol version, ALPN, ...).
        public static let handshakeFailed = Code("handshakeFailed")
        /// The handshake did not finish within the allowed time.
        public static let handshakeTimeout = Code("handshakeTimeout")
        /// A TLS record could not be processed after the handshake.
        public static let protocolFailure = Code("protocolFailure")
        /// Generating a key or certificate failed.
        public static let generation = Code("generation")
        public var description: String { name }
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// Builds an error from `context` and everything on this thread's OpenSSL error queue (which is
    /// drained, so later calls start clean).
    static func drainingQueue(_ code: Code, _ context: String) -> TLSError {
        let reasons = drainOpenSSLErrors()
        return TLSError(code: code, message: reasons.isEmpty ? context : "\(context): \(reasons.joined(separator: "; "))")
    }
}

/// Empties this thread's OpenSSL error queue and returns its entries as text.
func drainOpenSSLErrors() -> [String] {
    var reasons: [String] = []
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        let text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        if reasons.count < 8 { reasons.append(text) }
    }
    return reasons
}
