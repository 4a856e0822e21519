import CosiClient
import CosiController
import CosiControllerService
import CosiMessages
import CosiRPC
import CosiServer
import CosiControllerRuntime
import CosiStateService
import CosiState
import CosiTesting
import NIOCore
import Testing

/// The controller services over mutual TLS on 127.0.0.1, against an in-process cosid.
@Suite("Controller services", .timeLimit(.minutes(2)))
struct ControllerServiceTests {
    let pki: TestPKI
    init() throws { pki = try TestPKI() }

    /// A cosid server (State, controllers) for the duration of `body`.
    func withServer(grace: Duration = .seconds(60), _ body: (CosiServer, Int) async throws -> Void) async throws {
        let engine = try StateBackends.memory().engine
        let server = CosiServer(
            configuration: RPCServerConfiguration(host: "127.0.0.1", port: 0, tls: try pki.serverContext()),
            engine: engine, logger: quietLogger("test"), controllerGrace: grace, audit: quietLogger("audit")
        )
        try await withRunningServer(server.rpc, serve: { try await server.run() }) { running in
            try await body(server, running.port)
        }
    }

    func client(_ port: Int, name: String, roles: [String] = ["os:controller"]) throws -> CosiClientConfiguration {
        CosiClientConfiguration(host: "127.0.0.1", port: port, tls: try pki.client(name: name, roles: roles))
    }

    static let declaration = Runtime.RegisterControllerRequest(
        controllerName: "c",
        inputs: [Runtime.ControllerInput(kind: .strong, namespace: "default", type: "Ints.test.dev")],
        outputs: [Runtime.ControllerOutput(type: "Strings.test.dev", kind: .exclusive)]
    )

    func code(_ call: () async throws -> Void) async -> RPCStatus.Code {
        do {
            try await call()
            return .ok
        } catch let error as RPCError {
            return error.code
        } catch {
            return .unknown
        }
    }

    @Test func aTokenWorksOnlyForTheIdentityItWasIssuedTo() async throws {
        try await withServer { _, port in
            try await withCosiClient(try client(port, name: "alice")) { alice in
                try await withCosiClient(try client(port, name: "bob")) { bob in
                    let token = try await alice.unary(ControllerService.register, Self.declaration, as: Runtime.RegisterControllerResponse.self).controllerToken
                    #expect(token.count == 64, "256 bits, hex")
                    let queue = Runtime.QueueReconcileRequest(controllerToken: token)
                    #expect(await code { _ = try await alice.unary(ControllerService.queueReconcile, queue, as: Runtime.QueueReconcileResponse.self) } == .ok)
                    #expect(await code { _ = try await bob.unary(ControllerService.queueReconcile, queue, as: Runtime.QueueReconcileResponse.self) } == .permissionDenied, "another identity")
                    let forged = Runtime.QueueReconcileRequest(controllerToken: String(repeating: "0", count: 64))
                    #expect(await code { _ = try await alice.unary(ControllerService.queueReconcile, forged, as: Runtime.QueueReconcileResponse.self) } == .permissionDenied, "an unknown token")
                    // The name is taken: FAILED_PRECONDITION, whoever asks.
                    #expect(await code { _ = try await bob.unary(ControllerService.register, Self.declaration, as: Runtime.RegisterControllerResponse.self) } == .failedPrecondition)
                }
            }
        }
    }

    @Test func aRestartedControllerTakesItsNameBack() async throws {
        try await withServer { server, port in
            func message(_ call: () async throws -> Void) async -> String {
                do { try await call(); return "ok" } catch let error as RPCError { return "\(error.code): \(error.message)" } catch { return "\(error)" }
            }
            let register = { (client: CosiClient) in
                try await client.unary(ControllerService.register, Self.declaration, as: Runtime.RegisterControllerResponse.self).controllerToken
            }
            // The first process registers and connects its event stream.
            let first = try await CosiClient.connect(try client(port, name: "alice"))
            let oldToken = try await register(first)
            var events = first.serverStream(ControllerService.reconcileEvents, Runtime.ReconcileEventsRequest(controllerToken: oldToken), as: Runtime.ReconcileEventsResponse.self).makeAsyncIterator()
            #expect(try await events.next() != nil)
            try await withCosiClient(try client(port, name: "alice")) { second in
                // While the holder is connected, the name stays taken, and the message says by whom.
                let connected = await message { _ = try await register(second) }
                #expect(connected.hasPrefix("FAILED_PRECONDITION") && connected.contains("by this identity (alice), and its event stream is connected: stop the other process first"), "\(connected)")
                // The first process dies: its connection goes.
                await first.close()
                try await eventually("seen disconnected") { server.controllers.controllers.first?.running == false }
                #expect(server.controllers.controllers.first?.lastError == "the event stream ended: its connection closed")
                try await withCosiClient(try client(port, name: "bob")) { bob in
                    let other = await message { _ = try await register(bob) }
                    #expect(other.hasPrefix("FAILED_PRECONDITION") && other.contains("by identity alice, disconnected; its registration is kept until"), "another identity: \(other)")
                }
                // The restarted process takes it over at once, with a new token; the old one is void.
                let newToken = try await register(second)
                #expect(newToken != oldToken)
                #expect(server.controllers.controllers.map(\.name) == ["c"])
                #expect(await code {
                    _ = try await second.unary(ControllerService.queueReconcile, Runtime.QueueReconcileRequest(controllerToken: oldToken), as: Runtime.QueueReconcileResponse.self)
                } == .permissionDenied)
                var resumed = second.serverStream(ControllerService.reconcileEvents, Runtime.ReconcileEventsRequest(controllerToken: newToken), as: Runtime.ReconcileEventsResponse.self).makeAsyncIterator()
                #expect(try await resumed.next() != nil)
                try await eventually("running again") { server.controllers.controllers.first?.running == true }
            }
        }
    }

    @Test func aControllerThatNeverComesBackLosesItsRegistration() async throws {
        try await withServer(grace: .seconds(1)) { server, port in
            try await withCosiClient(try client(port, name: "alice")) { alice in
                let token = try await alice.unary(ControllerService.register, Self.declaration, as: Runtime.RegisterControllerResponse.self).controllerToken
                #expect(server.controllers.controllers.map(\.name) == ["c"])
                // No event stream within the grace period: unregistered, its output type free again.
                try await eventually("unregistered") { server.controllers.controllers.isEmpty }
                #expect(await code {
                    _ = try await alice.unary(ControllerService.queueReconcile, Runtime.QueueReconcileRequest(controllerToken: token), as: Runtime.QueueReconcileResponse.self)
                } == .permissionDenied)
                #expect(await code { _ = try await alice.unary(ControllerService.register, Self.declaration, as: Runtime.RegisterControllerResponse.self) } == .ok)
            }
        }
    }

    @Test func aSecondStreamReplacesTheFirstWithAborted() async throws {
        try await withServer { server, port in
            try await withCosiClient(try client(port, name: "alice")) { alice in
                let token = try await alice.unary(ControllerService.register, Self.declaration, as: Runtime.RegisterControllerResponse.self).controllerToken
                let request = Runtime.ReconcileEventsRequest(controllerToken: token)
                var first = alice.serverStream(ControllerService.reconcileEvents, request, as: Runtime.ReconcileEventsResponse.self).makeAsyncIterator()
                #expect(try await first.next() != nil, "one event at once on connect")
                var second = alice.serverStream(ControllerService.reconcileEvents, request, as: Runtime.ReconcileEventsResponse.self).makeAsyncIterator()
                #expect(try await second.next() != nil)
                await #expect { _ = try await first.next() } throws: { ($0 as? RPCError)?.code == .aborted }
                // Events flow to the second one.
                _ = try await alice.unary(ControllerService.queueReconcile, Runtime.QueueReconcileRequest(controllerToken: token), as: Runtime.QueueReconcileResponse.self)
                #expect(try await second.next() != nil)
                #expect(server.controllers.controllers.first?.running == true)
            }
        }
    }

    @Test func startAndStopGateDelivery() async throws {
        try await withServer { server, port in
            try await withCosiClient(try client(port, name: "alice")) { alice in
                // cosid starts with delivery running.
                #expect(await code { _ = try await alice.unary(ControllerService.start, Runtime.StartRequest(), as: Runtime.StartResponse.self) } == .failedPrecondition)
                #expect(await code { _ = try await alice.unary(ControllerService.stop, Runtime.StopRequest(), as: Runtime.StopResponse.self) } == .ok)
                #expect(await code { _ = try await alice.unary(ControllerService.stop, Runtime.StopRequest(), as: Runtime.StopResponse.self) } == .failedPrecondition)
                let token = try await alice.unary(ControllerService.register, Self.declaration, as: Runtime.RegisterControllerResponse.self).controllerToken
                let events = alice.serverStream(ControllerService.reconcileEvents, Runtime.ReconcileEventsRequest(controllerToken: token), as: Runtime.ReconcileEventsResponse.self)
                let first = Task {
                    var iterator = events.makeAsyncIterator()
                    return try await iterator.next() != nil
                }
                // The stream took the connect event from the controller's queue; stopped, it holds
                // it at the gate rather than sending it and waiting for the next one.
                let name = Self.declaration.controllerName
                try await eventually("the stream took its first event") { (server.controllers.queue(of: name)?.deliveredCount ?? 0) >= 1 }
                #expect(server.controllers.queue(of: name)?.isWaiting == false, "no event while stopped")
                _ = try await alice.unary(ControllerService.start, Runtime.StartRequest(), as: Runtime.StartResponse.self)
                #expect(try await first.value, "the queued event flows on Start")
                try await eventually("then it waits for the next") { server.controllers.queue(of: name)?.isWaiting == true }
            }
        }
    }

    enum Who: String, CaseIterable, CustomTestStringConvertible {
        case admin, controller, `operator`, reader, none, unknown
        var testDescription: String { rawValue }
        var roles: [String] {
            switch self {
            case .admin: ["os:admin"]
            case .controller: ["os:controller"]
            case .operator: ["os:operator"]
            case .reader: ["os:reader"]
            case .none: []
            case .unknown: ["os:superuser"]
            }
        }
    }

    /// Every method, in an order where each allowed call has a known outcome.
    @Test(arguments: Who.allCases)
    func everyControllerMethodByRole(_ who: Who) async throws {
        try await withServer { _, port in
            try await withCosiClient(try client(port, name: who.rawValue, roles: who.roles)) { c in
                let allowed = [.admin, .controller].contains(who)
                var outcomes: [(String, RPCStatus.Code, RPCStatus.Code)] = []
                func record(_ method: String, _ granted: RPCStatus.Code, _ outcome: RPCStatus.Code) {
                    outcomes.append((method, granted, outcome))
                }
                var token = "none"
                record(ControllerService.register, .ok, await code {
                    token = try await c.unary(ControllerService.register, Self.declaration, as: Runtime.RegisterControllerResponse.self).controllerToken
                })
                record(ControllerService.start, .failedPrecondition, await code { _ = try await c.unary(ControllerService.start, Runtime.StartRequest(), as: Runtime.StartResponse.self) })
                record(ControllerService.stop, .ok, await code { _ = try await c.unary(ControllerService.stop, Runtime.StopRequest(), as: Runtime.StopResponse.self) })
                record(ControllerService.start, .ok, await code { _ = try await c.unary(ControllerService.start, Runtime.StartRequest(), as: Runtime.StartResponse.self) })
                record(ControllerService.reconcileEvents, .ok, await code {
                    var events = c.serverStream(ControllerService.reconcileEvents, Runtime.ReconcileEventsRequest(controllerToken: token), as: Runtime.ReconcileEventsResponse.self).makeAsyncIterator()
                    guard try await events.next() != nil else { throw RPCError(code: .internal, message: "no event") }
                })
                record(ControllerService.queueReconcile, .ok, await code { _ = try await c.unary(ControllerService.queueReconcile, Runtime.QueueReconcileRequest(controllerToken: token), as: Runtime.QueueReconcileResponse.self) })
                record(ControllerService.updateInputs, .ok, await code {
                    _ = try await c.unary(ControllerService.updateInputs, Runtime.UpdateInputsRequest(controllerToken: token, inputs: Self.declaration.inputs), as: Runtime.UpdateInputsResponse.self)
                })
                let out = (namespace: "default", type: "Strings.test.dev", id: "s")
                record(ControllerService.get, .notFound, await code {
                    _ = try await c.unary(ControllerService.get, Runtime.RuntimeGetRequest(controllerToken: token, namespace: out.namespace, type: out.type, id: out.id), as: Runtime.RuntimeGetResponse.self)
                })
                record(ControllerService.create, .ok, await code {
                    _ = try await c.unary(ControllerService.create, Runtime.RuntimeCreateRequest(controllerToken: token, resource: Resource(metadata: Metadata(namespace: out.namespace, type: out.type, id: out.id))), as: Runtime.RuntimeCreateResponse.self)
                })
                record(ControllerService.list, .ok, await code {
                    for try await _ in c.serverStream(ControllerService.list, Runtime.RuntimeListRequest(controllerToken: token, namespace: out.namespace, type: out.type), as: Runtime.RuntimeListResponse.self) {}
                })
                record(ControllerService.update, .ok, await code {
                    var resource = try #require(try await c.unary(ControllerService.get, Runtime.RuntimeGetRequest(controllerToken: token, namespace: out.namespace, type: out.type, id: out.id), as: Runtime.RuntimeGetResponse.self).resource)
                    resource.spec.yamlSpec = "text: changed\n"
                    _ = try await c.unary(ControllerService.update, Runtime.RuntimeUpdateRequest(controllerToken: token, newResource: resource), as: Runtime.RuntimeUpdateResponse.self)
                })
                record(ControllerService.watchFor, .ok, await code {
                    _ = try await c.unary(ControllerService.watchFor, Runtime.RuntimeWatchForRequest(controllerToken: token, namespace: out.namespace, type: out.type, id: out.id, finalizersEmpty: Runtime.ConditionFinalizersEmpty()), as: Runtime.RuntimeWatchForResponse.self)
                })
                record(ControllerService.teardown, .ok, await code {
                    _ = try await c.unary(ControllerService.teardown, Runtime.RuntimeTeardownRequest(controllerToken: token, namespace: out.namespace, type: out.type, id: out.id), as: Runtime.RuntimeTeardownResponse.self)
                })
                record(ControllerService.destroy, .ok, await code {
                    _ = try await c.unary(ControllerService.destroy, Runtime.RuntimeDestroyRequest(controllerToken: token, namespace: out.namespace, type: out.type, id: out.id), as: Runtime.RuntimeDestroyResponse.self)
                })
                record(ControllerService.addFinalizer, .notFound, await code {
                    _ = try await c.unary(ControllerService.addFinalizer, Runtime.RuntimeAddFinalizerRequest(controllerToken: token, namespace: "default", type: "Ints.test.dev", id: "missing", finalizers: ["c"]), as: Runtime.RuntimeAddFinalizerResponse.self)
                })
                record(ControllerService.removeFinalizer, .ok, await code {
                    _ = try await c.unary(ControllerService.removeFinalizer, Runtime.RuntimeRemoveFinalizerRequest(controllerToken: token, namespace: "default", type: "Ints.test.dev", id: "missing", finalizers: ["c"]), as: Runtime.RuntimeRemoveFinalizerResponse.self)
                })
                #expect(Set(outcomes.map(\.0)).count == 15, "every method")
                for (method, granted, outcome) in outcomes {
                    #expect(outcome == (allowed ? granted : .permissionDenied), "\(who) \(method)")
                }
                // os:controller has no State access at all.
                let stateRead = await code { _ = try await c.list(namespace: "default", type: "Strings.test.dev") }
                #expect(stateRead == (who == .admin || who == .operator || who == .reader ? .ok : .permissionDenied))
                // Info is for everyone, and lists every method served.
                let info = try await c.info()
                #expect(Set(info.methods).isSuperset(of: outcomes.map(\.0)))
            }
        }
    }
}

@Suite("One table of statuses")
struct StatusTableTests {
    /// An engine error is the same status over the State service and the controller services
    /// (once: phase conflicts and full disks differed between them).
    @Test func anEngineErrorIsTheSameStatusOnEveryService() {
        let codes: [StateError.Code] = [
            .notFound, .alreadyExists, .ownerMismatch, .versionConflict, .finalizersPending, .invalidArgument, .phaseConflict,
            .tearingDown, .unimplemented, .bookmarkUnusable, .historyLost, .deadlineExceeded, .unavailable, .storageFailure,
            .storageFull, .overloaded,
        ]
        for code in codes {
            let error = StateError(code, "x")
            let state = StateService.rpcError(error).code
            let controllers = ControllerService.rpcError(ControllerError(error)).code
            #expect(state == controllers, "\(code): State \(state), controllers \(controllers)")
            #expect(state != .unknown, "\(code) has a status")
        }
        #expect(StateService.rpcError(StateError(.storageFull, "")).code == .resourceExhausted)
        #expect(StateService.rpcError(StateError(.phaseConflict, "")).code == .invalidArgument)
        #expect(ControllerService.rpcError(ControllerError(StateError(.tearingDown, ""))).code == .failedPrecondition)
    }
}
