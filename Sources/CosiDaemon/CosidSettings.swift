import CosiNetlink
import CosiOSControllers
import CosiRPC
import CosiState
import Foundation
import Logging
import Yams

/// Every setting of `cosid`, declared once.
///
/// A property's name in kebab-case is both its config-file key and its flag (`dataDir` is
/// `data-dir:` and `--data-dir`). Effective settings are these defaults, then the config file's
/// keys, then the flags given on the command line. The file is decoded by Yams and printed back
/// by `--print-config` through Yams' encoder.
public struct CosidSettings: Codable, Equatable, Sendable {
    /// `host:port` (mutual TLS; the first must be one) or `unix:/path` (local admin socket).
    public var listen = ["127.0.0.1:50000"]
    /// Development certificates, created when missing.
    public var certsDir = "Certs"
    /// CA bundle client certificates must chain to (default: `<certs-dir>/ca.crt`).
    public var ca: String?
    /// Server certificate chain, PEM (default: `<certs-dir>/server.crt`).
    public var cert: String?
    /// Server private key, PEM (default: `<certs-dir>/server.key`).
    public var key: String?
    /// Certificate revocation lists, PEM, checked for client certificates (none by default).
    public var crl: String?
    /// Directory of the state database.
    public var dataDir = "data"
    /// When commits are durable.
    public var sync = SyncMode.full
    /// Keep the state in memory only.
    public var inMemory = false
    /// Keep at least this many of the most recent events.
    public var retainEvents = 100_000
    /// Also keep every event younger than this many seconds.
    public var retainSeconds: Int64?
    public var logLevel = Logger.Level.info
    public var logFormat = LogFormat.text
    /// `host:port` of the Prometheus endpoint; off when nil.
    public var metricsListen: String?
    /// Seconds a graceful shutdown lets calls finish.
    public var gracePeriod = 10
    /// Seconds a TLS handshake may take.
    public var handshakeTimeout = 10
    /// Idle seconds before the server pings a connection.
    public var keepalive = 60
    public var maxFrameSize = RPCSettings.defaultMaxFrameSize
    public var maxConnections = 10_000
    public var maxConcurrentStreams = RPCSettings.defaultMaxConcurrentStreams
    /// Seconds a disconnected remote controller keeps its registration.
    public var controllerGrace = 60
    /// Where the built-in controllers act: `/`, or a sandbox directory (created and seeded).
    public var root = "/"
    /// The network namespace the network controllers act in (a namespace file such as
    /// `/run/netns/NAME`); nil: cosid's own.
    public var netns: String?
    /// The built-in controllers to run: names separated by commas, `all` or `none`.
    public var controllers = "all"
    /// Seconds between checks of what gives no change events (kernel parameters, the live
    /// hostname); also the longest wait between retries of a failed attempt.
    public var resyncInterval = 10

    public static let defaults = CosidSettings()

    public init() {}

    /// The settings' names as the config file and the flags spell them, in declaration order.
    public static let keys: [String] = Mirror(reflecting: CosidSettings()).children.compactMap { $0.label.map(kebab) }

    /// Checks every value; the error names the setting.
    public func validate() throws {
        guard RPCSettings.frameSizeRange.contains(maxFrameSize) else {
            throw SettingsError("max-frame-size must be within \(RPCSettings.frameSizeRange.lowerBound)...\(RPCSettings.frameSizeRange.upperBound)")
        }
        guard maxConnections >= 1 else { throw SettingsError("max-connections must be at least 1") }
        guard maxConcurrentStreams >= 1 else { throw SettingsError("max-concurrent-streams must be at least 1") }
        guard retainEvents >= 1 else { throw SettingsError("retain-events must be at least 1") }
        for (name, seconds) in [("grace-period", gracePeriod), ("handshake-timeout", handshakeTimeout), ("keepalive", keepalive), ("controller-grace", controllerGrace), ("resync-interval", resyncInterval)] where seconds < 1 {
            throw SettingsError("\(name) must be at least 1 second")
        }
        _ = try listenAddresses()
        _ = try metricsAddress()
        guard !root.isEmpty else { throw SettingsError("root must be a directory (/ for this machine)") }
        if let netns {
            do { _ = try NetworkNamespace(path: netns) } catch { throw SettingsError("netns: \(error)") }
        }
        do {
            _ = try BuiltInControllers.select(controllers)
        } catch {
            throw SettingsError("controllers: \(error.message)")
        }
    }

    /// The listen addresses: the first is TCP (the TLS listener), the rest TCP or Unix sockets.
    public func listenAddresses() throws -> (host: String, port: Int, additional: [ListenAddress]) {
        var addresses: [ListenAddress] = []
        for entry in listen.flatMap({ $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }) {
            if entry.hasPrefix("unix:") {
                let path = String(entry.dropFirst(5))
                guard path.hasPrefix("/") else { throw SettingsError("listen \(entry): give an absolute socket path, e.g. unix:/run/cosi/cosid.sock") }
                addresses.append(.unix(path: path))
                continue
            }
            guard let (host, port) = Self.hostPort(entry) else {
                throw SettingsError("listen \(entry) must be host:port (e.g. 127.0.0.1:50000) or unix:/path")
            }
            addresses.append(.tcp(host: host, port: port))
        }
        guard case .tcp(let host, let port)? = addresses.first else {
            throw SettingsError("the first listen address must be host:port (the mutual-TLS listener)")
        }
        return (host, port, Array(addresses.dropFirst()))
    }

    /// The metrics endpoint's address, when enabled.
    public func metricsAddress() throws -> (host: String, port: Int)? {
        guard let metricsListen else { return nil }
        guard let address = Self.hostPort(metricsListen) else {
            throw SettingsError("metrics-listen must be host:port, e.g. 127.0.0.1:9100")
        }
        return address
    }

    /// `host:port` or `[v6]:port`.
    private static func hostPort(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }

    // MARK: The config file

    /// The defaults with the settings of the YAML file at `path` on top.
    ///
    /// - Throws: ``SettingsError`` naming the file and the setting: unreadable file, not YAML,
    ///   not a mapping, an unknown key (the known ones are listed), a value of the wrong type.
    public static func load(file path: String) throws -> CosidSettings {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SettingsError("cannot read the config file \(path)")
        }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw SettingsError("the config file \(path) is not valid YAML: \(error)")
        }
        guard let node else { return .defaults }
        guard let mapping = node.mapping else {
            throw SettingsError("the config file \(path) must be a mapping of setting: value")
        }
        var merged = try defaultsNode()
        for (key, value) in mapping {
            guard let name = key.string, keys.contains(name) else {
                throw SettingsError("the config file \(path) has an unknown setting \"\(key.string ?? "\(key)")\" (known: \(keys.joined(separator: ", ")))")
            }
            // `listen` takes one address or a list of them.
            let value = name == "listen" && value.scalar != nil ? Node([value]) : value
            merged[camel(name)] = value
        }
        do {
            return try YAMLDecoder().decode(CosidSettings.self, from: .mapping(merged))
        } catch let DecodingError.typeMismatch(type, context) {
            throw SettingsError("the config file \(path): \(settingName(context)) must be \(describe(type))")
        } catch let DecodingError.dataCorrupted(context) {
            let name = settingName(context)
            guard let values = choices[name] else {
                throw SettingsError("the config file \(path): \(name) has a value it cannot take (\(context.debugDescription))")
            }
            throw SettingsError("the config file \(path): \(name) must be one of \(values.joined(separator: ", "))")
        } catch {
            throw SettingsError("the config file \(path): \(error)")
        }
    }

    /// The settings as YAML, with the config file's keys (unset optional settings are left out).
    public func yaml() throws -> String {
        guard let node = try Yams.compose(yaml: try YAMLEncoder().encode(self)), let mapping = node.mapping else { return "" }
        let renamed = Node(mapping.map { (Node(Self.kebab($0.key.string ?? "")), $0.value) })
        return try Yams.serialize(node: renamed)
    }

    /// The values of the settings that take one of a few words.
    public static let choices: [String: [String]] = [
        "sync": SyncMode.allCases.map(\.rawValue),
        "log-level": Logger.Level.allCases.map(\.rawValue),
        "log-format": LogFormat.allCases.map(\.rawValue),
    ]

    private static func settingName(_ context: DecodingError.Context) -> String {
        context.codingPath.first.map { kebab($0.stringValue) } ?? "a setting"
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type, is UInt32.Type: "a whole number"
        case is Bool.Type: "true or false"
        case is String.Type: "text"
        case is [String].Type: "a list of text"
        default: "a \(type)"
        }
    }

    private static func defaultsNode() throws -> Node.Mapping {
        guard let mapping = try Yams.compose(yaml: try YAMLEncoder().encode(CosidSettings.defaults))?.mapping else {
            preconditionFailure("the default settings encode as a mapping")
        }
        return mapping
    }

    /// `dataDir` -> `data-dir`.
    static func kebab(_ name: String) -> String {
        name.reduce(into: "") { out, character in
            if character.isUppercase { out += "-" + character.lowercased() } else { out.append(character) }
        }
    }

    /// `data-dir` -> `dataDir`.
    static func camel(_ name: String) -> String {
        let parts = name.split(separator: "-")
        return parts.enumerated().map { $0.offset == 0 ? String($0.element) : $0.element.capitalized }.joined()
    }
}

/// A setting that cannot be used, said in one sentence naming it (cosid shows it as a usage error).
public struct SettingsError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// How log lines are written.
public enum LogFormat: String, Codable, CaseIterable, Sendable {
    /// One human-readable line per event.
    case text
    /// One JSON object per line.
    case json
}

