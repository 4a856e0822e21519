import NIOConcurrencyHelpers

/// A clock that moves only when told: for timers under test (the engine's storage retry) without
/// waiting for real time to pass.
public final class ManualClock: Sendable {
    private let offset = NIOLockedValueBox(Duration.zero)
    private let origin = ContinuousClock.now

    public init() {}

    /// The clock's current instant.
    public func now() -> ContinuousClock.Instant { origin + offset.withLockedValue { $0 } }

    /// Moves the clock forward.
    public func advance(by duration: Duration) { offset.withLockedValue { $0 += duration } }
}
