import NIOCore

/// A budget of events that refills over time (a token bucket): `burst` events at once, then
/// `perSecond` on average. The server counts what a peer may send without doing useful work
/// (SETTINGS after the first, frames of unknown type) against one each, and ends the connection
/// with ENHANCE_YOUR_CALM when a budget runs out.
struct RateGuard: Sendable {
    let burst: Double
    let perSecond: Double
    private var tokens: Double
    private var last: NIODeadline?

    init(burst: Int, perSecond: Double) {
        self.burst = Double(burst)
        self.perSecond = perSecond
        self.tokens = Double(burst)
    }

    /// Spends one event; false when the budget is exhausted.
    mutating func allow(now: NIODeadline) -> Bool {
        if let last, now > last {
            tokens = min(burst, tokens + Double((now - last).nanoseconds) / 1e9 * perSecond)
        }
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
