import CosiMessages
import CosiState
import CosiTesting
import Testing

/// The limits that keep every operation on a resource, and every query, cheap and bounded.
@Suite("Limits and the id regexp engine")
struct LimitsTests {
    func resource(_ id: String, labels: [String: String] = [:], annotations: [String: String] = [:]) -> Resource {
        Resource(metadata: Metadata(namespace: "default", type: "Limits.test.dev", id: id, labels: labels, annotations: annotations), spec: Spec(yamlSpec: "x: 1\n"))
    }

    func message(_ body: () async throws -> Void) async -> String? {
        do {
            try await body()
            return nil
        } catch let error as StateError {
            #expect(error.code == .invalidArgument)
            return error.message
        } catch {
            return "\(error)"
        }
    }

    @Test func resourcesOverALimitAreRefusedNamingIt() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        let manyLabels = Dictionary(uniqueKeysWithValues: (0...ResourceLimits.labels).map { ("k\($0)", "v") })
        let labels = await message { _ = try await engine.create(resource("a", labels: manyLabels), owner: "") }
        #expect(labels?.contains("resource.metadata.labels has 1025 entries, more than the limit of 1024") == true, "\(labels ?? "")")
        let longID = await message { _ = try await engine.create(resource(String(repeating: "i", count: 1_025)), owner: "") }
        #expect(longID?.contains("resource.metadata.id is 1025 bytes") == true, "\(longID ?? "")")
        let bigAnnotations = await message {
            _ = try await engine.create(resource("b", annotations: ["note": String(repeating: "n", count: ResourceLimits.annotationBytes)]), owner: "")
        }
        #expect(bigAnnotations?.contains("annotations hold") == true, "\(bigAnnotations ?? "")")
        // At the limit is fine, and so is an update that stays there.
        let atLimit = Dictionary(uniqueKeysWithValues: (0..<ResourceLimits.labels).map { ("k\($0)", "v") })
        var stored = try await engine.create(resource("c", labels: atLimit), owner: "")
        stored.metadata.labels["one-more"] = "v"
        let update = await message { _ = try await engine.update(stored, owner: "") }
        #expect(update?.contains("new_resource.metadata.labels has 1025 entries") == true, "\(update ?? "")")
    }

    @Test func idRegexpsMatchInLinearTime() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        for index in 0..<50 {
            _ = try await engine.create(resource(String(repeating: "a", count: 40) + "!\(index)"), owner: "")
        }
        _ = try await engine.create(resource("aaaa"), owner: "")
        let kind = ResourceKind(namespace: "default", type: "Limits.test.dev")
        // Catastrophic for a backtracking engine; RE2 answers at once.
        let clock = ContinuousClock()
        let start = clock.now
        let matched = try engine.list(kind, query: ResourceQuery(labelQueries: [], idQuery: IDQuery(regexp: "^(a+)+$")))
        #expect(matched.map(\.metadata.id) == ["aaaa"])
        #expect(clock.now - start < .seconds(1))
        // RE2's syntax: what it cannot do in linear time does not compile.
        for pattern in ["(a)\\1", "(?=a)b", "(unclosed"] {
            let error = await message { _ = try ResourceQuery(labelQueries: [], idQuery: IDQuery(regexp: pattern)) }
            #expect(error?.contains("does not compile") == true, "\(pattern): \(error ?? "")")
        }
        let long = await message { _ = try ResourceQuery(labelQueries: [], idQuery: IDQuery(regexp: String(repeating: "a", count: 1_025))) }
        #expect(long?.contains("more than the limit of 1024") == true)
        // Unanchored, UTF-8.
        _ = try await engine.create(resource("nœud-1"), owner: "")
        let unicode = try engine.list(kind, query: ResourceQuery(labelQueries: [], idQuery: IDQuery(regexp: "œud-\\d")))
        #expect(unicode.map(\.metadata.id) == ["nœud-1"])
    }
}
