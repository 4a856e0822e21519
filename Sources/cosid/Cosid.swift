import ArgumentParser
import CosiMessages
import CosiOSControllers
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
#elseif canImport(Darwin)
import Darwin
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

    // Each flag overrides the setting of the same name (see CosidSettings for the defaults).
    @Option(help: "Address to listen on: host:port (mutual TLS), or unix:/path for a local admin socket (peer credentials; root is os:admin). Repeat for several; the first must be host:port. (default: \(CosidSettings.defaults.listen.joined(separator: ",")))")
    var listen: [String] = []

    @Option(help: "Directory of the development certificates, created on first run when --ca/--cert/--key are not all given. (default: \(CosidSettings.defaults.certsDir))")
    var certsDir: String?

    @Option(help: "CA bundle that client certificates must chain to. (default: <certs-dir>/ca.crt)")
    var ca: String?

    @Option(help: "Server certificate chain, PEM. (default: <certs-dir>/server.crt)")
    var cert: String?

    @Option(help: "Server private key, PEM. (default: <certs-dir>/server.key)")
    var key: String?

    @Option(help: "Certificate revocation lists, PEM, checked for every client certificate; every CA of --ca then needs its CRL here. Reloaded on SIGHUP: connections of revoked certificates are closed. (default: none)")
    var crl: String?

    @Option(help: "Directory of the state database (resources and event log, SQLite). (default: \(CosidSettings.defaults.dataDir))")
    var dataDir: String?

    @Option(help: "When commits are made durable: full (fsync every commit group; survives power loss) or normal (at checkpoints; survives a process crash). (default: \(CosidSettings.defaults.sync.rawValue))")
    var sync: SyncMode?

    @Flag(inversion: .prefixedNo, help: "Keep the state in memory only: nothing is written to disk, everything is lost on exit. (default: off)")
    var inMemory: Bool?

    @Option(help: "Keep at least this many of the most recent events in the event log. (default: \(CosidSettings.defaults.retainEvents))")
    var retainEvents: Int?

    @Option(help: "Also keep every event younger than this many seconds. (default: none)")
    var retainSeconds: Int64?

    @Option(help: "Log level: \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")). (default: \(CosidSettings.defaults.logLevel.rawValue))")
    var logLevel: Logger.Level?

    @Option(help: "Log format: text, or json (one object per line). (default: \(CosidSettings.defaults.logFormat.rawValue))")
    var logFormat: LogFormat?

    @Option(help: "Serve metrics in the Prometheus text format at http://ADDRESS/metrics (host:port; use a loopback address). (default: off)")
    var metricsListen: String?

    @Option(help: "Seconds a graceful shutdown lets calls in flight finish. (default: \(CosidSettings.defaults.gracePeriod))")
    var gracePeriod: Int?

    @Option(help: "Seconds a TLS handshake may take, and then the client's SETTINGS. (default: \(CosidSettings.defaults.handshakeTimeout))")
    var handshakeTimeout: Int?

    @Option(help: "Seconds of idleness before the server pings a connection. (default: \(CosidSettings.defaults.keepalive))")
    var keepalive: Int?

    @Option(help: "Largest frame payload accepted, in bytes (16384 to 67108864). (default: \(CosidSettings.defaults.maxFrameSize))")
    var maxFrameSize: UInt32?

    @Option(help: "The most connections open at once; further ones are closed on accept. (default: \(CosidSettings.defaults.maxConnections))")
    var maxConnections: Int?

    @Option(help: "Concurrent calls allowed on one connection. (default: \(CosidSettings.defaults.maxConcurrentStreams))")
    var maxConcurrentStreams: UInt32?

    @Option(help: "Seconds a disconnected remote controller keeps its registration (and can reconnect with its token). (default: \(CosidSettings.defaults.controllerGrace))")
    var controllerGrace: Int?

    @Option(help: "Where the built-in controllers act: / for this machine, or a sandbox directory (created, with a few kernel parameter files). (default: \(CosidSettings.defaults.root))")
    var root: String?

    @Option(help: "Built-in controllers to run: \(BuiltInControllers.names.joined(separator: ",")), all or none. (default: \(CosidSettings.defaults.controllers))")
    var controllers: String?

    /// The defaults, then the config file, then the flags given.
    func effectiveSettings() throws -> CosidSettings {
        var settings = try config.map(CosidSettings.load(file:)) ?? .defaults
        func overlay<T>(_ flag: T?, _ setting: WritableKeyPath<CosidSettings, T>) {
            if let flag { settings[keyPath: setting] = flag }
        }
        // For optional settings: a flag not given must not reset the file's value to nil.
        func overlay<T>(_ flag: T?, _ setting: WritableKeyPath<CosidSettings, T?>) {
            if let flag { settings[keyPath: setting] = flag }
        }
        if !listen.isEmpty { settings.listen = listen }
        overlay(certsDir, \.certsDir)
        overlay(ca, \.ca)
        overlay(cert, \.cert)
        overlay(key, \.key)
        overlay(crl, \.crl)
        overlay(dataDir, \.dataDir)
        overlay(sync, \.sync)
        overlay(inMemory, \.inMemory)
        overlay(retainEvents, \.retainEvents)
        overlay(retainSeconds, \.retainSeconds)
        overlay(logLevel, \.logLevel)
        overlay(logFormat, \.logFormat)
        overlay(metricsListen, \.metricsListen)
        overlay(gracePeriod, \.gracePeriod)
        overlay(handshakeTimeout, \.handshakeTimeout)
        overlay(keepalive, \.keepalive)
        overlay(maxFrameSize, \.maxFrameSize)
        overlay(maxConnections, \.maxConnections)
        overlay(maxConcurrentStreams, \.maxConcurrentStreams)
        overlay(controllerGrace, \.controllerGrace)
        overlay(root, \.root)
        overlay(controllers, \.controllers)
        try settings.validate()
        return settings
    }

    func validate() throws {
        _ = try effectiveSettings()
    }

    mutating func run() async throws {
        let settings = try effectiveSettings()
        if printConfig {
            print(try settings.yaml(), terminator: "")
            return
        }
        let level = settings.logLevel
        let json = settings.logFormat == .json
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "cosid")
        raiseOpenFileLimit(logger: logger)
        var metricsEndpoint: MetricsEndpoint?
        if let (metricsHost, metricsPort) = try settings.metricsAddress() {
            if !["127.0.0.1", "::1", "localhost"].contains(metricsHost) {
                logger.warning("the metrics endpoint is plain HTTP without authentication; \(metricsHost) is not a loopback address")
            }
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(MetricsCatalog.factory(registry))
            _ = MetricsCatalog.startTime
            metricsEndpoint = MetricsEndpoint(host: metricsHost, port: metricsPort, registry: registry, logger: logger)
        }

        let certificates = DevelopmentCertificates(directory: settings.certsDir)
        if settings.ca == nil || settings.cert == nil || settings.key == nil {
            if try certificates.ensure() {
                logger.notice("generated development certificates", metadata: [
                    "dir": "\(settings.certsDir)", "client": "\(certificates.adminCertificate)",
                ])
            }
        }
        let material = TLSConfiguration(
            certificateChain: .file(settings.cert ?? certificates.serverCertificate),
            privateKey: .file(settings.key ?? certificates.serverKey),
            trustRoots: .file(settings.ca ?? certificates.caCertificate),
            revocationLists: settings.crl.map { .file($0) }
        )
        let tls: TLSContext
        do {
            tls = try TLSContext(role: .server, configuration: material)
        } catch {
            logger.critical("cannot load TLS material: \(error.message)")
            throw ExitCode.failure
        }
        warnAboutExpiry(material, logger: logger)

        let (host, port, additional) = try settings.listenAddresses()
        var configuration = RPCServerConfiguration(host: host, port: port, tls: tls)
        configuration.additionalListeners = additional
        configuration.maximumConnections = settings.maxConnections
        configuration.gracePeriod = .seconds(Int64(settings.gracePeriod))
        configuration.handshakeTimeout = .seconds(Int64(settings.handshakeTimeout))
        configuration.connection.keepaliveInterval = .seconds(Int64(settings.keepalive))
        configuration.connection.settings.maxFrameSize = settings.maxFrameSize
        configuration.connection.settings.maxConcurrentStreams = settings.maxConcurrentStreams

        let engine: StateEngine
        do {
            var stateConfiguration = StateEngineConfiguration()
            stateConfiguration.retention = RetentionPolicy(minimumEvents: settings.retainEvents, maximumAgeSeconds: settings.retainSeconds)
            // The built-in spec types are checked at every write, whichever controllers run.
            stateConfiguration.specValidators = BuiltInControllers.specSchemas.mapValues { schema in
                { resource in schema.problem(in: resource.spec.yamlSpec) }
            }
            let storage: any StateStorage = settings.inMemory ? MemoryStorage() : try SQLiteStorage(directory: settings.dataDir, sync: settings.sync)
            engine = try StateEngine(storage: storage, configuration: stateConfiguration, logger: logger)
            logger.info("state loaded", metadata: [
                "storage": "\(settings.inMemory ? "memory" : settings.dataDir + "/state.db")", "sync": "\(settings.inMemory ? "none" : settings.sync.rawValue)",
                "resources": .stringConvertible(engine.resourceCount), "revision": .stringConvertible(engine.revision),
            ])
        } catch {
            logger.critical("cannot open the state: \(error.message)")
            throw ExitCode.failure
        }
        let server = CosiServer(configuration: configuration, engine: engine, logger: logger, controllerGrace: .seconds(settings.controllerGrace))
        do {
            try await startBuiltInControllers(settings, server: server, logger: logger)
        } catch {
            logger.critical("cannot start the built-in controllers: \(error)")
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
        do {
            try await group.run()
        } catch {
            // The server's task group ends every connection and call before this point.
            if server.rpc.localAddress == nil {
                logger.critical("cannot listen on \(settings.listen.joined(separator: ", ")): \(error)")
            } else {
                logger.critical("stopped on an error: \(error)")
            }
            throw ExitCode.failure
        }
    }
}

/// Defines what cosid uses whichever controllers run: the namespaces of the built-in types and
/// the types themselves (brought up to date when an older cosid defined them differently).
func defineBuiltIns(server: CosiServer, logger: Logger) async {
    var wanted: [Resource] = BuiltInControllers.namespaces.map { name, description in
        Resource(
            metadata: Metadata(namespace: MetaNamespace.namespace, type: MetaNamespace.namespaceType, id: name),
            spec: Spec(protoSpec: Array(buffer: Meta.NamespaceSpec(description: description).serializedBytes()))
        )
    }
    for setting in BuiltInControllers.settings {
        for spec in BuiltInControllers.definitions(setting) {
            do { wanted.append(try MetaNamespace.definition(spec)) } catch { logger.warning("cannot define \(spec.resourceType): \(error)") }
        }
    }
    for resource in wanted {
        do {
            if var current = try? server.engine.get(resource.address) {
                // A namespace someone described differently is left as it is.
                guard current.spec != resource.spec, resource.metadata.type == MetaNamespace.resourceDefinitionType else { continue }
                current.spec = resource.spec
                _ = try await server.engine.update(current, owner: current.metadata.owner)
            } else {
                _ = try await server.engine.create(resource, owner: "cosid")
            }
        } catch {
            logger.warning("cannot define \(resource.metadata.id): \(error)")
        }
    }
}

/// Registers the chosen built-in controllers on `server`, acting under `settings.root`. A root
/// other than `/` is a sandbox: created, and seeded with a few kernel parameter files so
/// kernel-parameter specs have something to act on.
func startBuiltInControllers(_ settings: CosidSettings, server: CosiServer, logger: Logger) async throws {
    await defineBuiltIns(server: server, logger: logger)
    let chosen = try BuiltInControllers.select(settings.controllers)
    guard !chosen.isEmpty else { return }
    let path = settings.root.hasPrefix("/") ? settings.root : FileManager.default.currentDirectoryPath + "/" + settings.root
    let root = MachineRoot(path)
    if !root.isSystemRoot {
        try root.makeDirectories(root.path)
        try BuiltInControllers.seedSandbox(root)
    }
    for setting in chosen {
        try server.controllers.register(MachineController(setting, root: root))
    }
    logger.notice("built-in controllers acting on \(root.isSystemRoot ? "this machine (/)" : "the sandbox \(root.path)")", metadata: [
        "controllers": "\(chosen.map(\.name).joined(separator: ","))",
    ])
}

/// Reloads the TLS material on SIGHUP (new handshakes use it; an open connection stays while its
/// client certificate still verifies against the new CAs and CRLs, and is closed when it no longer
/// does; a broken file is reported and the previous material kept), and checks expiry daily and
/// at the moment a certificate expires.
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
                    // Daily, and at the moment a certificate expires (so that its expiry is
                    // logged when it happens, not up to a day later).
                    while !Task.isCancelled {
                        let wait = min(86_400, (nextExpiry(material) ?? 86_400) + 1)
                        try? await Task.sleep(for: .seconds(wait))
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
func nextExpiry(_ material: TLSConfiguration) -> Int64? {
    [material.certificateChain, material.trustRoots]
        .flatMap { (try? Certificate.load($0)) ?? [] }
        .compactMap { $0.secondsUntilExpiry() }
        .filter { $0 > 0 }
        .min()
}

/// Every connection is a file descriptor: raise the soft limit to the hard limit, so a control
/// plane with thousands of watches is not refused by a default of 1024.
func raiseOpenFileLimit(logger: Logger) {
    var limit = rlimit()
    guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    let previous = limit.rlim_cur
    limit.rlim_cur = limit.rlim_max
    if setrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 {
        logger.debug("raised the open file limit", metadata: ["from": .stringConvertible(UInt64(previous)), "to": .stringConvertible(UInt64(limit.rlim_max))])
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
