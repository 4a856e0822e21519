import CosiMessages
import Logging
import NIOConcurrencyHelpers

/// How the keeper finds the error a resource's status reports (revert on error). The engine
/// knows no controllers: the daemon says where the built-in controllers write their statuses.
public struct ChangeKeeperConfiguration: Sendable {
    /// The error the status of `spec` reports for the spec's version or a later one, nil when
    /// none (or when no status reports on the spec's type). `get` reads a resource.
    public var statusError: @Sendable (_ spec: Resource, _ get: (ResourceAddress) -> Resource?) -> String?
    /// The kind of the statuses of a spec kind, to watch while a try with revert on error is pending.
    public var statusKind: @Sendable (ResourceKind) -> ResourceKind?

    public init(
        statusError: @escaping @Sendable (Resource, (ResourceAddress) -> Resource?) -> String? = { _, _ in nil },
        statusKind: @escaping @Sendable (ResourceKind) -> ResourceKind? = { _ in nil }
    ) {
        self.statusError = statusError
        self.statusKind = statusKind
    }
}

/// Keeps the changes being tried: reverts each at its deadline unless confirmed, or at once when
/// a status of one of its resources reports an error (revert on error), with no client
/// connected; at start it finds the pending tries in the state (they are durable) and keeps their
/// original deadlines. It also destroys what a revert tore down once its finalizers are gone.
public final class ChangeKeeper: Sendable {
    public let engine: StateEngine
    let configuration: ChangeKeeperConfiguration
    let logger: Logger
    private let wakeup = Wakeup()

    public init(engine: StateEngine, configuration: ChangeKeeperConfiguration = .init(), logger: Logger) {
        self.engine = engine
        self.configuration = configuration
        self.logger = logger
    }

    /// Applies a change (see ``StateEngine/applyChange(_:)``); a try is then kept by ``run()``.
    public func apply(_ request: ChangeRequest) async throws -> ChangeOutcome {
        let outcome = try await engine.applyChange(request)
        if request.tryMilliseconds != nil { wakeup.fire() }
        return outcome
    }

    /// Confirms a change being tried: it is kept.
    public func confirm(_ id: String, author: String) async throws -> Resource {
        let change = try await engine.confirmChange(id, author: author)
        wakeup.fire()
        return change
    }

    /// Reverts a change being tried at once.
    public func revert(_ id: String, author: String) async throws -> Resource {
        let change = try await engine.revertChange(id, author: author, reason: "reverted by \(author)")
        wakeup.fire() // what the revert tore down is destroyed once its finalizers go
        return change
    }

    /// Keeps the tries until the task is cancelled.
    public func run() async {
        let changes = ResourceKind(namespace: MetaNamespace.namespace, type: MetaNamespace.changesType)
        await withDiscardingTaskGroup { group in
            var watched = Set<ResourceKind>()
            var destroying = Set<ResourceAddress>()
            // Every change of a watched kind (statuses a try reverts on) wakes the keeper, which
            // then looks at everything; changes themselves wake it through apply and confirm.
            func watch(_ kind: ResourceKind) async {
                guard !watched.contains(kind) else { return }
                guard let stream = try? await engine.watch(WatchRequest(namespace: kind.namespace, type: kind.type, apiVersion: 1)) else { return }
                watched.insert(kind)
                let wakeup = self.wakeup
                group.addTask {
                    do { for try await _ in stream { wakeup.fire() } } catch {}
                }
            }
            var lastPrune = ContinuousClock.now - .seconds(3600)
            while !Task.isCancelled {
                var next: Int64?
                // A revert changes what there is to do (what it tore down waits to be destroyed):
                // look again at once instead of waiting.
                var acted = false
                let now = wallClockMillis()
                // Only the records with work left are decoded: tries, and reverts waiting to destroy.
                let all = (try? engine.list(changes)) ?? []
                let records = all.compactMap { resource -> (String, ChangeRecord)? in
                    let labels = resource.metadata.labels
                    guard labels["cosi.dev/phase"] == ChangeRecord.Phase.trying.rawValue || labels["cosi.dev/waiting"] != nil else { return nil }
                    return (try? ChangeRecord(resource)).map { (resource.metadata.id, $0) }
                }
                for (id, record) in records {
                    switch record.phase {
                    case .trying:
                        guard let deadline = record.deadlineMillis else { continue }
                        if deadline <= now {
                            await revert(id, reason: "not confirmed by its deadline \(record.deadline ?? "")")
                            acted = true
                            continue
                        }
                        next = min(next ?? deadline, deadline)
                        guard record.revertOnError == true else { continue }
                        for entry in record.written {
                            if let kind = configuration.statusKind(entry.address.kind) { await watch(kind) }
                        }
                        // Looked at after the watches are registered: an error reported meanwhile is seen.
                        if let (entry, error) = statusError(record) {
                            await revert(id, reason: "the status of \(entry.address) reports an error: \(error)")
                            acted = true
                        }
                    case .reverted:
                        for text in record.tearingDown ?? [] {
                            guard let address = record.written.first(where: { $0.address.description == text })?.address,
                                  !destroying.contains(address), let resource = try? engine.get(address),
                                  resource.metadata.phase == Phase.tearingDown
                            else { continue }
                            destroying.insert(address)
                            let engine = self.engine, logger = self.logger
                            group.addTask {
                                do {
                                    try await engine.teardownAndDestroy(address, owner: resource.metadata.owner, author: "cosid")
                                } catch {
                                    if !Task.isCancelled { logger.warning("a reverted change's resource was not destroyed", metadata: ["resource": "\(address)", "error": "\(error)"]) }
                                }
                            }
                        }
                    case .applied, .confirmed:
                        continue
                    }
                }
                if ContinuousClock.now - lastPrune > .seconds(60) {
                    lastPrune = .now
                    await prune(all)
                }
                if acted { continue }
                let wait: Duration? = next.map { .milliseconds(max(0, $0 - wallClockMillis())) }
                await wakeup.wait(timeout: wait)
            }
            group.cancelAll()
        }
    }

    /// The first written resource of a try whose status reports an error.
    private func statusError(_ record: ChangeRecord) -> (ChangeRecord.Entry, String)? {
        let engine = self.engine
        for entry in record.written {
            guard let spec = try? engine.get(entry.address) else { continue }
            if let error = configuration.statusError(spec, { try? engine.get($0) }) { return (entry, error) }
        }
        return nil
    }

    private func revert(_ id: String, reason: String) async {
        do {
            _ = try await engine.revertChange(id, author: "cosid", reason: reason)
            logger.notice("change reverted", metadata: ["change": "\(id)", "reason": "\(reason)"])
        } catch let error as StateError where error.code == .changeEnded {
            return // confirmed or reverted meanwhile
        } catch {
            logger.error("reverting a change failed; trying again in 1 s", metadata: ["change": "\(id)", "error": "\(error)"])
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// Drops Changes whose events the log no longer holds (changes.md: kept at least as long as
    /// their events), never one being tried.
    private func prune(_ changes: [Resource]) async {
        let oldest = engine.storage.oldestRetainedRevision
        for change in changes where change.metadata.labels["cosi.dev/phase"] != ChangeRecord.Phase.trying.rawValue {
            guard let last = change.metadata.labels["cosi.dev/last-revision"].flatMap(UInt64.init), last < oldest else { continue }
            try? await engine.dropChange(change.metadata.id)
        }
    }
}

/// One waiter woken by `fire()` (a fire with no waiter is kept for the next wait) or a timeout.
final class Wakeup: Sendable {
    private let state = NIOLockedValueBox<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func fire() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    func wait(timeout: Duration?) async {
        await withTaskCancellationHandler {
            await waitOrTimeout(timeout)
        } onCancel: {
            fire()
        }
    }

    private func waitOrTimeout(_ timeout: Duration?) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForFire() }
            if let timeout {
                group.addTask { try? await Task.sleep(for: timeout) }
            }
            await group.next()
            group.cancelAll()
            self.fire() // ends the waiter if the timeout came first
            await group.waitForAll()
            self.state.withLockedValue { $0.pending = false }
        }
    }

    private func waitForFire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { state -> Bool in
                if state.pending {
                    state.pending = false
                    return true
                }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }
}
