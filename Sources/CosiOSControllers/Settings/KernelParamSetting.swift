import CosiMessages

/// `KernelParamSpecs.runtime.cosi.dev` (id = the sysctl key, {value}) -> `<root>/proc/sys/<key
/// with dots as slashes>`, reported in `KernelParamStatuses.runtime.cosi.dev` {value} read back.
/// The value found before the first write is kept in the status (annotation
/// `cosi.dev/original-value`) and written back when the spec is destroyed. A parameter whose file
/// does not exist, or cannot be written, is reported; nothing is created under `proc/sys`.
public struct KernelParamSetting: MachineSetting {
    public let name = "kernel-params"
    public let namespace = "runtime"
    public let specType = "KernelParamSpecs.runtime.cosi.dev"
    public let statusType = "KernelParamStatuses.runtime.cosi.dev"
    public static let originalAnnotation = "cosi.dev/original-value"
    public var specColumns: [(String, String)] { [("Value", "{.value}")] }
    public var statusColumns: [(String, String)] { [("Value", "{.value}"), ("Error", "{.error}")] }
    public var specSchema: SpecSchema { SpecSchema([.text("value", required: true)]) }
    public var aliases: (spec: [String], status: [String]) { (["kernelparamspec", "kpsp"], ["kernelparamstatus", "kernelparams", "kpst"]) }

    /// procfs gives no events: checked every resync interval.
    public var resyncs: Bool { true }

    public init() {}

    /// `net.ipv4.ip_forward` -> `proc/sys/net/ipv4/ip_forward`; nil for a key that is not one.
    static func path(_ key: String) -> String? {
        let parts = key.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") } }) else { return nil }
        return "proc/sys/" + parts.joined(separator: "/")
    }

    public func apply(running: [SettingSpec], releasing: [SettingSpec], statuses: [String: Resource], root: MachineRoot, leaveAlone: Set<String>) -> [String: StatusReport] {
        // Going: restore the value found before the first write.
        for spec in releasing {
            guard let path = Self.path(spec.id), let original = statuses[spec.id]?.metadata.annotations[Self.originalAnnotation] else { continue }
            try? root.writeInPlace(path, original + "\n")
        }
        var reports: [String: StatusReport] = [:]
        for spec in running {
            let original = statuses[spec.id]?.metadata.annotations[Self.originalAnnotation]
            guard let path = Self.path(spec.id) else {
                reports[spec.id] = StatusReport(fields: [("value", .scalar(""))], error: "\"\(spec.id)\" is not a sysctl key (words of letters, digits, _ and -, separated by dots)")
                continue
            }
            do {
                guard let value = spec.string("value") else { throw MachineError(path, message: "value is missing") }
                guard let before = try root.read(path) else { throw MachineError(root.resolve(path), message: "\(root.resolve(path)): no such kernel parameter") }
                let remembered = original ?? before.words
                var replaced: String?
                if before.words != value.words, !leaveAlone.contains(spec.id) {
                    try root.writeInPlace(path, value + "\n")
                    replaced = before.words
                }
                let readBack = try root.read(path)?.words ?? ""
                reports[spec.id] = StatusReport(fields: [("value", .scalar(readBack))], annotations: [Self.originalAnnotation: remembered], replaced: replaced)
            } catch {
                let current = (try? root.read(path))??.words ?? ""
                reports[spec.id] = StatusReport(fields: [("value", .scalar(current))], error: "\(error)", annotations: original.map { [Self.originalAnnotation: $0] } ?? [:])
            }
        }
        return reports
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
