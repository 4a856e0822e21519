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

    /// A server with one ordinary resource, one in `meta`, and a sensitive type; its audit log
    /// is captured.
    static func withServer(_ body: (Int, TestPKI, LogCapture) async throws -> Void) async throws {
        let pki = try TestPKI()
        let engine = try StateBackends.memory().engine
        _ = try await engine.create(StateConformance.resource("Plain.test.dev", "p"), owner: "")
        let sensitive = try MetaNamespace.definition(Meta.ResourceDefinitionSpec(resourceType: "Secrets.test.dev", sensitivity: .sensitive))
        _ = try await engine.create(sensitive, owner: "")
        _ = try await engine.create(StateConformance.resource("Secrets.test.dev", "s"), owner: "")
        let audit = LogCapture()
        let server = CosiServer(
            configuration: RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.serverContext()),
            engine: engine, logger: quietLogger("test"), audit: audit.logger("cosid.audit")
        )
        // The server's scope shuts the engine down when it ends.
        try await withRunningServer(server.rpc, serve: { try await server.run() }) { running in
            try await body(running.port, pki, audit)
        }
    }

    /// Runs `body` with a client holding `who`'s certificate, and closes it.
    static func withClient(_ who: Who, _ pki: TestPKI, _ port: Int, _ body: (CosiClient) async throws -> Void) async throws {
        try await withCosiClient(CosiClientConfiguration(host: "127.0.0.1", port: port, tls: try pki.client(name: who.rawValue, roles: who.roles)), body)
    }

    /// How a call ended: OK, or the status code it failed with.
    enum Outcome: Equatable, CustomStringConvertible {
        case ok
        case failed(RPCStatus.Code)
        static let refused = Outcome.failed(.permissionDenied)
        var description: String { if case .failed(let code) = self { "\(code)" } else { "OK" } }
    }

    static func outcome(_ call: () async throws -> Void) async -> Outcome {
        do {
            try await call()
            return .ok
        } catch let error as RPCError {
            if error.code == .permissionDenied {
                #expect(error.message.contains("os:"), "the refusal names the role needed: \(error.message)")
            }
            return .failed(error.code)
        } catch {
            Issue.record("not an RPCError: \(error)")
            return .failed(.unknown)
        }
    }

    /// A watch is allowed when its first ("ready") response arrives.
    static func watchOutcome(_ client: CosiClient, _ namespace: String, _ type: String) async -> Outcome {
        await outcome {
            var responses = client.watchCall(WatchRequest(namespace: namespace, type: type)).makeAsyncIterator()
            guard try await responses.next() != nil else { throw RPCError(code: .internal, message: "the watch ended without its ready response") }
        }
    }

    /// A call, whether the role may make it, what an allowed call returns (success, or the
    /// domain error the request deserves), and what it returned. A refused call is
    /// PERMISSION_DENIED.
    struct Cell {
        var name: String
        var allowed: Bool
        var granted: Outcome
        var outcome: Outcome
    }

    /// Every State method, called by `who`.
    static func stateCells(_ who: Who, _ client: CosiClient) async -> [Cell] {
        let ns = "default", type = "Plain.test.dev"
        let mayRead = [.admin, .operator, .reader].contains(who)
        let mayWrite = [.admin, .operator].contains(who)
        var cells: [Cell] = []
        cells.append(Cell(name: "Get", allowed: mayRead, granted: .ok, outcome: await Self.outcome { _ = try await client.get(namespace: ns, type: type, id: "p") }))
        cells.append(Cell(name: "List", allowed: mayRead, granted: .ok, outcome: await Self.outcome { _ = try await client.list(namespace: ns, type: type) }))
        cells.append(Cell(name: "Watch", allowed: mayRead, granted: .ok, outcome: await Self.watchOutcome(client, ns, type)))
        cells.append(Cell(name: "Get of a missing id", allowed: mayRead, granted: .failed(.notFound), outcome: await Self.outcome { _ = try await client.get(namespace: ns, type: type, id: "missing") }))
        cells.append(Cell(name: "Create", allowed: mayWrite, granted: .ok, outcome: await Self.outcome { _ = try await client.create(StateConformance.resource(type, "new-\(who)"), owner: "") }))
        cells.append(Cell(name: "Create of an existing id", allowed: mayWrite, granted: .failed(.alreadyExists), outcome: await Self.outcome { _ = try await client.create(StateConformance.resource(type, "p"), owner: "") }))
        // Update reads first: a role that may not read is refused there.
        cells.append(Cell(name: "Update", allowed: mayWrite, granted: .ok, outcome: await Self.outcome {
            var p = try await client.get(namespace: ns, type: type, id: "p")
            p.metadata.labels = ["by": who.rawValue]
            _ = try await client.update(p, owner: "")
        }))
        cells.append(Cell(name: "Teardown", allowed: mayWrite, granted: .failed(.notFound), outcome: await Self.outcome { _ = try await client.teardown(namespace: ns, type: type, id: "missing-\(who)") }))
        cells.append(Cell(name: "Destroy", allowed: mayWrite, granted: .failed(.notFound), outcome: await Self.outcome { try await client.destroy(namespace: ns, type: type, id: "missing-\(who)") }))
        cells.append(Cell(name: "TeardownAndDestroy", allowed: mayWrite, granted: .failed(.notFound), outcome: await Self.outcome {
            try await client.teardownAndDestroy(namespace: ns, type: type, id: "missing-\(who)", timeout: .seconds(2))
        }))
        return cells
    }

    @Test(arguments: Who.allCases)
    func everyStateMethodByRole(_ who: Who) async throws {
        try await Self.withServer { port, pki, audit in
            try await Self.withClient(who, pki, port) { client in
                for cell in await Self.stateCells(who, client) {
                    #expect(cell.outcome == (cell.allowed ? cell.granted : .refused), "\(who) \(cell.name)")
                }
                // Info is for everyone.
                let info = try await client.info()
                #expect(info.identity == who.rawValue)
                #expect(info.roles == who.roles)
            }
            Self.checkAudit(audit, who)
        }
    }

    /// The audit log: one line per refusal and per successful write, with the identity.
    static func checkAudit(_ audit: LogCapture, _ who: Who) {
        let refusals = audit.records.filter { $0.message == "refused" }
        let writes = audit.records.filter { $0.message == "write" }
        #expect(refusals.allSatisfy { $0.metadata["identity"] == who.rawValue && $0.level == .notice })
        #expect(writes.allSatisfy { $0.metadata["identity"] == who.rawValue })
        let refusedMethods = Set(refusals.compactMap { $0.metadata["method"] })
        if [.admin, .operator].contains(who) {
            #expect(refusals.isEmpty, "\(refusals.map(\.metadata))")
            // Create and Update succeeded; the failed writes are not "write" lines.
            #expect(writes.map { $0.metadata["method"] } == ["/cosi.resource.State/Create", "/cosi.resource.State/Update"])
            #expect(writes.first?.metadata["kind"] == "default/Plain.test.dev")
        } else if who == .reader {
            #expect(writes.isEmpty)
            #expect(refusedMethods == [
                "/cosi.resource.State/Create", "/cosi.resource.State/Update", "/cosi.resource.State/Teardown",
                "/cosi.resource.State/Destroy", "/cosi.resource.State/TeardownAndDestroy",
            ])
        } else {
            #expect(writes.isEmpty)
            #expect(refusedMethods.isSuperset(of: ["/cosi.resource.State/Get", "/cosi.resource.State/List", "/cosi.resource.State/Watch", "/cosi.resource.State/Create"]))
            #expect(refusals.allSatisfy { $0.metadata["reason"]?.contains("os:") == true })
        }
    }

    @Test(arguments: Who.allCases)
    func metaAndSensitiveTypes(_ who: Who) async throws {
        try await Self.withServer { port, pki, _ in
            try await Self.withClient(who, pki, port) { client in
                let metaRead = await Self.outcome { _ = try await client.list(namespace: "meta", type: MetaNamespace.resourceDefinitionType) }
                let metaWrite = await Self.outcome {
                    _ = try await client.create(MetaNamespace.definition(Meta.ResourceDefinitionSpec(resourceType: "\(who.rawValue.capitalized)Things.test.dev")), owner: "")
                }
                let sensitiveGet = await Self.outcome { _ = try await client.get(namespace: "default", type: "Secrets.test.dev", id: "s") }
                let sensitiveWatch = await Self.watchOutcome(client, "default", "Secrets.test.dev")
                #expect(metaRead == ([.admin, .operator, .reader].contains(who) ? .ok : .refused))
                #expect(metaWrite == (who == .admin ? .ok : .refused))
                #expect(sensitiveGet == (who == .admin ? .ok : .refused))
                #expect(sensitiveWatch == (who == .admin ? .ok : .refused), "a non-admin's watch on a sensitive kind is refused as a whole")
            }
        }
    }

    /// access.md: controller outputs belong to their controller. Over the State service, a write
    /// of an owned resource, or one that names an owner, is refused to all but os:admin, whose
    /// such writes are audited as overrides.
    @Test(arguments: [Who.admin, .operator])
    func ownedResourcesAreTheirControllers(_ who: Who) async throws {
        try await Self.withServer { port, pki, audit in
            try await Self.withClient(.admin, pki, port) { admin in
                _ = try await admin.create(StateConformance.resource("Outputs.test.dev", "o"), owner: "ctrl")
            }
            try await Self.withClient(who, pki, port) { client in
                let stored = try await client.get(namespace: "default", type: "Outputs.test.dev", id: "o")
                // Naming no owner: the engine's owner check refuses, naming the controller.
                for (what, call) in [
                    ("update", { _ = try await client.update(stored) }),
                    ("teardown", { _ = try await client.teardown(namespace: "default", type: "Outputs.test.dev", id: "o") }),
                    ("destroy", { try await client.destroy(namespace: "default", type: "Outputs.test.dev", id: "o") }),
                ] as [(String, () async throws -> Void)] {
                    #expect(await Self.refusedAsOwned(call), "\(who) \(what)")
                }
                // Naming the owner: only an admin may, and it is audited as an override.
                let named: [(String, () async throws -> Void)] = [
                    ("create", { _ = try await client.create(StateConformance.resource("Outputs.test.dev", "forged"), owner: "ctrl") }),
                    ("update", { _ = try await client.update(stored, owner: "ctrl") }),
                ]
                for (what, call) in named {
                    if who == .admin {
                        try await call()
                    } else {
                        #expect(await Self.refusedAsOwned(call), "\(who) \(what) naming the owner")
                    }
                }
                // The first override is the set-up's own create.
                let overrides = audit.records.filter { $0.message == "owner override" }.dropFirst()
                if who == .admin {
                    #expect(overrides.count == 2)
                    #expect(overrides.allSatisfy { $0.metadata["owner"] == "ctrl" && $0.metadata["identity"] == "admin" })
                } else {
                    #expect(overrides.isEmpty)
                    #expect(try await client.get(namespace: "default", type: "Outputs.test.dev", id: "o").metadata.version == "1", "nothing was written")
                }
            }
        }
    }

    static func refusedAsOwned(_ call: () async throws -> Void) async -> Bool {
        do {
            try await call()
            return false
        } catch {
            return (error as? RPCError)?.code == .permissionDenied && "\(error)".contains("owned by controller ctrl")
        }
    }

    @Test func aDryRunChecksAndWritesNothing() async throws {
        try await Self.withServer { port, pki, audit in
            try await Self.withClient(.operator, pki, port) { client in
                let would = try await client.create(StateConformance.resource("Plain.test.dev", "new"), dryRun: true)
                #expect(would.metadata.version == "1")
                await #expect(throws: RPCError.self) { _ = try await client.get(namespace: "default", type: "Plain.test.dev", id: "new") }
                var stored = try await client.get(namespace: "default", type: "Plain.test.dev", id: "p")
                stored.metadata.labels = ["changed": "yes"]
                #expect(try await client.update(stored, dryRun: true).metadata.version == "2")
                #expect(try await client.get(namespace: "default", type: "Plain.test.dev", id: "p").metadata.version == "1")
                // It is checked as the write would be: a stale version is refused.
                stored.metadata.version = "7"
                await #expect { _ = try await client.update(stored, dryRun: true) } throws: { ($0 as? RPCError)?.code == .failedPrecondition }
                #expect(!audit.records.contains { $0.message == "write" && $0.metadata["identity"] == "operator" }, "a dry run is not a write")
            }
        }
    }

    /// changes.md's calls, for every role: a change is a State write of each of its resources
    /// (a sensitive or meta resource in it needs os:admin, naming the resource), confirm and
    /// revert an operator's, history a State read.
    @Test(arguments: Who.allCases)
    func changeCalls(_ who: Who) async throws {
        try await Self.withServer { port, pki, audit in
            try await Self.withClient(who, pki, port) { client in
                let mayRead = [.admin, .operator, .reader].contains(who)
                let mayWrite = [.admin, .operator].contains(who)
                let plain = StateConformance.resource("Plain.test.dev", "change-\(who)")
                let apply = await Self.outcome { _ = try await client.applyChange([plain]) }
                let dryRun = await Self.outcome { _ = try await client.applyChange([StateConformance.resource("Plain.test.dev", "dry-\(who)")], dryRun: true) }
                var withSecret: RPCError?
                do { _ = try await client.applyChange([StateConformance.resource("Plain.test.dev", "x-\(who)"), StateConformance.resource("Secrets.test.dev", "s2")]) } catch let error as RPCError { withSecret = error }
                let history = await Self.outcome { _ = try await client.history(namespace: "default", type: "Plain.test.dev", id: "p") }
                let secretHistory = await Self.outcome { _ = try await client.history(namespace: "default", type: "Secrets.test.dev", id: "s") }
                let confirm = await Self.outcome { _ = try await client.confirmChange("c999999") }
                let revert = await Self.outcome { _ = try await client.revertChange("c999999") }
                #expect(apply == (mayWrite ? .ok : .refused), "\(who) Apply")
                #expect(dryRun == (mayWrite ? .ok : .refused), "\(who) Apply dry run")
                #expect(history == (mayRead ? .ok : .refused), "\(who) History")
                #expect(secretHistory == (who == .admin ? .ok : .refused), "\(who) History of a sensitive type")
                #expect(confirm == (mayWrite ? .failed(.notFound) : .refused), "\(who) Confirm")
                #expect(revert == (mayWrite ? .failed(.notFound) : .refused), "\(who) Revert")
                if who == .admin {
                    #expect(withSecret == nil)
                } else {
                    #expect(withSecret?.code == .permissionDenied)
                    if mayWrite { #expect(withSecret?.message.contains("resource 2 of 2 (default/Secrets.test.dev)") == true, "\(withSecret?.message ?? "")") }
                }
                if mayWrite {
                    let stored = try await client.get(namespace: "default", type: "Plain.test.dev", id: "change-\(who)")
                    #expect(stored.metadata.version == "1")
                    let entries = try await client.history(namespace: "default", type: "Plain.test.dev", id: "change-\(who)").entries
                    #expect(entries.map(\.identity) == [who.rawValue] && entries.first?.changeID.hasPrefix("c") == true)
                    #expect(audit.records.contains { $0.metadata["method"] == "/cosi.resource.Changes/Apply" && $0.metadata["identity"] == "\(who.rawValue)" })
                }
            }
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

    @Test func aWatchEndsWhenItsTypeBecomesSensitive() async throws {
        try await Self.withServer { port, pki, audit in
            try await Self.withClient(.reader, pki, port) { reader in
                var watch = reader.watchCall(WatchRequest(namespace: "default", type: "Turnings.test.dev")).makeAsyncIterator()
                _ = try await watch.next() // ready
                try await Self.withClient(.admin, pki, port) { admin in
                    _ = try await admin.create(StateConformance.resource("Turnings.test.dev", "before"), owner: "")
                    #expect(try await watch.next()?.event.first?.resource?.metadata.id == "before")
                    // The type becomes sensitive; then a resource of it is written.
                    _ = try await admin.create(try MetaNamespace.definition(Meta.ResourceDefinitionSpec(resourceType: "Turnings.test.dev", sensitivity: .sensitive)), owner: "")
                    _ = try await admin.create(StateConformance.resource("Turnings.test.dev", "secret"), owner: "")
                }
                // The reader's watch ends before it sees it.
                await #expect { _ = try await watch.next() } throws: { error in
                    (error as? RPCError)?.code == .permissionDenied && "\(error)".contains("sensitive")
                }
                #expect(audit.records.contains { $0.message == "refused" && $0.metadata["identity"] == "reader" })
            }
        }
    }
}
