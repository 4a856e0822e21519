import CosiTLS
import CosiTesting
import Foundation
import Testing

@Suite("Certificate expiry")
struct ExpiryTests {
    @Test func secondsUntilExpiry() throws {
        let pki = try TestPKI()
        let certificates = try Certificate.load(.pem(pki.caPEM))
        #expect(certificates.count == 1)
        let seconds = try #require(certificates.first?.secondsUntilExpiry())
        #expect(seconds > 29 * 86_400 && seconds <= 30 * 86_400, "\(seconds)")
        let expired = try pki.client(expired: true)
        let expiredSeconds = try #require(try Certificate.load(expired.certificateChain).first?.secondsUntilExpiry())
        #expect(expiredSeconds < 0)
    }
}

