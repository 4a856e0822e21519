import CosiClient
import CosiMessages
import CosiRPC
import CosiServer
import CosiState
import CosiTesting
import Logging
import NIOCore
import Testing

@Suite("Access control", .timeLimit(.minutes(2)))
struct AccessControlTests {
    enum Who: String, CaseIterable, CustomTestStringConvertible {
        case admin, `operator`, reader, controller, none, unknown
        var testDescription: String { rawValue }
        var roles: [String] {
            switch self {
            case .admin: ["os:admin"]
            case .operator: ["os:operator"]
            case .reader: ["os:reader"]
            case .controller: ["os:controller"]
            case .none: []
            case .unknown: ["os:superuser", "staff"]
            }
        }
    }

    /// A server with one ordinary resource, one in `meta`, and a sensitive type.
    static func withServer(_ body: (Int, TestPKI, StateEngine) async throws -> Void) async throws {
        let pki = try TestPKI()
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        _ = try await engine.create(StateConformance.resource("Plain.test.dev", "p"), owner: "")
        let sensitive = try MetaNamespace.definition(Meta.ResourceDefinitionSpec(resourceType: "Secrets.test.dev", sensitivity: .sensitive))
        _ = try await engine.create(sensitive, owner: "")
        _ = try await engine.create(StateConformance.resource("Secrets.test.dev", "s"), owner: "")
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = CosiServer(configuration: RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.serverContext()), engine: engine, logger: logger)
        let address = try await server.start()
        defer { Task { await server.rpc.close() } }
        try await body(address.port!, pki, engine)
    }

    static func client(_ who: Who, _ pki: TestPKI, _ port: Int) async throws -> CosiClient {
        try await CosiClient.connect(CosiClientConfiguration(host: "127.0.0.1", port: port, tls: try pki.client(name: who.rawValue, roles: who.roles)))
    }

    /// Runs `call`; true when allowed (any outcome but PERMISSION_DENIED).
    static func allowed(_ call: () async throws -> Void) async throws -> Bool {
        do {
            try await call()
            return true
        } catch let error as RPCError where error.code == .permissionDenied {
            #expect(error.message.contains("os:"), "the refusal names the role needed: \(error.message)")
            return false
        } catch is RPCError {
            return true
        }
    }

    static func watchAllowed(_ client: CosiClient, _ namespace: String, _ type: String) async throws -> Bool {
        try await allowed {
            var responses = client.watchCall(WatchRequest(namespace: namespace, type: type)).makeAsyncIterator()
            _ = try await responses.next()
        }
    }

    @Test(arguments: Who.allCases)
    func everyStateMethodByRole(_ who: Who) async throws {
        try await Self.withServer { port, pki, _ in
            let client = try await Self.client(who, pki, port)
            defer { Task { await client.close() } }
            let ns = "default", type = "Plain.test.dev"
            let reads = [
                try await Self.allowed { _ = try await client.get(namespace: ns, type: type, id: "p") },
                try await Self.allowed { _ = try await client.list(namespace: ns, type: type) },
                try await Self.watchAllowed(client, ns, type),
            ]
            let writes = [
                try await Self.allowed { _ = try await client.create(StateConformance.resource(type, "new-\(who)"), owner: "") },
                try await Self.allowed {
                    var p = try await client.get(namespace: ns, type: type, id: "p")
                    p.metadata.labels = ["by": who.rawValue]
                    _ = try await client.update(p, owner: "")
                },
                try await Self.allowed { _ = try await client.teardown(namespace: ns, type: type, id: "missing-\(who)") },
                try await Self.allowed { try await client.destroy(namespace: ns, type: type, id: "missing-\(who)") },
                try await Self.allowed { try await client.teardownAndDestroy(namespace: ns, type: type, id: "missing-\(who)", timeout: .seconds(2)) },
            ]
            let mayRead = [.admin, .operator, .reader].contains(who)
            let mayWrite = [.admin, .operator].contains(who)
            #expect(reads == Array(repeating: mayRead, count: 3), "\(who) reads: \(reads)")
            // The Update check reads first; a role that cannot read cannot update either.
            #expect(writes == Array(repeating: mayWrite, count: 5), "\(who) writes: \(writes)")
            // Info is for everyone.
            let info = try await client.info()
            #expect(info.identity == who.rawValue)
        }
    }

    @Test(arguments: Who.allCases)
    func metaAndSensitiveTypes(_ who: Who) async throws {
        try await Self.withServer { port, pki, _ in
            let client = try await Self.client(who, pki, port)
            defer { Task { await client.close() } }
            let metaRead = try await Self.allowed { _ = try await client.list(namespace: "meta", type: MetaNamespace.resourceDefinitionType) }
            let metaWrite = try await Self.allowed {
                _ = try await client.create(MetaNamespace.definition(Meta.ResourceDefinitionSpec(resourceType: "\(who.rawValue.capitalized)Things.test.dev")), owner: "")
            }
            let sensitiveGet = try await Self.allowed { _ = try await client.get(namespace: "default", type: "Secrets.test.dev", id: "s") }
            let sensitiveWatch = try await Self.watchAllowed(client, "default", "Secrets.test.dev")
            #expect(metaRead == [.admin, .operator, .reader].contains(who))
            #expect(metaWrite == (who == .admin))
            #expect(sensitiveGet == (who == .admin))
            #expect(sensitiveWatch == (who == .admin), "a non-admin's watch on a sensitive kind is refused as a whole")
        }
    }

    @Test func policyTable() {
        let policy = AccessPolicy(isSensitive: { $0 == "Secrets.test.dev" }, audit: Logger(label: "test"))
        let read = AccessPolicy.Operation.stateRead(namespace: "default", type: "Plain.test.dev")
        let write = AccessPolicy.Operation.stateWrite(namespace: "default", type: "Plain.test.dev")
        let metaWrite = AccessPolicy.Operation.stateWrite(namespace: "meta", type: MetaNamespace.namespaceType)
        let sensitiveRead = AccessPolicy.Operation.stateRead(namespace: "default", type: "Secrets.test.dev")
        for (roles, operation, allowed) in [
            ([Role.admin], sensitiveRead, true),
            ([.operator], sensitiveRead, false),
            ([.operator], metaWrite, false),
            ([.operator], write, true),
            ([.reader], write, false),
            ([.reader], read, true),
            ([.reader, .operator], write, true),
            ([.controller], read, false),
            ([.controller], .controller, true),
            ([.reader], .controller, false),
            ([], .info, true),
            ([], read, false),
        ] as [([Role], AccessPolicy.Operation, Bool)] {
            #expect((policy.refusal(operation, roles: Set(roles)) == nil) == allowed, "\(roles) \(operation)")
        }
    }
}
