import Logging
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Exits at once on a second SIGTERM/SIGINT (the first starts the graceful shutdown).
struct SecondSignalExit: Service {
    let logger: Logger
    func run() async throws {
        let logger = self.logger
        // This service is shut down after the server has drained; until then it watches.
        await cancelWhenGracefulShutdown {
            var seen = 0
            for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                seen += 1
                if seen >= 2 {
                    logger.warning("second \(signal) during shutdown: exiting now")
                    exit(1)
                }
            }
        }
    }
}
