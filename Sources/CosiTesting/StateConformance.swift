import CosiMessages
import CosiRPC

/// The State conformance suite (state.md), run against every backend: the engine in memory, the
/// engine on SQLite, and the client over mutual TLS. Each check throws ``ConformanceFailure``
/// (or the unexpected error) when the backend misbehaves.
public enum StateConformance {
    static let ns = "default"

    public static func resource(_ type: String, _ id: String, labels: [String: String] = [:], finalizers: [String] = [], yaml: String = "value: 1\n", version: String = "") -> Resource {
        Resource(
            metadata: Metadata(namespace: ns, type: type, id: id, version: version, finalizers: finalizers, labels: labels),
            spec: Spec(protoSpec: [1, 2, 3], yamlSpec: yaml)
        )
    }

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw ConformanceFailure(message()) }
    }

    static func eventually(_ message: String, timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async throws {
        try await CosiTesting.eventually(message, timeout: timeout, condition)
    }

    /// Runs `body`, which must fail with `code`; returns the error's message.
    @discardableResult
    static func expectCode<T>(_ code: RPCStatus.Code, _ what: String, _ body: () async throws -> T) async throws -> String {
        do {
            _ = try await body()
        } catch let error as RPCError {
            try check(error.code == code, "\(what): expected \(code), got \(error.code): \(error.message)")
            return error.message
        }
        throw ConformanceFailure("\(what): expected \(code), but it succeeded")
    }

    // MARK: Basics

    public static func createGetListDestroy(_ b: any StateBackend) async throws {
        let type = "Basics.test.dev"
        let created = try await b.create(resource(type, "a", version: "42"), owner: "")
        try check(created.metadata.version == "1", "Create stores version 1, got \(created.metadata.version)")
        try check(created.metadata.phase == "running", "Create stores phase running")
        try check(created.metadata.created != nil && created.metadata.updated != nil, "Create sets created and updated")
        try check(created.spec == Spec(protoSpec: [1, 2, 3], yamlSpec: "value: 1\n"), "the spec is stored byte for byte")
        let fetched = try await b.get(ns, type, "a")
        try check(fetched == created, "Get returns what Create stored")
        _ = try await b.create(resource(type, "c"), owner: "")
        _ = try await b.create(resource(type, "b"), owner: "")
        let ids = try await b.list(ns, type, labelQueries: [], idQuery: nil).map(\.metadata.id)
        try check(ids == ["a", "b", "c"], "List is sorted by id: \(ids)")
        try check(try await b.list(ns, "Unknown.test.dev", labelQueries: [], idQuery: nil).isEmpty, "an unknown kind lists as empty")
        try await expectCode(.alreadyExists, "Create of an existing resource") { try await b.create(resource(type, "a"), owner: "") }
        try await b.destroy(ns, type, "a", owner: "")
        try await expectCode(.notFound, "Get after Destroy") { try await b.get(ns, type, "a") }
        try await expectCode(.notFound, "Destroy of a missing resource") { try await b.destroy(ns, type, "a", owner: "") }
        let again = try await b.create(resource(type, "a"), owner: "")
        try check(again.metadata.version == "1", "re-Create starts at version 1 again")
    }

    public static func owners(_ b: any StateBackend) async throws {
        let type = "Owners.test.dev"
        let created = try await b.create(resource(type, "x"), owner: "ctrl-a")
        try check(created.metadata.owner == "ctrl-a", "Create sets the owner")
        var next = created
        next.metadata.labels = ["k": "v"]
        let message = try await expectCode(.permissionDenied, "Update by another owner") { try await b.update(next, owner: "ctrl-b", expectedPhase: nil) }
        try check(message.contains("ctrl-a"), "the owner error names the owner: \(message)")
        try await expectCode(.permissionDenied, "Update without owner of an owned resource") { try await b.update(next, owner: "", expectedPhase: nil) }
        next.metadata.owner = "someone-else"
        let updated = try await b.update(next, owner: "ctrl-a", expectedPhase: nil)
        try check(updated.metadata.owner == "ctrl-a", "the owner never changes")
        try await expectCode(.permissionDenied, "Teardown by another owner") { try await b.teardown(ns, type, "x", owner: "ctrl-b") }
        try await expectCode(.permissionDenied, "Destroy by another owner") { try await b.destroy(ns, type, "x", owner: "") }
        try await b.destroy(ns, type, "x", owner: "ctrl-a")
    }

    public static func updateConflicts(_ b: any StateBackend) async throws {
        let type = "Conflicts.test.dev"
        let created = try await b.create(resource(type, "x"), owner: "")
        var stale = created
        stale.metadata.labels = ["first": "1"]
        let v2 = try await b.update(stale, owner: "", expectedPhase: nil)
        try check(v2.metadata.version == "2", "Update stores version+1")
        try check(v2.metadata.created == created.metadata.created, "Update keeps created")
        try check(v2.metadata.labels == ["first": "1"], "Update stores the request's fields")
        let message = try await expectCode(.failedPrecondition, "Update with a stale version") { try await b.update(stale, owner: "", expectedPhase: nil) }
        try check(message.contains("version"), "the conflict names the version: \(message)")
        let v3 = try await b.update(v2, owner: "", expectedPhase: nil)
        try check(v3.metadata.version == "3", "an Update without changes still bumps the version")
        try await expectCode(.invalidArgument, "Update expecting the wrong phase") { try await b.update(v3, owner: "", expectedPhase: "tearingDown") }
        let v4 = try await b.update(v3, owner: "", expectedPhase: "running")
        try check(v4.metadata.version == "4", "Update expecting the right phase succeeds")
        var bad = v4
        bad.metadata.phase = "sleeping"
        let phaseMessage = try await expectCode(.invalidArgument, "Update to an unknown phase") { try await b.update(bad, owner: "", expectedPhase: nil) }
        try check(phaseMessage.contains("phase"), "the error names the phase field: \(phaseMessage)")
        try await expectCode(.notFound, "Update of a missing resource") { try await b.update(resource(type, "missing", version: "1"), owner: "", expectedPhase: nil) }
    }

    public static func teardownReadiness(_ b: any StateBackend) async throws {
        let type = "Teardown.test.dev"
        _ = try await b.create(resource(type, "plain"), owner: "")
        try check(try await b.teardown(ns, type, "plain", owner: ""), "no finalizers: ready")
        let torn = try await b.get(ns, type, "plain")
        try check(torn.metadata.phase == "tearingDown" && torn.metadata.version == "2", "Teardown sets tearingDown with a version bump")
        try check(try await b.teardown(ns, type, "plain", owner: ""), "Teardown repeats fine")
        try check(try await b.get(ns, type, "plain").metadata.version == "2", "a repeated Teardown changes nothing")

        _ = try await b.create(resource(type, "held", finalizers: ["f1", "f2", "f1"]), owner: "")
        try check(try await b.get(ns, type, "held").metadata.finalizers == ["f1", "f2"], "finalizers are a set")
        try check(!(try await b.teardown(ns, type, "held", owner: "")), "finalizers pending: not ready")
        try await expectCode(.failedPrecondition, "Destroy with finalizers") { try await b.destroy(ns, type, "held", owner: "") }
        var held = try await b.get(ns, type, "held")
        held.metadata.finalizers = []
        _ = try await b.update(held, owner: "", expectedPhase: nil)
        try check(try await b.get(ns, type, "held").metadata.phase == "tearingDown", "an Update with empty phase keeps the stored phase")
        try check(try await b.teardown(ns, type, "held", owner: ""), "ready once the finalizers are gone")
        try await b.destroy(ns, type, "held", owner: "")
        try await expectCode(.notFound, "Teardown of a missing resource") { try await b.teardown(ns, type, "held", owner: "") }
    }

    /// Adds or removes `finalizer` with Get + Update, retrying on version conflicts.
    static func changeFinalizer(_ b: any StateBackend, _ type: String, _ id: String, _ finalizer: String, add: Bool) async throws {
        while true {
            var current = try await b.get(ns, type, id)
            if add {
                if !current.metadata.finalizers.contains(finalizer) { current.metadata.finalizers.append(finalizer) }
            } else {
                current.metadata.finalizers.removeAll { $0 == finalizer }
            }
            do {
                _ = try await b.update(current, owner: "", expectedPhase: nil)
                return
            } catch let error as RPCError where error.code == .failedPrecondition {
                continue
            }
        }
    }

    public static func concurrentFinalizersConverge(_ b: any StateBackend) async throws {
        let type = "Finalizers.test.dev"
        _ = try await b.create(resource(type, "x", finalizers: ["keep", "drop-0", "drop-1", "drop-2", "drop-3"]), owner: "")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<4 {
                group.addTask { try await changeFinalizer(b, type, "x", "add-\(index)", add: true) }
                group.addTask { try await changeFinalizer(b, type, "x", "drop-\(index)", add: false) }
            }
            try await group.waitForAll()
        }
        let finalizers = Set(try await b.get(ns, type, "x").metadata.finalizers)
        try check(finalizers == ["keep", "add-0", "add-1", "add-2", "add-3"], "8 concurrent changes converge: \(finalizers.sorted())")
    }

    public static func teardownAndDestroyWaitsForFinalizers(_ b: any StateBackend) async throws {
        let type = "TAD.test.dev"
        _ = try await b.create(resource(type, "x", finalizers: ["f", "g"]), owner: "")
        let waiter = Task { try await b.teardownAndDestroy(ns, type, "x", owner: "", timeout: .seconds(10)) }
        try await eventually("TeardownAndDestroy tears down first") { try await b.get(ns, type, "x").metadata.phase == "tearingDown" }
        // One of two finalizers goes: the change is seen (a later version), the resource stays.
        try await changeFinalizer(b, type, "x", "f", add: false)
        let remaining = try await b.get(ns, type, "x").metadata
        try check(remaining.phase == "tearingDown" && remaining.finalizers == ["g"], "TeardownAndDestroy waits while a finalizer is pending: \(remaining.finalizers)")
        try await changeFinalizer(b, type, "x", "g", add: false)
        try await waiter.value
        try await expectCode(.notFound, "the resource is gone") { try await b.get(ns, type, "x") }

        // Someone else destroys it meanwhile: still success.
        _ = try await b.create(resource(type, "y", finalizers: ["f"]), owner: "")
        let second = Task { try await b.teardownAndDestroy(ns, type, "y", owner: "", timeout: .seconds(10)) }
        try await eventually("TeardownAndDestroy tears y down") { try await b.get(ns, type, "y").metadata.phase == "tearingDown" }
        try await changeFinalizer(b, type, "y", "f", add: false)
        _ = try? await b.destroy(ns, type, "y", owner: "")
        try await second.value

        // Bounded by the deadline.
        _ = try await b.create(resource(type, "z", finalizers: ["forever"]), owner: "")
        try await expectCode(.deadlineExceeded, "TeardownAndDestroy past its deadline") {
            try await b.teardownAndDestroy(ns, type, "z", owner: "", timeout: .milliseconds(300))
        }
    }

    public static func concurrentDestroys(_ b: any StateBackend) async throws {
        let type = "Destroys.test.dev"
        _ = try await b.create(resource(type, "x"), owner: "")
        let outcomes = try await withThrowingTaskGroup(of: RPCStatus.Code.self) { group in
            for _ in 0..<10 {
                group.addTask {
                    do {
                        try await b.destroy(ns, type, "x", owner: "")
                        return .ok
                    } catch let error as RPCError {
                        return error.code
                    }
                }
            }
            var outcomes: [RPCStatus.Code] = []
            for try await code in group { outcomes.append(code) }
            return outcomes
        }
        try check(outcomes.filter { $0 == .ok }.count == 1, "exactly one Destroy succeeds: \(outcomes)")
        try check(outcomes.allSatisfy { $0 == .ok || $0 == .notFound }, "the others are NOT_FOUND: \(outcomes)")
    }

    // MARK: Queries

    static func term(_ key: String, _ op: LabelTerm.Operation, _ values: [String] = [], invert: Bool = false) -> LabelQuery {
        LabelQuery(terms: [LabelTerm(key: key, op: op, value: values, invert: invert)])
    }

    public static func labelWorkedExample(_ b: any StateBackend) async throws {
        let type = "Labels.test.dev"
        _ = try await b.create(resource(type, "app1", labels: ["app": "app1", "frozen": "", "weight": "10kg"]), owner: "")
        _ = try await b.create(resource(type, "app2", labels: ["app": "app2", "frozen": "", "weight": "20kg"]), owner: "")
        _ = try await b.create(resource(type, "app3", labels: ["app": "app3"]), owner: "")
        func ids(_ queries: [LabelQuery]) async throws -> [String] {
            try await b.list(ns, type, labelQueries: queries, idQuery: nil).map(\.metadata.id)
        }
        let cases: [([LabelQuery], [String], String)] = [
            ([term("frozen", .exists)], ["app1", "app2"], "exists(frozen)"),
            ([LabelQuery(terms: [LabelTerm(key: "frozen", op: .exists), LabelTerm(key: "app", op: .equal, value: ["app2"])])], ["app2"], "exists(frozen) and app=app2"),
            ([term("app", .in, ["app2", "app3"])], ["app2", "app3"], "app in (app2, app3)"),
            ([term("weight", .ltNumeric, ["12000"])], ["app1"], "weight < 12000"),
            ([term("weight", .lteNumeric, ["20000"])], ["app1", "app2"], "weight <= 20000"),
            ([term("app", .lt, ["app2"])], ["app1"], "app < app2"),
            ([term("app", .lte, ["app2"])], ["app1", "app2"], "app <= app2"),
            ([term("app", .equal, ["app2"]), term("app", .equal, ["app3"])], ["app2", "app3"], "app=app2 or app=app3"),
            ([term("frozen", .exists, invert: true)], ["app3"], "not exists(frozen)"),
            ([term("frozen", .notExists, invert: true)], ["app3"], "NOT_EXISTS ignores its invert"),
            ([term("weight", .ltNumeric, ["12000"], invert: true)], ["app2"], "indeterminate never matches, even inverted"),
            ([], ["app1", "app2", "app3"], "no query matches everything"),
        ]
        for (queries, expected, name) in cases {
            let got = try await ids(queries)
            try check(got == expected, "\(name): expected \(expected), got \(got)")
        }
        let message = try await expectCode(.invalidArgument, "EQUAL without a value") { try await ids([term("app", .equal)]) }
        try check(message.contains("value"), "the error names the value field: \(message)")
        try await expectCode(.unimplemented, "an unknown operator") { try await ids([term("app", LabelTerm.Operation(rawValue: 42), ["x"])]) }
    }

    public static func idRegexp(_ b: any StateBackend) async throws {
        let type = "Ids.test.dev"
        for id in ["node-1", "node-2", "edge-node-3", "other"] { _ = try await b.create(resource(type, id), owner: "") }
        let anywhere = try await b.list(ns, type, labelQueries: [], idQuery: IDQuery(regexp: "node")).map(\.metadata.id)
        try check(anywhere == ["edge-node-3", "node-1", "node-2"], "the regexp matches anywhere: \(anywhere)")
        let anchored = try await b.list(ns, type, labelQueries: [], idQuery: IDQuery(regexp: "^node-[0-9]+$")).map(\.metadata.id)
        try check(anchored == ["node-1", "node-2"], "anchored: \(anchored)")
        let combined = try await b.list(ns, type, labelQueries: [term("missing", .exists)], idQuery: IDQuery(regexp: "node")).map(\.metadata.id)
        try check(combined.isEmpty, "id query AND label query")
        let message = try await expectCode(.invalidArgument, "a regexp that does not compile") {
            try await b.list(ns, type, labelQueries: [], idQuery: IDQuery(regexp: "(unclosed"))
        }
        try check(message.contains("regexp"), "the error names the regexp: \(message)")
    }

    public static func invalidRequests(_ b: any StateBackend) async throws {
        let message = try await expectCode(.invalidArgument, "Create with an empty id") { try await b.create(resource("Bad.test.dev", ""), owner: "") }
        try check(message.contains("id"), "names the id field: \(message)")
        let nsMessage = try await expectCode(.invalidArgument, "Get with an empty namespace") { try await b.get("", "Bad.test.dev", "x") }
        try check(nsMessage.contains("namespace"), "names the namespace field: \(nsMessage)")
        let typeMessage = try await expectCode(.invalidArgument, "List with an empty type") { try await b.list(ns, "", labelQueries: [], idQuery: nil) }
        try check(typeMessage.contains("type"), "names the type field: \(typeMessage)")
        var request = WatchRequest(namespace: ns, type: "Bad.test.dev", id: "x")
        request.options = WatchOptions(bootstrapContents: true)
        try await expectCode(.unimplemented, "single-resource watch with bootstrap") { try await b.watch(request) }
        request = WatchRequest(namespace: ns, type: "Bad.test.dev", options: WatchOptions(tailEvents: 3, startFromBookmark: [1, 0, 0, 0, 0, 0, 0, 0, 0]))
        try await expectCode(.invalidArgument, "tail together with a bookmark") { try await b.watch(request) }
        request = WatchRequest(namespace: ns, type: "Bad.test.dev", options: WatchOptions(startFromBookmark: [9, 9]))
        let bookmark = try await expectCode(.failedPrecondition, "a malformed bookmark") { try await b.watch(request) }
        try check(bookmark.contains("bookmark"), "names the bookmark: \(bookmark)")
        request = WatchRequest(namespace: ns, type: "Bad.test.dev", options: WatchOptions(startFromBookmark: [1, 0, 0, 0, 1, 0, 0, 0, 0]))
        let future = try await expectCode(.failedPrecondition, "a bookmark beyond the current revision") { try await b.watch(request) }
        try check(future.contains("beyond"), "says it is beyond the current revision: \(future)")
    }

    // MARK: Watches

    public static func singleResourceWatch(_ b: any StateBackend) async throws {
        let type = "WatchOne.test.dev"
        let watch = try await b.watch(WatchRequest(namespace: ns, type: type, id: "x", apiVersion: 1))
        defer { watch.cancel() }
        let initial = try await watch.events(1)
        try check(initial[0].type == .destroyed && initial[0].resource?.metadata.version == "undefined" && initial[0].resource?.metadata.id == "x", "initial tombstone: \(initial)")
        try check(initial[0].bookmark == nil, "the initial event has no bookmark")
        var current = try await b.create(resource(type, "x"), owner: "")
        _ = try await b.create(resource(type, "other"), owner: "")
        for index in 0..<3 {
            current.metadata.labels = ["n": "\(index)"]
            current = try await b.update(current, owner: "", expectedPhase: nil)
        }
        try await b.destroy(ns, type, "x", owner: "")
        let events = try await watch.events(5)
        try check(events.map(\.type) == [.created, .updated, .updated, .updated, .destroyed], "Created, Updated x3, Destroyed: \(events.map(\.type))")
        try check(events.allSatisfy { $0.bookmark != nil }, "every later event carries a bookmark")
        try check(events[1].old?.metadata.version == "1" && events[1].resource?.metadata.version == "2", "Updated carries old and new")
        try await watch.expectNothingBefore { try await b.create(resource(type, "x"), owner: "") }
    }

    public static func kindWatchWithBootstrap(_ b: any StateBackend) async throws {
        let type = "WatchKind.test.dev"
        _ = try await b.create(resource(type, "b"), owner: "")
        _ = try await b.create(resource(type, "a"), owner: "")
        let watch = try await b.watch(WatchRequest(namespace: ns, type: type, options: WatchOptions(bootstrapContents: true), apiVersion: 1))
        defer { watch.cancel() }
        let bootstrap = try await watch.events(3)
        try check(bootstrap.map(\.type) == [.created, .created, .bootstrapped], "bootstrap: \(bootstrap.map(\.type))")
        try check(bootstrap.map { $0.resource?.metadata.id ?? "?" } == ["a", "b", ""], "in id order, then a tombstone with an empty id")
        try check(bootstrap[0].bookmark == nil && bootstrap[2].bookmark != nil, "only BOOTSTRAPPED carries a bookmark")
        _ = try await b.create(resource(type, "c"), owner: "")
        let live = try await watch.events(1)
        try check(live[0].type == .created && live[0].resource?.metadata.id == "c" && live[0].bookmark != nil, "then live events")

        // api_version 0: no BOOTSTRAPPED event.
        let old = try await b.watch(WatchRequest(namespace: ns, type: type, options: WatchOptions(bootstrapContents: true)))
        defer { old.cancel() }
        let oldBootstrap = try await old.events(3)
        try check(oldBootstrap.allSatisfy { $0.type == .created }, "api_version 0 sends no BOOTSTRAPPED: \(oldBootstrap.map(\.type))")
        try await old.expectNothingBefore { try await b.create(resource(type, "d"), owner: "") }

        // Without options: only changes after the call.
        let plain = try await b.watch(WatchRequest(namespace: ns, type: type))
        defer { plain.cancel() }
        try await plain.expectNothingBefore { try await b.create(resource(type, "e"), owner: "") }
        try await b.destroy(ns, type, "a", owner: "")
        try check(try await plain.events(1)[0].type == .destroyed, "a plain kind watch sees later changes only")
    }

    public static func bootstrapBookmark(_ b: any StateBackend) async throws {
        let type = "WatchNoop.test.dev"
        _ = try await b.create(resource(type, "a"), owner: "")
        let watch = try await b.watch(WatchRequest(namespace: ns, type: type, options: WatchOptions(bootstrapBookmark: true)))
        defer { watch.cancel() }
        let noop = try await watch.events(1)
        try check(noop[0].type == .noop && noop[0].bookmark != nil, "one NOOP with the current bookmark: \(noop)")
        _ = try await b.create(resource(type, "b"), owner: "")
        // Resuming from that bookmark gives exactly the later event.
        let resumed = try await b.watch(WatchRequest(namespace: ns, type: type, options: WatchOptions(startFromBookmark: noop[0].bookmark)))
        defer { resumed.cancel() }
        let replay = try await resumed.events(1)
        try check(replay[0].resource?.metadata.id == "b", "resume from the NOOP bookmark replays what came after")
        try await resumed.expectNothingBefore { try await b.create(resource(type, "c"), owner: "") }
    }

    public static func labelWatchFlips(_ b: any StateBackend) async throws {
        let type = "WatchFlip.test.dev"
        var x = try await b.create(resource(type, "x", labels: ["role": "db"]), owner: "")
        let watch = try await b.watch(WatchRequest(namespace: ns, type: type, options: WatchOptions(labelQuery: [term("role", .equal, ["web"])])))
        defer { watch.cancel() }
        x.metadata.labels = ["role": "web"]
        x = try await b.update(x, owner: "", expectedPhase: nil)
        x.metadata.labels = ["role": "web", "tier": "1"]
        x = try await b.update(x, owner: "", expectedPhase: nil)
        x.metadata.labels = ["role": "db"]
        x = try await b.update(x, owner: "", expectedPhase: nil)
        x.metadata.labels = ["role": "cache"]
        x = try await b.update(x, owner: "", expectedPhase: nil)
        _ = try await b.create(resource(type, "y", labels: ["role": "web"]), owner: "")
        let events = try await watch.events(4)
        try check(events.map(\.type) == [.created, .updated, .destroyed, .created], "match flips: \(events.map(\.type))")
        try check(events[0].old == nil && events[2].old == nil, "flips carry no old")
        try check(events[3].resource?.metadata.id == "y", "a matching create")
        try await watch.expectNothingBefore { try await b.create(resource(type, "z", labels: ["role": "web"]), owner: "") }
    }

    public static func aggregatedWatch(_ b: any StateBackend) async throws {
        let type = "WatchAgg.test.dev"
        for id in ["a", "b", "c"] { _ = try await b.create(resource(type, id), owner: "") }
        let watch = try await b.watch(WatchRequest(namespace: ns, type: type, options: WatchOptions(bootstrapContents: true, aggregated: true), apiVersion: 1))
        defer { watch.cancel() }
        let first = try await watch.batch()
        try check(first.map(\.type) == [.created, .created, .created, .bootstrapped], "the bootstrap list and BOOTSTRAPPED come as one batch: \(first.map(\.type))")
        _ = try await b.create(resource(type, "d"), owner: "")
        let next = try await watch.batch()
        try check(next.count >= 1 && next[0].resource?.metadata.id == "d", "live events come in batches")
    }

    public static func tailEvents(_ b: any StateBackend) async throws {
        let type = "WatchTail.test.dev"
        var x = try await b.create(resource(type, "x"), owner: "")
        for index in 0..<4 {
            x.metadata.labels = ["n": "\(index)"]
            x = try await b.update(x, owner: "", expectedPhase: nil)
        }
        _ = try await b.create(resource(type, "y"), owner: "")
        let kindTail = try await b.watch(WatchRequest(namespace: ns, type: type, options: WatchOptions(tailEvents: 3)))
        defer { kindTail.cancel() }
        let replay = try await kindTail.events(3)
        try check(replay.map { $0.resource?.metadata.id ?? "" } == ["x", "x", "y"], "the last 3 events of the kind: \(replay.map { $0.resource?.metadata.id ?? "" })")
        try check(replay.map(\.type) == [.updated, .updated, .created], "with their types")
        try await kindTail.expectNothingBefore { try await b.create(resource(type, "z"), owner: "") }

        let idTail = try await b.watch(WatchRequest(namespace: ns, type: type, id: "x", options: WatchOptions(tailEvents: 2)))
        defer { idTail.cancel() }
        let idReplay = try await idTail.events(2)
        try check(idReplay.map { $0.resource?.metadata.version ?? "" } == ["4", "5"], "the last 2 events of the resource: \(idReplay.map { $0.resource?.metadata.version ?? "" })")
        x.metadata.labels = ["n": "last"]
        _ = try await b.update(x, owner: "", expectedPhase: nil)
        try check(try await idTail.events(1)[0].resource?.metadata.version == "6", "then live")
    }

    public static func resumeFromEveryBookmark(_ b: any StateBackend) async throws {
        let type = "WatchResume.test.dev"
        let watch = try await b.watch(WatchRequest(namespace: ns, type: type))
        defer { watch.cancel() }
        var a = try await b.create(resource(type, "a"), owner: "")
        _ = try await b.create(resource(type, "b"), owner: "")
        a.metadata.labels = ["x": "1"]
        a = try await b.update(a, owner: "", expectedPhase: nil)
        try await b.destroy(ns, type, "b", owner: "")
        _ = try await b.create(resource(type, "c"), owner: "")
        let recorded = try await watch.events(5)
        var resumed: [WatchProbe] = []
        defer { for probe in resumed { probe.cancel() } }
        for (index, event) in recorded.enumerated() {
            let probe = try await b.watch(WatchRequest(namespace: ns, type: type, options: WatchOptions(startFromBookmark: event.bookmark)))
            resumed.append(probe)
            let expected = Array(recorded[(index + 1)...])
            let replay = expected.isEmpty ? [] : try await probe.events(expected.count)
            try check(replay == expected, "resume after event \(index) replays exactly the later events")
        }
        // Then nothing more: one change later, the next event of each is that change.
        let barrier = try await b.create(resource(type, "barrier"), owner: "")
        for (index, probe) in resumed.enumerated() {
            let next = try await probe.events(1)[0].resource?.metadata
            try check(next?.id == "barrier" && next?.version == barrier.metadata.version, "resume after event \(index): nothing after the later events but the barrier")
        }
    }
}
