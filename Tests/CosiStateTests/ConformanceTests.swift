import CosiState
import CosiTesting
import Testing

/// Where the conformance suite runs.
enum Backend: String, CaseIterable, CustomTestStringConvertible {
    case memory
    case sqlite
    case wire

    var testDescription: String { rawValue }

    /// Runs `body` against a fresh backend of this kind, and closes it afterwards.
    func with(_ body: (any StateBackend) async throws -> Void) async throws {
        let engineBackend: EngineBackend
        switch self {
        case .memory:
            engineBackend = try StateBackends.memory()
        case .sqlite:
            engineBackend = try StateBackends.sqlite()
        case .wire:
            // The server's scope ends with the engine shut down.
            try await StateBackends.withWire(engine: StateBackends.memory().engine, pki: TestPKI(), body)
            return
        }
        do {
            try await body(engineBackend)
        } catch {
            await engineBackend.close()
            throw error
        }
        await engineBackend.close()
    }
}

/// Runs one conformance check against a fresh backend.
func conform(_ backend: Backend, _ check: (any StateBackend) async throws -> Void) async throws {
    try await backend.with(check)
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
