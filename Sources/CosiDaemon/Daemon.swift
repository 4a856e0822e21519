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
import Yams

/// cosid put together from its settings: TLS material (development certificates when none are
/// given), the state engine, the server with the COSI services, the built-in controllers, the
/// certificate watcher, the metrics endpoint and signal handling, run as one service group until
/// SIGTERM or SIGINT. `cosid` parses flags and calls ``run()``; the pieces live in this module
/// so that tests and the fuzz harnesses can use them.
public struct Daemon: Sendable {
    public let settings: CosidSettings

    public init(settings: CosidSettings) {
        self.settings = settings
    }

    /// Installs the log handler the settings choose (text or JSON lines on standard error, at
    /// the settings' level). Call it once per process, before ``run()``.
    public static func bootstrapLogging(_ settings: CosidSettings) {
        let level = settings.logLevel
        let json = settings.logFormat == .json
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// Runs cosid until a graceful shutdown ends it. Everything it starts is stopped and awaited
    /// before it returns.
    ///
    /// - Throws: ``DaemonError`` after logging why (critical) when it cannot start or stops on
    ///   an error.
    public func run() async throws {
        let settings = self.settings
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
            throw DaemonError()
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
            throw DaemonError()
        }
        let server = CosiServer(
            configuration: configuration, engine: engine, logger: logger, controllerGrace: .seconds(settings.controllerGrace),
            changes: Self.builtInStatuses
        )
        do {
            try await startBuiltInControllers(settings, server: server, logger: logger)
        } catch {
            logger.critical("cannot start the built-in controllers: \(error)")
            throw DaemonError()
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
            throw DaemonError()
        }
    }
}

/// cosid could not start, or stopped on an error; the reason was logged.
public struct DaemonError: Error, CustomStringConvertible, Sendable {
    public var description: String { "cosid stopped on an error (see the log)" }
}

extension Daemon {
    /// Where a tried change with revert on error finds errors: the status a built-in controller
    /// writes for a spec (`XSpecs.…` -> `XStatuses.…`, same namespace and id) once it has acted on
    /// the spec's version (`cosi.dev/spec-version`), its `error` field.
    static let builtInStatuses = ChangeKeeperConfiguration(
        statusError: { spec, get in
            guard let kind = statusKind(spec.address.kind),
                  let status = get(ResourceAddress(namespace: kind.namespace, type: kind.type, id: spec.metadata.id)),
                  let reported = status.metadata.annotations[MachineController.specVersionAnnotation].flatMap(UInt64.init),
                  reported >= UInt64(spec.metadata.version) ?? .max,
                  let fields = (try? Yams.load(yaml: status.spec.yamlSpec)) as? [String: Any],
                  let error = fields["error"] as? String, !error.isEmpty
            else { return nil }
            return error
        },
        statusKind: statusKind
    )

    @Sendable static func statusKind(_ kind: ResourceKind) -> ResourceKind? {
        guard let range = kind.type.range(of: "Specs.") else { return nil }
        return ResourceKind(namespace: kind.namespace, type: kind.type.replacingCharacters(in: range, with: "Statuses."))
    }
}
