import CosiMessages
import CosiRPC
import CosiTLS
import NIOConcurrencyHelpers

/// One machine of a fleet: `host` or `host:port` (port 50000 when not given; an IPv6 address in
/// brackets, `[::1]:50000`). The server's certificate must name `host` (its SAN), as for one
/// ``CosiClient``.
public struct CosiNode: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var host: String
    public var port: Int

    /// The port a node listens on when its address does not say.
    public static let defaultPort = 50000

    public init(host: String, port: Int = CosiNode.defaultPort) {
        self.host = host
        self.port = port
    }

    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`, with the reason when it is none of them.
    public init(parsing text: String) throws {
        let trimmed = String(text.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
        var host = trimmed
        var port = CosiNode.defaultPort
        if trimmed.hasPrefix("[") {
            guard let close = trimmed.firstIndex(of: "]") else { throw CosiNodeError(text, "an IPv6 address must end with ]") }
            host = String(trimmed[trimmed.index(after: trimmed.startIndex)..<close])
            let rest = trimmed[trimmed.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let number = Int(rest.dropFirst()) else { throw CosiNodeError(text, "after ] comes :PORT") }
                port = number
            }
        } else if let colon = trimmed.lastIndex(of: ":") {
            guard trimmed.firstIndex(of: ":") == colon else { throw CosiNodeError(text, "write an IPv6 address in brackets: [::1]:50000") }
            host = String(trimmed[..<colon])
            guard let number = Int(trimmed[trimmed.index(after: colon)...]) else { throw CosiNodeError(text, "the port must be a number") }
            port = number
        }
        guard !host.isEmpty else { throw CosiNodeError(text, "the host is empty") }
        guard (1...65535).contains(port) else { throw CosiNodeError(text, "the port must be 1-65535") }
        self.host = host
        self.port = port
    }

    /// `host:port` (`[v6]:port`), as the node is shown.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public static func < (lhs: CosiNode, rhs: CosiNode) -> Bool { lhs.description < rhs.description }
}

/// A node address that does not parse.
public struct CosiNodeError: Error, CustomStringConvertible, Sendable {
    public var text: String
    public var reason: String
    init(_ text: String, _ reason: String) {
        self.text = text
        self.reason = reason
    }
    public var description: String { "the node \"\(text)\" is not host or host:port: \(reason)" }
}

/// What one node answered in a ``CosiFleet/fanOut(parallel:timeout:failFast:_:)``: its value or
/// its error (an ``RPCError`` for a refused call or an unreachable node).
public struct NodeResult<Value: Sendable>: Sendable {
    public var node: CosiNode
    public var result: Result<Value, any Error>

    public var value: Value? { try? result.get() }
    public var error: (any Error)? {
        if case .failure(let error) = result { return error }
        return nil
    }

    /// The node's error as a status: the ``RPCError`` it is, or UNKNOWN with its description.
    public var status: RPCError? {
        guard let error else { return nil }
        if let error = error as? RPCError { return error }
        if error is CancellationError { return RPCError(code: .cancelled, message: "not run: the fan-out was stopped") }
        return RPCError(code: .unknown, message: "\(error)")
    }
}

/// Many cosid machines from one place: the same call on every node, with per-node results, and
/// one watch merged from every node's.
///
/// ```swift
/// let fleet = CosiFleet(nodes: try ["10.0.0.1", "10.0.0.2:50001"].map(CosiNode.init(parsing:)),
///                       configuration: .development())
/// for answer in await fleet.get(namespace: "network", type: "HostnameStatuses.net.cosi.dev", id: "hostname") {
///     print(answer.node, answer.value?.metadata.version ?? "error: \(answer.error!)")
/// }
/// await fleet.close()
/// ```
///
/// Connections are opened on a node's first call and kept; a dropped one is opened again by the
/// next call (as ``CosiClient`` does). `configuration` gives the certificates and deadlines
/// every node shares; its host and port are replaced by each node's, and the server name each
/// certificate must match is the node's host. Close the fleet with ``close()``.
public final class CosiFleet: Sendable {
    /// The nodes, in the order given (duplicates removed).
    public let nodes: [CosiNode]
    public let configuration: CosiClientConfiguration
    /// One per node; they share one TLS context (the certificates are the same), made on first use.
    private let members: [CosiNode: Member]

    public init(nodes: [CosiNode], configuration: CosiClientConfiguration) {
        var seen = Set<CosiNode>()
        self.nodes = nodes.filter { seen.insert($0).inserted }
        self.configuration = configuration
        var members: [CosiNode: Member] = [:]
        let shared = Member.SharedTLS(configuration: configuration)
        for node in self.nodes {
            var own = configuration
            own.host = node.host
            own.port = node.port
            own.serverName = nil
            own.unixSocketPath = nil
            members[node] = Member(configuration: own, tls: shared)
        }
        self.members = members
    }

    /// The client of `node`, connecting on first use. Concurrent callers share one connection
    /// attempt. After ``close()`` it throws CANCELLED.
    public func client(_ node: CosiNode) async throws -> CosiClient {
        guard let member = members[node] else {
            throw RPCError(code: .invalidArgument, message: "\(node) is not a node of this fleet")
        }
        return try await member.client()
    }

    /// Runs `body` on every node, at most `parallel` at once, and returns each node's result in
    /// the order of ``nodes``. A node that cannot be reached, or whose call fails, is a failed
    /// result and does not stop the others, unless `failFast`: then the first failure cancels
    /// the calls in flight and the nodes not yet started (their results are CANCELLED).
    /// `timeout` bounds each node's connection and body together (DEADLINE_EXCEEDED).
    public func fanOut<Value: Sendable>(
        parallel: Int = 32, timeout: Duration? = nil, failFast: Bool = false,
        _ body: @escaping @Sendable (CosiNode, CosiClient) async throws -> Value
    ) async -> [NodeResult<Value>] {
        await fanOut(nodes: nodes, parallel: parallel, timeout: timeout, failFast: failFast, body)
    }

    /// ``fanOut(parallel:timeout:failFast:_:)`` over some of the nodes.
    public func fanOut<Value: Sendable>(
        nodes selected: [CosiNode], parallel: Int = 32, timeout: Duration? = nil, failFast: Bool = false,
        _ body: @escaping @Sendable (CosiNode, CosiClient) async throws -> Value
    ) async -> [NodeResult<Value>] {
        let width = max(1, parallel)
        var results = [Result<Value, any Error>?](repeating: nil, count: selected.count)
        await withTaskGroup(of: (Int, Result<Value, any Error>).self) { group in
            var next = 0
            var stopped = false
            func start() {
                let index = next
                let node = selected[index]
                next += 1
                group.addTask {
                    (index, await self.run(node, timeout: timeout, body))
                }
            }
            while next < selected.count, next < width { start() }
            while let (index, result) = await group.next() {
                results[index] = result
                if failFast, case .failure = result, !stopped {
                    stopped = true
                    group.cancelAll()
                }
                if !stopped, next < selected.count { start() }
            }
        }
        return selected.enumerated().map { index, node in
            NodeResult(node: node, result: results[index] ?? .failure(RPCError(code: .cancelled, message: Self.stoppedMessage)))
        }
    }

    /// The CANCELLED message of a node that fail-fast stopped.
    static let stoppedMessage = "stopped: another node failed first (fail fast)"

    private func run<Value: Sendable>(
        _ node: CosiNode, timeout: Duration?, _ body: @escaping @Sendable (CosiNode, CosiClient) async throws -> Value
    ) async -> Result<Value, any Error> {
        if Task.isCancelled { return .failure(RPCError(code: .cancelled, message: Self.stoppedMessage)) }
        let work: @Sendable () async throws -> Value = {
            let client = try await self.client(node)
            return try await body(node, client)
        }
        guard let timeout else {
            do { return .success(try await work()) } catch { return .failure(error) }
        }
        // The deadline answers at once even when the work does not heed its cancellation (a
        // connection attempt that waits for its own timeout): the work is left cancelled.
        let task = Task { () -> Result<Value, any Error> in
            do { return .success(try await work()) } catch { return .failure(error) }
        }
        let answer = NIOLockedValueBox<CheckedContinuation<Result<Value, any Error>, Never>?>(nil)
        @Sendable func finish(_ result: Result<Value, any Error>) {
            answer.withLockedValue { continuation in
                continuation?.resume(returning: result)
                continuation = nil
            }
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<Value, any Error>, Never>) in
                answer.withLockedValue { $0 = continuation }
                let timer = Task {
                    do { try await Task.sleep(for: timeout) } catch { return }
                    task.cancel()
                    finish(.failure(RPCError(code: .deadlineExceeded, message: "\(node) did not answer within \(timeout)")))
                }
                Task {
                    let result = await task.value
                    timer.cancel()
                    finish(result)
                }
            }
        } onCancel: {
            task.cancel()
        }
    }

    /// Get on every node.
    public func get(namespace: String, type: String, id: String, parallel: Int = 32, timeout: Duration? = nil) async -> [NodeResult<Resource>] {
        await fanOut(parallel: parallel, timeout: timeout) { _, client in try await client.get(namespace: namespace, type: type, id: id) }
    }

    /// List on every node.
    public func list(
        namespace: String, type: String, labelQueries: [LabelQuery] = [], idQuery: IDQuery? = nil, parallel: Int = 32, timeout: Duration? = nil
    ) async -> [NodeResult<[Resource]>] {
        await fanOut(parallel: parallel, timeout: timeout) { _, client in
            try await client.list(namespace: namespace, type: type, labelQueries: labelQueries, idQuery: idQuery)
        }
    }

    /// Create on every node; each answers with the resource as it stored it.
    public func create(_ resource: Resource, owner: String = "", parallel: Int = 32, timeout: Duration? = nil) async -> [NodeResult<Resource>] {
        await fanOut(parallel: parallel, timeout: timeout) { _, client in try await client.create(resource, owner: owner) }
    }

    /// Update on every node: each node's stored version is read and `change` applied to it, so
    /// nodes at different versions are all updated (a concurrent writer on a node makes that
    /// node's result FAILED_PRECONDITION).
    public func update(
        namespace: String, type: String, id: String, owner: String = "", parallel: Int = 32, timeout: Duration? = nil,
        _ change: @escaping @Sendable (inout Resource) -> Void
    ) async -> [NodeResult<Resource>] {
        await fanOut(parallel: parallel, timeout: timeout) { _, client in
            var resource = try await client.get(namespace: namespace, type: type, id: id)
            change(&resource)
            return try await client.update(resource, owner: owner)
        }
    }

    /// Destroy on every node.
    public func destroy(namespace: String, type: String, id: String, owner: String = "", parallel: Int = 32, timeout: Duration? = nil) async -> [NodeResult<Void>] {
        await fanOut(parallel: parallel, timeout: timeout) { _, client in try await client.destroy(namespace: namespace, type: type, id: id, owner: owner) }
    }

    /// One watch over every node: the events of `request` on each node, tagged with the node, as
    /// they arrive. Each node's watch resumes from its own last bookmark when its connection
    /// drops or its cosid restarts (no gap, no duplicate), and a node that cannot be reached is
    /// tried again with backoff; ``FleetWatch/state(of:)`` says how each node stands. See
    /// ``FleetWatch``.
    public func watch(_ request: WatchRequest, maximumBackoff: Duration = .seconds(5), bufferSize: Int = 1024) -> FleetWatch {
        FleetWatch(fleet: self, request: request, maximumBackoff: maximumBackoff, bufferSize: bufferSize)
    }

    /// Closes every open connection; the fleet makes no new ones (calls fail with CANCELLED,
    /// a ``FleetWatch`` of it ends). The clients it handed out are closed too, and do not
    /// reconnect.
    public func close() async {
        await withTaskGroup(of: Void.self) { group in
            for member in members.values { group.addTask { await member.close() } }
        }
    }

    /// One node's client, connected on first use.
    final class Member: Sendable {
        let configuration: CosiClientConfiguration
        let tls: SharedTLS
        private let state = NIOLockedValueBox<State>(.idle)

        /// The fleet's one TLS context, made on first use (a bad certificate file is every
        /// node's error, and is tried again on the next call).
        final class SharedTLS: Sendable {
            let configuration: CosiClientConfiguration
            private let context = NIOLockedValueBox<TLSContext?>(nil)
            init(configuration: CosiClientConfiguration) { self.configuration = configuration }

            func get() throws -> TLSContext? {
                guard configuration.unixSocketPath == nil else { return nil }
                return try context.withLockedValue { context in
                    if let context { return context }
                    let made = try TLSContext(role: .client, configuration: configuration.tls)
                    context = made
                    return made
                }
            }
        }

        enum State {
            case idle
            case connecting(Task<CosiClient, any Error>)
            case connected(CosiClient)
            /// The fleet was closed: no new connection is made.
            case closed
        }

        init(configuration: CosiClientConfiguration, tls: SharedTLS) {
            self.configuration = configuration
            self.tls = tls
        }

        func client() async throws -> CosiClient {
            enum Found { case client(CosiClient), attempt(Task<CosiClient, any Error>) }
            let found: Found? = state.withLockedValue { state in
                switch state {
                case .closed: return nil
                case .connected(let client): return .client(client)
                case .connecting(let task): return .attempt(task)
                case .idle:
                    let configuration = self.configuration
                    let tls = self.tls
                    let task = Task { try await CosiClient.connect(configuration, tls: try tls.get()) }
                    state = .connecting(task)
                    return .attempt(task)
                }
            }
            guard let found else { throw RPCError(code: .cancelled, message: "the fleet was closed") }
            let task: Task<CosiClient, any Error>
            switch found {
            case .client(let client): return client
            case .attempt(let attempt): task = attempt
            }
            do {
                let client = try await task.value
                let kept = state.withLockedValue { state -> Bool in
                    if case .connecting(let attempt) = state, attempt == task {
                        state = .connected(client)
                        return true
                    }
                    if case .connected(let current) = state { return current === client }
                    return false
                }
                // Closed meanwhile: this connection is nobody's.
                guard kept else {
                    await client.close()
                    throw RPCError(code: .cancelled, message: "the fleet was closed")
                }
                return client
            } catch let error as RPCError where error.code == .cancelled && error.message == "the fleet was closed" {
                throw error
            } catch {
                state.withLockedValue { state in
                    if case .connecting(let attempt) = state, attempt == task { state = .idle }
                }
                throw error
            }
        }

        func close() async {
            let current = state.withLockedValue { state -> State in
                defer { state = .closed }
                return state
            }
            switch current {
            case .connected(let client): await client.close()
            case .connecting(let task):
                task.cancel()
                await (try? task.value)?.close()
            case .idle, .closed: break
            }
        }
    }
}
