import CosiMessages
import Foundation
import Yams

/// The spec of a `Changes.meta.cosi.dev` resource (changes.md): who made the change, when, each
/// resource with its versions before and after, the try's deadline and the change's phase. cosid
/// writes it as YAML in the same commit as the change, and reads it back at start (pending
/// tries survive a restart).
public struct ChangeRecord: Codable, Sendable, Equatable {
    public enum Phase: String, Codable, Sendable {
        /// Written, no try.
        case applied
        /// Written, reverted at `deadline` unless confirmed.
        case trying
        /// A try confirmed before its deadline: kept.
        case confirmed
        /// Put back as it was (`reason` says why).
        case reverted
    }

    /// One resource of the change.
    public struct Entry: Codable, Sendable, Equatable {
        public var namespace: String
        public var type: String
        public var id: String
        /// "create", "update" or "unchanged".
        public var action: String
        /// The version before the change ("" when the change created it).
        public var versionBefore: String
        /// The version the change wrote (for "unchanged": the version as it was).
        public var versionAfter: String

        public var address: ResourceAddress { ResourceAddress(namespace: namespace, type: type, id: id) }
    }

    public var phase: Phase
    /// The certificate identity of the caller that made the change.
    public var identity: String
    /// When it was committed (RFC 3339, UTC).
    public var time: String
    /// For a try: when cosid reverts it unless confirmed (RFC 3339, UTC).
    public var deadline: String?
    /// The deadline in milliseconds since 1970 (what cosid compares).
    public var deadlineMillis: Int64?
    /// For a try: a status of a resource of the change that reports an error reverts it.
    public var revertOnError: Bool?
    /// When it was confirmed or reverted, and by whom.
    public var ended: String?
    public var endedBy: String?
    /// Why it was reverted.
    public var reason: String?
    /// The revision of the change's first event: its events are this and the next ones, one per
    /// created or updated resource, in the order of `resources`.
    public var revision: UInt64
    public var resources: [Entry]
    /// Resources the revert tore down (they were created by the change) and destroys once their
    /// finalizers are gone.
    public var tearingDown: [String]?

    /// The created and updated entries, in order (one event each).
    public var written: [Entry] { resources.filter { $0.action != "unchanged" } }

    /// The record as YAML, written by hand (a change may hold thousands of resources; this is on
    /// the committer thread). Strings are double-quoted with JSON's escapes, which YAML reads.
    func yaml() -> String {
        func quoted(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\t": out += "\\t"
                case "\r": out += "\\r"
                default:
                    if scalar.value < 0x20 || scalar.value == 0x7F {
                        out += String(format: "\\u%04X", scalar.value)
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
            return out + "\""
        }
        var out = "phase: \(phase.rawValue)\nidentity: \(quoted(identity))\ntime: \(quoted(time))\n"
        if let deadline { out += "deadline: \(quoted(deadline))\n" }
        if let deadlineMillis { out += "deadlineMillis: \(deadlineMillis)\n" }
        if let revertOnError { out += "revertOnError: \(revertOnError)\n" }
        if let ended { out += "ended: \(quoted(ended))\n" }
        if let endedBy { out += "endedBy: \(quoted(endedBy))\n" }
        if let reason { out += "reason: \(quoted(reason))\n" }
        out += "revision: \(revision)\nresources:\n"
        for entry in resources {
            out += "- namespace: \(quoted(entry.namespace))\n  type: \(quoted(entry.type))\n  id: \(quoted(entry.id))\n"
            out += "  action: \(entry.action)\n  versionBefore: \(quoted(entry.versionBefore))\n  versionAfter: \(quoted(entry.versionAfter))\n"
        }
        if let tearingDown {
            out += "tearingDown:\n" + tearingDown.map { "- \(quoted($0))\n" }.joined()
        }
        return out
    }

    /// Labels of the Changes resource, so the keeper reads only the records it has work for:
    /// the phase, whether a revert waits to destroy, and the revision of the change's last event.
    var labels: [String: String] {
        var labels = ["cosi.dev/phase": phase.rawValue, "cosi.dev/last-revision": String(revision + UInt64(max(written.count, 1)) - 1)]
        if tearingDown != nil { labels["cosi.dev/waiting"] = "destroy" }
        return labels
    }

    /// The record of a Changes resource.
    public init(_ resource: Resource) throws(StateError) {
        do {
            self = try YAMLDecoder().decode(ChangeRecord.self, from: resource.spec.yamlSpec)
        } catch {
            throw StateError(.storageFailure, "the change \(resource.metadata.id) does not read (\(error)): its spec was not written by this cosid")
        }
    }

    init(phase: Phase, identity: String, time: String, revision: UInt64, resources: [Entry]) {
        self.phase = phase
        self.identity = identity
        self.time = time
        self.revision = revision
        self.resources = resources
    }

    /// The address of a change's resource.
    public static func address(_ id: String) -> ResourceAddress {
        ResourceAddress(namespace: MetaNamespace.namespace, type: MetaNamespace.changesType, id: id)
    }

    static func rfc3339(millis: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }
}

/// The current time in milliseconds since 1970.
func wallClockMillis() -> Int64 {
    Int64((Date().timeIntervalSince1970 * 1000).rounded())
}
