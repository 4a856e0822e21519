import CosiRPC
import CosiTLS
import Logging
import ServiceLifecycle
import UnixSignals
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reloads the TLS material on SIGHUP (new handshakes use it; an open connection stays while its
/// client certificate still verifies against the new CAs and CRLs, and is closed when it no longer
/// does; a broken file is reported and the previous material kept), and checks expiry daily and
/// at the moment a certificate expires.
struct CertificateWatcher: Service {
    let server: RPCServer
    let material: TLSConfiguration
    let logger: Logger
    var clock = ExpiryClock()

    func run() async throws {
        let material = self.material, logger = self.logger, server = self.server, clock = self.clock
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) {
                        do {
                            server.reloadTLS(try TLSContext(role: .server, configuration: material))
                            logger.notice("SIGHUP: reloaded the server certificate, key and trusted client CAs")
                            warnAboutExpiry(material, logger: logger)
                        } catch {
                            logger.error("SIGHUP: cannot reload TLS material, keeping the previous one: \(error)")
                        }
                    }
                }
                group.addTask { await watchExpiry(material, logger: logger, clock: clock) }
                await group.waitForAll()
            }
        }
    }
}

/// The wall clock and the sleep of the expiry checks (a test's own moves only when told).
struct ExpiryClock: Sendable {
    /// Seconds since the epoch.
    var now: @Sendable () -> Int64 = { Int64(time(nil)) }
    var sleep: @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
}

/// Checks expiry daily, and at the moment a certificate expires (so that its expiry is logged
/// when it happens, not up to a day later), until cancelled.
func watchExpiry(_ material: TLSConfiguration, logger: Logger, clock: ExpiryClock) async {
    while !Task.isCancelled {
        let wait = min(86_400, (nextExpiry(material, now: clock.now()) ?? 86_400) + 1)
        do { try await clock.sleep(.seconds(wait)) } catch { return }
        warnAboutExpiry(material, logger: logger, now: clock.now())
    }
}

/// Warns about certificates (the server's chain and the trusted CAs) that expire within 30 days.
func warnAboutExpiry(_ material: TLSConfiguration, logger: Logger, now: Int64? = nil) {
    for (what, source) in [("server certificate", material.certificateChain), ("trusted CA", material.trustRoots)] {
        guard let certificates = try? Certificate.load(source) else { continue }
        for certificate in certificates {
            guard let seconds = certificate.secondsUntilExpiry(now: now) else { continue }
            let name = certificate.identity.commonName
            if seconds <= 0 {
                let consequence = what == "server certificate"
                    ? "clients now fail their TLS handshakes (open connections go on); install a new one and send SIGHUP"
                    : "clients whose certificates it issued are refused; install a new one and send SIGHUP"
                logger.error("\(what) \"\(name)\" has expired: \(consequence)", metadata: ["source": "\(source)"])
            } else if seconds <= 30 * 86_400 {
                logger.warning("\(what) \"\(name)\" expires in \(seconds / 86_400) days", metadata: ["source": "\(source)"])
            }
        }
    }
}

/// Seconds until the first of the certificates (server chain, trusted CAs) still valid expires.
func nextExpiry(_ material: TLSConfiguration, now: Int64? = nil) -> Int64? {
    [material.certificateChain, material.trustRoots]
        .flatMap { (try? Certificate.load($0)) ?? [] }
        .compactMap { $0.secondsUntilExpiry(now: now) }
        .filter { $0 > 0 }
        .min()
}

