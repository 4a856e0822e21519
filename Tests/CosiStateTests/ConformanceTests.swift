import CosiState
import CosiTesting
import Testing

/// Where the conformance suite runs.
enum Backend: String, CaseIterable, CustomTestStringConvertible {
    case memory
    case sqlite
    case wire

    var testDescription: String { rawValue }

    func make() async throws -> any StateBackend {
        switch self {
        case .memory:
            return try StateBackends.memory()
        case .sqlite:
            return try StateBackends.sqlite()
        case .wire:
            return try await StateBackends.wire(engine: StateBackends.memory().engine, pki: TestPKI())
        }
    }
}

/// Runs one conformance check against a fresh backend.
func conform(_ backend: Backend, _ check: (any StateBackend) async throws -> Void) async throws {
    let b = try await backend.make()
    do {
        try await check(b)
    } catch {
        await b.close()
        throw error
    }
    await b.close()
}

@Suite("State conformance", .timeLimit(.minutes(1)))
struct ConformanceTests {
    @Test(arguments: Backend.allCases) func createGetListDestroy(_ b: Backend) async throws { try await conform(b, StateConformance.createGetListDestroy) }
    @Test(arguments: Backend.allCases) func owners(_ b: Backend) async throws { try await conform(b, StateConformance.owners) }
    @Test(arguments: Backend.allCases) func updateConflicts(_ b: Backend) async throws { try await conform(b, StateConformance.updateConflicts) }
    @Test(arguments: Backend.allCases) func teardownReadiness(_ b: Backend) async throws { try await conform(b, StateConformance.teardownReadiness) }
    @Test(arguments: Backend.allCases) func concurrentFinalizersConverge(_ b: Backend) async throws { try await conform(b, StateConformance.concurrentFinalizersConverge) }
    @Test(arguments: Backend.allCases) func teardownAndDestroy(_ b: Backend) async throws { try await conform(b, StateConformance.teardownAndDestroyWaitsForFinalizers) }
    @Test(arguments: Backend.allCases) func concurrentDestroys(_ b: Backend) async throws { try await conform(b, StateConformance.concurrentDestroys) }
    @Test(arguments: Backend.allCases) func labelWorkedExample(_ b: Backend) async throws { try await conform(b, StateConformance.labelWorkedExample) }
    @Test(arguments: Backend.allCases) func idRegexp(_ b: Backend) async throws { try await conform(b, StateConformance.idRegexp) }
    @Test(arguments: Backend.allCases) func invalidRequests(_ b: Backend) async throws { try await conform(b, StateConformance.invalidRequests) }
    @Test(arguments: Backend.allCases) func singleResourceWatch(_ b: Backend) async throws { try await conform(b, StateConformance.singleResourceWatch) }
    @Test(arguments: Backend.allCases) func kindWatchWithBootstrap(_ b: Backend) async throws { try await conform(b, StateConformance.kindWatchWithBootstrap) }
    @Test(arguments: Backend.allCases) func bootstrapBookmark(_ b: Backend) async throws { try await conform(b, StateConformance.bootstrapBookmark) }
    @Test(arguments: Backend.allCases) func labelWatchFlips(_ b: Backend) async throws { try await conform(b, StateConformance.labelWatchFlips) }
    @Test(arguments: Backend.allCases) func aggregatedWatch(_ b: Backend) async throws { try await conform(b, StateConformance.aggregatedWatch) }
    @Test(arguments: Backend.allCases) func tailEvents(_ b: Backend) async throws { try await conform(b, StateConformance.tailEvents) }
    @Test(arguments: Backend.allCases) func resumeFromEveryBookmark(_ b: Backend) async throws { try await conform(b, StateConformance.resumeFromEveryBookmark) }
}
