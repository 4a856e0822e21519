import CosiTLS
import CosiTesting
import Foundation
import NIOConcurrencyHelpers
import Testing

@testable import CosiDaemon

/// The daemon's expiry checks on a clock of the test's: no waiting for a certificate to expire.
@Suite("Certificate expiry checks")
struct CertificateWatcherTests {
    @Test func theServerCertificatesExpiryIsLoggedWhenItHappensThenDaily() async throws {
        let pki = try TestPKI(serverValidForSeconds: 100)
        let log = LogCapture()
        let start = Int64(Date().timeIntervalSince1970)
        let now = NIOLockedValueBox(start)
        let sleeps = NIOLockedValueBox<[Duration]>([])
        // Each sleep moves the clock by what was asked; the third ends the watch.
        let clock = ExpiryClock(
            now: { now.withLockedValue { $0 } },
            sleep: { duration in
                let count = sleeps.withLockedValue { $0.append(duration); return $0.count }
                if count == 3 { throw CancellationError() }
                now.withLockedValue { $0 += duration.components.seconds }
            }
        )
        await watchExpiry(pki.server, logger: log.logger("cosid"), clock: clock)

        let asked = sleeps.withLockedValue { $0 }
        #expect(asked.count == 3)
        // First, until just after the server certificate expires (100 s from its making).
        #expect(asked[0] >= .seconds(95) && asked[0] <= .seconds(101), "\(asked[0])")
        // Then daily: the next certificate to expire is the CA, 30 days away.
        #expect(asked[1] == .seconds(86_400))
        let expired = log.records.filter { $0.message.hasPrefix("server certificate \"test server\" has expired") }
        #expect(expired.count == 2, "at its expiry and at the next daily check: \(log.records.map(\.message))")
        #expect(expired.first?.message.contains("install a new one and send SIGHUP") == true)
    }

    @Test func nothingIsLoggedBeforeACertificateIsNear() async throws {
        let pki = try TestPKI()
        let log = LogCapture()
        let start = Int64(Date().timeIntervalSince1970)
        // The CA and the server certificate expire in 30 days: the warning says so, as a warning.
        warnAboutExpiry(pki.server, logger: log.logger("cosid"), now: start)
        #expect(log.records.allSatisfy { !$0.message.contains("has expired") })
        #expect(log.records.contains { $0.message.contains("expires in 29 days") || $0.message.contains("expires in 30 days") })
        // 31 days later, both have expired.
        let later = LogCapture()
        warnAboutExpiry(pki.server, logger: later.logger("cosid"), now: start + 31 * 86_400)
        #expect(later.records.filter { $0.message.contains("has expired") }.count == 2, "\(later.records.map(\.message))")
    }
}
