import ArgumentParser
import CosiRPC
import CosiServer
import CosiState
import CosiTLS
import Foundation
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// `cosid`: the COSI daemon.
@main
struct Cosid: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cosid",
        abstract: "The COSI daemon: serves COSI-RPC/1 over mutual TLS.",
        discussion: """
        With no flags, cosid listens on 127.0.0.1:50000 with certificates from ./Certs, creating a
        development CA, a server certificate and an os:admin client certificate there on first run.

        Example:
          cosid --listen 127.0.0.1:50000 --certs-dir Certs --log-level debug
        """,
        version: cosiVersion
    )

    @Option(help: "A YAML file of settings (keys are the flag names, e.g. data-dir: /var/lib/cosi); flags given on the command line win.")
    var config: String?

    @Flag(help: "Print the effective configuration (after the config file and flags) as YAML, and exit.")
    var printConfig = false

    @Option(help: "Serve metrics in the Prometheus text format at http://ADDRESS/metrics (host:port; off by default; use a loopback address).")
    var metricsListen: String?

    @Option(help: "Log format: text or json (one JSON object per line).")
    var logFormat: String = "text"

    @Option(help: "Address to listen on: host:port (mutual TLS), or unix:/path for a local admin socket (peer credentials; root is os:admin). Repeat for several; the first must be host:port.")
    var listen: [String] = ["127.0.0.1:50000"]

    @Option(help: "Directory of the development certificates (created on first run when --ca/--cert/--key are not given).")
    var certsDir = "Certs"

    @Option(help: "CA bundle that client certificates must chain to (default: <certs-dir>/ca.crt).")
    var ca: String?

    @Option(help: "Server certificate chain, PEM (default: <certs-dir>/server.crt).")
    var cert: String?

    @Option(help: "Server private key, PEM (default: <certs-dir>/server.key).")
    var key: String?

    @Option(help: "Directory of the state database (resources and event log, SQLite).")
    var dataDir = "data"

    @Option(help: "When commits are made durable: full (fsync every commit group; survives power loss) or normal (at checkpoints; survives a process crash).")
    var sync: String = "full"

    @Flag(help: "Keep the state in memory only: nothing is written to disk, everything is lost on exit.")
    var inMemory = false

    @Option(help: "Keep at least this many of the most recent events in the event log.")
    var retainEvents = 100_000

    @Option(help: "Also keep every event younger than this many seconds.")
    var retainSeconds: Int64?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Seconds a graceful shutdown lets calls in flight finish.")
    var gracePeriod: Int = 10

    @Option(help: "Seconds a TLS handshake may take.")
    var handshakeTimeout: Int = 10

    @Option(help: "Seconds of idleness before the server pings a connection.")
    var keepalive: Int = 60

    @Option(help: "Largest frame payload accepted, in bytes (16384 to 67108864).")
    var maxFrameSize: UInt32 = RPCSettings.defaultMaxFrameSize

    @Option(help: "The most connections open at once; further ones are closed on accept.")
    var maxConnections = 10_000

    @Option(help: "Concurrent calls allowed on one connection.")
    var maxConcurrentStreams: UInt32 = RPCSettings.defaultMaxConcurrentStreams

    func validate() throws {
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format must be text or json") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown --log-level \(logLevel); use trace, debug, info, notice, warning, error or critical")
        }
        guard RPCSettings.frameSizeRange.contains(maxFrameSize) else {
            throw ValidationError("--max-frame-size must be within \(RPCSettings.frameSizeRange)")
        }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        guard maxConcurrentStreams >= 1 else { throw ValidationError("--max-concurrent-streams must be at least 1") }
        guard SyncMode(rawValue: sync) != nil else { throw ValidationError("--sync must be full or normal, not \(sync)") }
        guard retainEvents >= 1 else { throw ValidationError("--retain-events must be at least 1") }
        _ = try parseListen()
    }

    /// The listen addresses: the first is TCP (the TLS listener), the rest TCP or Unix sockets.
    private func parseListen() throws -> (String, Int, [ListenAddress]) {
        var addresses: [ListenAddress] = []
        for entry in listen.flatMap({ $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }) {
            if entry.hasPrefix("unix:") {
                let path = String(entry.dropFirst(5))
                guard path.hasPrefix("/") else { throw ValidationError("--listen \(entry): give an absolute socket path, e.g. unix:/run/cosi/cosid.sock") }
                addresses.append(.unix(path: path))
                continue
            }
            guard let colon = entry.lastIndex(of: ":"), let port = Int(entry[entry.index(after: colon)...]), (0...65535).contains(port) else {
                throw ValidationError("--listen \(entry) must be host:port (e.g. 127.0.0.1:50000) or unix:/path")
            }
            var host = String(entry[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            addresses.append(.tcp(host: host, port: port))
        }
        guard case .tcp(let host, let port)? = addresses.first else {
            throw ValidationError("the first --listen address must be host:port (the mutual-TLS listener)")
        }
        return (host, port, Array(addresses.dropFirst()))
    }

    mutating func run() async throws {
        if let config { try applyConfigFile(config) }
        try validate()
        if printConfig {
            print(effectiveConfiguration(), terminator: "")
            return
        }
        let level = Logger.Level(rawValue: logLevel)!
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "cosid")
        raiseOpenFileLimit(logger: logger)
        var metricsEndpoint: MetricsEndpoint?
        if let metricsListen {
            guard let colon = metricsListen.lastIndex(of: ":"), let metricsPort = Int(metricsListen[metricsListen.index(after: colon)...]) else {
                throw ValidationError("--metrics-listen must be host:port, e.g. 127.0.0.1:9100")
            }
            let metricsHost = String(metricsListen[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            if !["127.0.0.1", "::1", "localhost"].contains(metricsHost) {
                logger.warning("the metrics endpoint is plain HTTP without authentication; \(metricsHost) is not a loopback address")
            }
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            metricsEndpoint = MetricsEndpoint(host: metricsHost, port: metricsPort, registry: registry, logger: logger)
        }

        let certificates = DevelopmentCertificates(directory: certsDir)
        if ca == nil || cert == nil || key == nil {
            if try certificates.ensure() {
                logger.notice("generated development certificates", metadata: [
                    "dir": "\(certsDir)", "client": "\(certificates.adminCertificate)",
                ])
            }
        }
        let material = TLSConfiguration(
            certificateChain: .file(cert ?? certificates.serverCertificate),
            privateKey: .file(key ?? certificates.serverKey),
            trustRoots: .file(ca ?? certificates.caCertificate)
        )
        let tls: TLSContext
        do {
            tls = try TLSContext(role: .server, configuration: material)
        } catch {
            logger.critical("cannot load TLS material: \(error.message)")
            throw ExitCode.failure
        }
        warnAboutExpiry(material, logger: logger)

        let (host, port, additional) = try parseListen()
        var configuration = RPCServerConfiguration(host: host, port: port, tls: tls)
        configuration.additionalListeners = additional
        configuration.maximumConnections = maxConnections
        configuration.gracePeriod = .seconds(Int64(gracePeriod))
        configuration.handshakeTimeout = .seconds(Int64(handshakeTimeout))
        configuration.connection.keepaliveInterval = .seconds(Int64(keepalive))
        configuration.connection.settings.maxFrameSize = maxFrameSize
        configuration.connection.settings.maxConcurrentStreams = maxConcurrentStreams

        let engine: StateEngine
        do {
            var stateConfiguration = StateEngineConfiguration()
            stateConfiguration.retention = RetentionPolicy(minimumEvents: retainEvents, maximumAgeSeconds: retainSeconds)
            let storage: any StateStorage = inMemory ? MemoryStorage() : try SQLiteStorage(directory: dataDir, sync: SyncMode(rawValue: sync)!)
            engine = try StateEngine(storage: storage, configuration: stateConfiguration, logger: logger)
            logger.info("state loaded", metadata: [
                "storage": "\(inMemory ? "memory" : dataDir + "/state.db")", "sync": "\(inMemory ? "none" : sync)",
                "resources": "\(engine.resourceCount)", "revision": "\(engine.revision)",
            ])
        } catch {
            logger.critical("cannot open the state: \(error.message)")
            throw ExitCode.failure
        }
        let server = CosiServer(configuration: configuration, engine: engine, logger: logger)
        do {
            try await server.start()
        } catch {
            logger.critical("cannot listen on \(listen.joined(separator: ", ")): \(error)")
            throw ExitCode.failure
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [
                // Services shut down in reverse order: the server first. When it has drained,
                // nothing else needs to run.
                .init(service: SecondSignalExit(logger: logger)),
                .init(service: CertificateWatcher(server: server.rpc, material: material, logger: logger)),
            ] + (metricsEndpoint.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? []) + [
                .init(service: server, successTerminationBehavior: .cancelGroup, failureTerminationBehavior: .cancelGroup),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }
}

/// Reloads the TLS material on SIGHUP (new handshakes use it; open connections are untouched; a
/// broken file is reported and the previous material kept), and checks expiry once a day.
struct CertificateWatcher: Service {
    let server: RPCServer
    let material: TLSConfiguration
    let logger: Logger

    func run() async throws {
        let material = self.material, logger = self.logger, server = self.server
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
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(86_400))
                        if !Task.isCancelled { warnAboutExpiry(material, logger: logger) }
                    }
                }
                await group.waitForAll()
            }
        }
    }
}

/// Warns about certificates (the server's chain and the trusted CAs) that expire within 30 days.
func warnAboutExpiry(_ material: TLSConfiguration, logger: Logger) {
    for (what, source) in [("server certificate", material.certificateChain), ("trusted CA", material.trustRoots)] {
        guard let certificates = try? Certificate.load(source) else { continue }
        for certificate in certificates {
            guard let seconds = certificate.secondsUntilExpiry() else { continue }
            let name = certificate.identity.commonName
            if seconds <= 0 {
                logger.error("\(what) \"\(name)\" has expired", metadata: ["source": "\(source)"])
            } else if seconds <= 30 * 86_400 {
                logger.warning("\(what) \"\(name)\" expires in \(seconds / 86_400) days", metadata: ["source": "\(source)"])
            }
        }
    }
}

/// Every connection is a file descriptor: raise the soft limit to the hard limit, so a control
/// plane with thousands of watches is not refused by a default of 1024.
func raiseOpenFileLimit(logger: Logger) {
    var limit = rlimit()
    guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    let previous = limit.rlim_cur
    limit.rlim_cur = limit.rlim_max
    if setrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 {
        logger.debug("raised the open file limit", metadata: ["from": "\(previous)", "to": "\(limit.rlim_max)"])
    }
}

#if canImport(Glibc)
private let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
#else
private let RLIMIT_NOFILE_VALUE = RLIMIT_NOFILE
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
