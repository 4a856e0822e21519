import ArgumentParser
import CosiDaemon
import CosiMessages
import CosiOSControllers
import CosiState
import Logging

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

    @Option(help: "Seconds between checks of kernel parameters (and other settings that give no change events), and the longest wait between retries of a failed attempt. (default: \(CosidSettings.defaults.resyncInterval))")
    var resyncInterval: Int?

    @Option(help: "Where the built-in controllers act: / for this machine, or a sandbox directory (created, with a few kernel parameter files). (default: \(CosidSettings.defaults.root))")
    var root: String?

    @Option(help: "The network namespace the links, addresses and routes controllers act in: a namespace file such as /run/netns/NAME (ip netns add NAME). cosid listens where it runs. (default: cosid's own)")
    var netns: String?

    @Option(help: "Built-in controllers to run: \(BuiltInControllers.names.joined(separator: ",")), all or none. (default: \(CosidSettings.defaults.controllers))")
    var controllers: String?

    /// The defaults, then the config file, then the flags given; a setting that cannot be used
    /// is a usage error naming it.
    func effectiveSettings() throws -> CosidSettings {
        do {
            return try overlaid()
        } catch let error as SettingsError {
            throw ValidationError(error.message)
        }
    }

    private func overlaid() throws -> CosidSettings {
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
        overlay(resyncInterval, \.resyncInterval)
        overlay(root, \.root)
        overlay(netns, \.netns)
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
        Daemon.bootstrapLogging(settings)
        do {
            try await Daemon(settings: settings).run()
        } catch is DaemonError {
            throw ExitCode.failure
        }
    }
}

// The settings' enumerations as flag values (the types live in CosiDaemon and CosiState).
extension LogFormat: ExpressibleByArgument {}

extension SyncMode: ExpressibleByArgument {}

extension Logger.Level: @retroactive ExpressibleByArgument {}
