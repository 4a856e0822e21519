import Logging
import NIOConcurrencyHelpers

/// Collects log records, for tests that assert what a component logs.
///
/// ```swift
/// let capture = LogCapture()
/// let logger = capture.logger("cosid.audit")
/// // ...
/// #expect(capture.records.contains { $0.message == "refused" })
/// ```
public final class LogCapture: Sendable {
    /// One logged line.
    public struct Record: Sendable {
        public var label: String
        public var level: Logger.Level
        public var message: String
        public var metadata: [String: String]
    }

    private let stored = NIOLockedValueBox<[Record]>([])

    public init() {}

    /// Everything logged so far, in order.
    public var records: [Record] { stored.withLockedValue { $0 } }

    /// A logger whose records land here (every level).
    public func logger(_ label: String) -> Logger {
        Logger(label: label) { label in Handler(label: label, capture: self) }
    }

    fileprivate func append(_ record: Record) { stored.withLockedValue { $0.append(record) } }

    private struct Handler: LogHandler {
        let label: String
        let capture: LogCapture
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            capture.append(Record(label: label, level: event.level, message: "\(event.message)", metadata: merged.mapValues { "\($0)" }))
        }
    }
}
