import ArgumentParser
import Foundation
import Logging
import Yams

extension Cosid {
    /// Every setting: its key (the flag's name), how to read it from the config file, and its
    /// effective value.
    private var settings: [(key: String, apply: (inout Cosid, String) throws -> Void, value: String?)] {
        func int<T: FixedWidthInteger>(_ text: String, _ key: String) throws -> T {
            guard let value = T(text) else { throw ValidationError("config: \(key) must be a whole number, not \(text)") }
            return value
        }
        return [
            ("listen", { $0.listen = $1.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }, listen.joined(separator: ",")),
            ("certs-dir", { $0.certsDir = $1 }, certsDir),
            ("ca", { $0.ca = $1 }, ca),
            ("cert", { $0.cert = $1 }, cert),
            ("key", { $0.key = $1 }, key),
            ("data-dir", { $0.dataDir = $1 }, dataDir),
            ("sync", { $0.sync = $1 }, sync),
            ("in-memory", { $0.inMemory = ["true", "yes", "on", "1"].contains($1.lowercased()) }, "\(inMemory)"),
            ("retain-events", { $0.retainEvents = try int($1, "retain-events") }, "\(retainEvents)"),
            ("retain-seconds", { $0.retainSeconds = try int($1, "retain-seconds") }, retainSeconds.map { "\($0)" }),
            ("log-level", { $0.logLevel = $1 }, logLevel),
            ("log-format", { $0.logFormat = $1 }, logFormat),
            ("metrics-listen", { $0.metricsListen = $1 }, metricsListen),
            ("grace-period", { $0.gracePeriod = try int($1, "grace-period") }, "\(gracePeriod)"),
            ("handshake-timeout", { $0.handshakeTimeout = try int($1, "handshake-timeout") }, "\(handshakeTimeout)"),
            ("keepalive", { $0.keepalive = try int($1, "keepalive") }, "\(keepalive)"),
            ("max-frame-size", { $0.maxFrameSize = try int($1, "max-frame-size") }, "\(maxFrameSize)"),
            ("max-connections", { $0.maxConnections = try int($1, "max-connections") }, "\(maxConnections)"),
            ("max-concurrent-streams", { $0.maxConcurrentStreams = try int($1, "max-concurrent-streams") }, "\(maxConcurrentStreams)"),
        ]
    }

    /// Applies the settings of a YAML file that were not given as flags.
    mutating func applyConfigFile(_ path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read the config file \(path)")
        }
        let loaded: Any?
        do { loaded = try Yams.load(yaml: text) } catch { throw ValidationError("the config file \(path) is not valid YAML: \(error)") }
        guard let mapping = loaded as? [String: Any] else {
            if loaded == nil { return }
            throw ValidationError("the config file \(path) must be a mapping of setting: value")
        }
        let known = Dictionary(uniqueKeysWithValues: settings.map { ($0.key, $0.apply) })
        let given = Set(CommandLine.arguments.filter { $0.hasPrefix("--") }.map { String($0.dropFirst(2).split(separator: "=")[0]) })
        for (key, value) in mapping.sorted(by: { $0.key < $1.key }) {
            guard let apply = known[key] else {
                throw ValidationError("the config file \(path) has an unknown setting \"\(key)\" (known: \(settings.map(\.key).joined(separator: ", ")))")
            }
            if given.contains(key) { continue } // flags win
            let text = (value as? [Any]).map { $0.map { "\($0)" }.joined(separator: ",") } ?? "\(value)"
            try apply(&self, text)
        }
    }

    /// The effective configuration as YAML.
    func effectiveConfiguration() -> String {
        settings.compactMap { setting in setting.value.map { "\(setting.key): \($0)\n" } }.joined()
    }
}

/// One JSON object per log line on standard error: time, level, label, message and metadata.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var object: [String: String] = [
            "time": ISO8601DateFormatter().string(from: Date()),
            "level": event.level.rawValue,
            "label": label,
            "message": "\(event.message)",
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { object[key] = "\(value)" }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        FileHandle.standardError.write(data + Data("\n".utf8))
    }
}
