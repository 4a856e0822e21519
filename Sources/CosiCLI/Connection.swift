import ArgumentParser
import CosiClient
import CosiRPC
import CosiTLS
import Foundation
import Yams

/// Where cosictl connects: a context from the config file, overridden by flags.
public struct ConnectionOptions: ParsableArguments, Sendable {
    @Option(help: "Context of the config file to use (default: the file's current context).")
    var context: String?

    @Option(help: "Server address, host:port or unix:/path/to/socket (default: the context's first endpoint, or 127.0.0.1:50000).")
    var endpoint: String?

    @Option(help: "CA bundle the server certificate must chain to (path or inline PEM).")
    var ca: String?

    @Option(help: "Client certificate (path or inline PEM).")
    var cert: String?

    @Option(help: "Client private key (path or inline PEM).")
    var key: String?

    @Option(help: "Machines to act on, host or host:port (port 50000 by default); comma-separated or repeated. Output gets a NODE column; each node's result is reported (default: the context's nodes, else one server, --endpoint).")
    var nodes: [String] = []

    @Option(help: "With --nodes: how many nodes are asked at once.")
    var parallel: Int = 32

    @Flag(help: "With --nodes: stop at the first node that fails (the rest are reported as not run).")
    var failFast = false

    @Option(help: "Bound each node's call (30s, 2m, 500ms, or seconds); wait, delete and apply --wait wait this long (their defaults: 30s, 300s, 30s).")
    var timeout: String?

    public init() {}

    /// `--timeout`, parsed.
    func timeoutDuration() throws -> Duration? {
        try timeout.map { try parseDuration($0, option: "--timeout") }
    }

    /// The nodes to act on: `--nodes`, else the context's `nodes:` unless --endpoint is given;
    /// empty when cosictl talks to one server.
    func fleetNodes() throws -> [CosiNode] {
        var listed = nodes.flatMap { $0.split(separator: ",").map { String($0) } }.filter { !$0.isEmpty }
        if listed.isEmpty, endpoint == nil { listed = (try? loadContext().context.nodes) ?? [] }
        do { return try listed.map(CosiNode.init(parsing:)) } catch let error as CosiNodeError {
            throw ValidationError("--nodes: \(error)")
        }
    }

    /// The config file: `$COSICONFIG` or `~/.config/cosi/config.yaml`.
    static var configPath: String {
        if let path = ProcessInfo.processInfo.environment["COSICONFIG"], !path.isEmpty { return path }
        return NSHomeDirectory() + "/.config/cosi/config.yaml"
    }

    /// A context of the config file.
    struct Context: Codable {
        var endpoints: [String]?
        /// The machines commands act on by default, as `--nodes` lists them.
        var nodes: [String]?
        var ca: String?
        var crt: String?
        var key: String?
    }

    struct ConfigFile: Codable {
        var context: String?
        var contexts: [String: Context]
    }

    /// The context chosen (or the development certificates next to a development cosid), and
    /// where it came from, for messages.
    func loadContext() throws -> (context: Context, origin: String) {
        let path = Self.configPath
        if FileManager.default.fileExists(atPath: path) {
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw CLIError("cannot read the config file \(path): \(error.localizedDescription)")
            }
            let file: ConfigFile
            do { file = try YAMLDecoder().decode(ConfigFile.self, from: text) } catch {
                throw CLIError("the config file \(path) is not valid: \(error). Write it with `cosictl gen config`.")
            }
            let name = context ?? file.context ?? file.contexts.keys.sorted().first ?? ""
            guard let found = file.contexts[name] else {
                throw CLIError("the config file \(path) has no context \"\(name)\" (it has: \(file.contexts.keys.sorted().joined(separator: ", ")))")
            }
            return (found, "context \"\(name)\" of \(path)")
        } else if context != nil {
            throw CLIError("--context needs a config file, and \(path) does not exist. Write one with `cosictl gen config`.")
        } else if FileManager.default.fileExists(atPath: "Certs/admin.crt") {
            // A newcomer next to a development cosid: use its certificates.
            return (Context(endpoints: nil, ca: "Certs/ca.crt", crt: "Certs/admin.crt", key: "Certs/admin.key"), "the development certificates in ./Certs")
        }
        return (Context(), "flags")
    }

    /// Resolves the settings, with one clear sentence for each thing that is wrong.
    func configuration() throws -> CosiClientConfiguration {
        let path = Self.configPath
        let (chosen, origin) = try loadContext()
        let endpoint = self.endpoint ?? chosen.endpoints?.first ?? "127.0.0.1:50000"
        if endpoint.hasPrefix("unix:") {
            // The local admin socket: no certificates; the server knows us by our uid.
            let placeholder = TLSConfiguration(certificateChain: .pem(""), privateKey: .pem(""), trustRoots: .pem(""))
            var configuration = CosiClientConfiguration(host: "localhost", port: 0, tls: placeholder)
            configuration.unixSocketPath = String(endpoint.dropFirst(5))
            return configuration
        }
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]) else {
            throw CLIError("the endpoint \"\(endpoint)\" must be host:port")
        }
        var host = String(endpoint[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        func source(_ flag: String?, _ value: String?, _ what: String, _ option: String) throws -> PEMSource {
            guard let value = flag ?? value else {
                throw CLIError("no \(what) is set: pass \(option) or add it to a context of \(path) (`cosictl gen config`)")
            }
            if value.hasPrefix("-----BEGIN") { return .pem(value) }
            guard FileManager.default.isReadableFile(atPath: value) else {
                throw CLIError("cannot read the \(what) file \(value) (from \(flag != nil ? option : origin)): check the path")
            }
            return .file(value)
        }
        let tls = TLSConfiguration(
            certificateChain: try source(cert, chosen.crt, "client certificate", "--cert"),
            privateKey: try source(key, chosen.key, "client key", "--key"),
            trustRoots: try source(ca, chosen.ca, "CA", "--ca")
        )
        if let certificate = try? Certificate.load(tls.certificateChain).first, let seconds = certificate.secondsUntilExpiry(), seconds <= 0 {
            throw CLIError("your client certificate (\(certificate.identity.commonName)) has expired: issue a new one with `cosictl gen client`")
        }
        var configuration = CosiClientConfiguration(host: host, port: port, tls: tls)
        if let timeout = try timeoutDuration() {
            configuration.defaultTimeout = timeout
            configuration.connectTimeout = min(timeout, configuration.connectTimeout)
        }
        return configuration
    }

    /// Connects, turning transport failures into one sentence.
    func connect() async throws -> CosiClient {
        let configuration = try configuration()
        do {
            return try await CosiClient.connect(configuration)
        } catch let error as TLSError {
            throw CLIError("cannot use the certificates: \(error.message)")
        } catch let error as RPCError {
            let text = error.message
            let address = configuration.unixSocketPath.map { "unix:\($0)" } ?? "\(configuration.host):\(configuration.port)"
            if text.contains("certificate verify failed") || text.contains("verification") {
                throw CLIError("the server at \(address) did not present a certificate this CA trusts, or its name does not match \(configuration.host): check --ca and --endpoint")
            }
            if text.contains("alert") {
                throw CLIError("the server at \(address) refused this client's certificate (unknown CA, expired, or not for client use): \(text)")
            }
            if text.contains("closed the connection") || text.contains("reset by peer") {
                throw CLIError("the server at \(address) closed the connection during the TLS handshake: it refused this client's certificate, or it has as many connections open as it allows (--max-connections): \(text)")
            }
            throw CLIError("cannot connect to \(address): \(text)")
        }
    }

    /// Connects, runs `body`, and closes the connection (GOAWAY) before returning, so the
    /// server sees a clean close when cosictl exits. Errors come out as one sentence.
    func withClient<R>(_ body: (CosiClient) async throws -> R) async throws -> R {
        do {
            return try await connect().closing(after: body)
        } catch {
            throw fail(error)
        }
    }
}
