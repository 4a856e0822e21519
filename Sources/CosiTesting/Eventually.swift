/// Waits until `condition` holds, polling every 10 ms: how tests wait for observable state instead
/// of sleeping. Throws a ``ConformanceFailure`` naming `what` after `timeout`.
public func eventually(_ what: String, timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws {
    let clock = ContinuousClock()
    let end = clock.now + timeout
    while try await !condition() {
        guard clock.now < end else { throw ConformanceFailure("not within \(timeout): \(what)") }
        try await Task.sleep(for: .milliseconds(10))
    }
}
