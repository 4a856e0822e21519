import NIOConcurrencyHelpers

/// What a controller remembers of the corrections it made, for the flapping guard of
/// controllers.md: an object put back more than ``flips`` times within ``window`` is left alone
/// (reported, not written) until its spec changes.
public final class DriftLedger: Sendable {
    /// controllers.md's bound: more than 5 times in 10 s.
    public static let flips = 5
    public static let window: Duration = .seconds(10)
    public let flips: Int
    public let window: Duration

    private struct Entry {
        var corrections: [ContinuousClock.Instant] = []
        /// The spec version the object was left alone at.
        var leftAloneAt: String?
    }

    private let entries = NIOLockedValueBox([String: Entry]())

    /// A ledger with another bound (a benchmark timing many corrections in a row turns it off).
    public init(flips: Int = DriftLedger.flips, window: Duration = DriftLedger.window) {
        self.flips = flips
        self.window = window
    }

    /// The specs (id, version) that are left alone now. One whose spec changed since is taken up
    /// again, its count cleared.
    public func leftAlone(_ specs: [(id: String, version: String)]) -> Set<String> {
        entries.withLockedValue { entries in
            var alone: Set<String> = []
            for spec in specs {
                guard let at = entries[spec.id]?.leftAloneAt else { continue }
                if at == spec.version {
                    alone.insert(spec.id)
                } else {
                    entries[spec.id] = nil
                }
            }
            return alone
        }
    }

    /// Records a correction of the object of spec `id` at `version`; returns true when it has now
    /// flipped back more than it may and is left alone from now on.
    public func corrected(_ id: String, version: String, at now: ContinuousClock.Instant) -> Bool {
        entries.withLockedValue { entries in
            var entry = entries[id] ?? Entry()
            entry.corrections = entry.corrections.filter { now - $0 < window } + [now]
            if entry.corrections.count >= flips { entry.leftAloneAt = version }
            entries[id] = entry
            return entry.leftAloneAt != nil
        }
    }

    /// Forgets specs that are gone.
    public func keep(only ids: Set<String>) {
        entries.withLockedValue { entries in entries = entries.filter { ids.contains($0.key) } }
    }
}

/// One pending wake-up of a controller, re-armed after each reconcile: the next retry of a failed
/// attempt, or the next resync. Arming cancels the previous one; ``stop()`` cancels the last and
/// waits for it.
final class ReconcileTimer: Sendable {
    private let task = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let sleep: @Sendable (Duration) async throws -> Void

    init(sleep: @escaping @Sendable (Duration) async throws -> Void) {
        self.sleep = sleep
    }

    /// Runs `fire` after `delay` (nothing when nil), instead of what was armed before.
    func arm(after delay: Duration?, _ fire: @escaping @Sendable () async -> Void) {
        let sleep = self.sleep
        let new = delay.map { delay in
            Task {
                do { try await sleep(delay) } catch { return }
                await fire()
            }
        }
        let old = task.withLockedValue { current in
            defer { current = new }
            return current
        }
        old?.cancel()
    }

    func stop() async {
        let last = task.withLockedValue { current in
            defer { current = nil }
            return current
        }
        last?.cancel()
        await last?.value
    }
}
