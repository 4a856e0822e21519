import CosiClient
import CosiMessages
import CosiTesting
import Foundation
import Testing
import Yams

/// cosictl's change commands against a real cosid (changes.md): diff's exit codes, tries that
/// cosid reverts by itself (across a SIGKILL), confirm, revert on error, history and rollback.
@Suite("Changes from cosictl", .timeLimit(.minutes(3)))
struct ChangeCommandTests {
    typealias Setup = CosictlTests.Setup

    static func phase(_ setup: Setup, _ id: String) async throws -> [String: Any] {
        let out = try await setup.run(["get", "changes", id, "-o", "yaml"]).out
        let document = (try? Yams.load(yaml: out)) as? [String: Any]
        return document?["spec"] as? [String: Any] ?? [:]
    }

    static func changeID(_ output: String) -> String? {
        output.firstMatch(of: /change (c[0-9]+)/).map { String($0.1) }
    }

    @Test func diffApplyTryConfirmHistoryAndRollback() async throws {
        let setup = try await Setup(extra: ["--retain-events", "20"])
        try await setup.define(["Things.test.dev"])
        let two = "metadata: {type: Things.test.dev, id: a}\nspec: {value: 1}\n---\nmetadata: {type: Things.test.dev, id: b}\nspec: {value: 1}\n"
        let first = try await setup.run(["diff", "-f", "-"], input: two)
        #expect(first.status == 1, "differences: \(first.err)")
        #expect(first.out.contains("default/Things.test.dev/a: create") && first.out.contains("+++ default/Things.test.dev/a (applied)"), "\(first.out)")
        let applied = try await setup.run(["apply", "-f", "-"], input: two)
        #expect(applied.status == 0, "\(applied.err)")
        #expect(try await setup.run(["diff", "-f", "-"], input: two).status == 0, "no differences")
        // An error is 2, and nothing is written.
        let long = String(repeating: "i", count: 1_100)
        let bad = try await setup.run(["diff", "-f", "-"], input: "metadata: {type: Things.test.dev, id: a}\nspec: {value: 2}\n---\nmetadata: {type: Things.test.dev, id: \(long)}\nspec: {}\n")
        #expect(bad.status == 2, "\(bad.out)\(bad.err)")
        #expect(bad.err.contains("resource 2 of 2"), "\(bad.err)")

        // A try: the other writer is refused, naming the change; confirm keeps it.
        let tried = try await setup.run(["apply", "-f", "-", "--try", "60s"], input: "metadata: {type: Things.test.dev, id: a}\nspec: {value: 2}\n")
        #expect(tried.status == 0, "\(tried.err)")
        let id = try #require(Self.changeID(tried.out), "\(tried.out)")
        #expect(try await Self.phase(setup, id)["phase"] as? String == "trying")
        let refused = try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: a}\nspec: {value: 3}\n")
        #expect(refused.status == 1)
        #expect(refused.err.contains("FAILED_PRECONDITION") && refused.err.contains("part of change \(id)"), "\(refused.err)")
        let listed = try await setup.run(["get", "changes"])
        #expect(listed.out.contains(id) && listed.out.contains("trying"), "\(listed.out)")
        #expect(try await setup.run(["confirm", id]).status == 0)
        #expect(try await Self.phase(setup, id)["phase"] as? String == "confirmed")
        let revertConfirmed = try await setup.run(["revert", id])
        #expect(revertConfirmed.status == 1 && revertConfirmed.err.contains("is confirmed, not being tried"), "\(revertConfirmed.err)")

        // History: who and which change; rollback to version 1 is a new version with its spec.
        let history = try await setup.run(["history", "Things.test.dev", "a"])
        #expect(history.status == 0, "\(history.err)")
        let rows = history.out.split(separator: "\n").dropFirst().map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.map { $0[0] } == ["1", "2"], "\(history.out)")
        #expect(rows.allSatisfy { $0.count == 6 && $0[4] == rows[0][4] && $0[3] == ($0[0] == "1" ? "created" : "updated") }, "\(history.out)")
        #expect(rows[1].last == id, "\(history.out)")
        let rollback = try await setup.run(["rollback", "Things.test.dev", "a", "--to-version", "1"])
        #expect(rollback.status == 0, "\(rollback.err)")
        let value = try await setup.run(["get", "Things.test.dev", "a", "-o", "jsonpath={.metadata.version} {.spec.value}"])
        #expect(value.out == "3 1\n", "\(value.out)")
        let dry = try await setup.run(["rollback", "Things.test.dev", "a", "--to-version", "2", "--dry-run"])
        #expect(dry.status == 1 && dry.out.contains("-  value: 1") && dry.out.contains("+  value: 2"), "\(dry.out)")

        // Past the log's retention (20 events; compaction runs after 4,096 events): a clear
        // error naming the oldest version held.
        #expect(try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: a}\nspec: {value: 100}\n").status == 0)
        let client = try await setup.client()
        _ = try await client.applyChange((0..<4_200).map { Resource(metadata: Metadata(namespace: "default", type: "Things.test.dev", id: "filler-\($0)"), spec: Spec(yamlSpec: "value: 0\n")) })
        await client.close()
        let gone = try await setup.run(["rollback", "Things.test.dev", "a", "--to-version", "1"])
        #expect(gone.status == 1)
        #expect(gone.err.contains("version 1 of default/Things.test.dev/a is older than the event log's retention: the oldest version held is"), "\(gone.err)")
    }

    @Test func aTryIsRevertedAtItsDeadlineAcrossASigkill() async throws {
        let setup = try await Setup(durable: true)
        try await setup.define(["Things.test.dev"])
        #expect(try await setup.run(["apply", "-f", "-"], input: "metadata: {type: Things.test.dev, id: a}\nspec: {value: 1}\n").status == 0)
        let tried = try await setup.run(["apply", "-f", "-", "--try", "6s"], input: "metadata: {type: Things.test.dev, id: a}\nspec: {value: 2}\n---\nmetadata: {type: Things.test.dev, id: new}\nspec: {value: 1}\n")
        #expect(tried.status == 0, "\(tried.err)")
        let id = try #require(Self.changeID(tried.out), "\(tried.out)")
        let deadline = try #require(try await Self.phase(setup, id)["deadlineMillis"] as? Int)
        setup.cosid.signal(SIGKILL)
        try await setup.restart()
        try await eventually("reverted after the restart") { try await Self.phase(setup, id)["phase"] as? String == "reverted" }
        let record = try await Self.phase(setup, id)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let ended = try #require(formatter.date(from: record["ended"] as? String ?? ""))
        let endedMillis = Int(ended.timeIntervalSince1970 * 1000)
        #expect(endedMillis >= deadline && endedMillis - deadline <= 1000, "reverted at the original deadline: \(endedMillis - deadline) ms after it")
        #expect((record["reason"] as? String)?.contains("not confirmed") == true)
        #expect(try await setup.run(["get", "Things.test.dev", "a", "-o", "jsonpath={.spec.value}"]).out == "1\n")
        #expect(try await setup.run(["get", "Things.test.dev", "new"]).status == 1, "what the change created is gone")
    }

    @Test func revertOnErrorRevertsWhenTheStatusReportsTheError() async throws {
        let setup = try await Setup(controllers: "kernel-params")
        let tried = try await setup.run(["apply", "-f", "-", "--try", "5m", "--revert-on-error"], input: "metadata: {type: KernelParamSpecs.runtime.cosi.dev, id: net.cosi.no-such-parameter}\nspec: {value: \"1\"}\n")
        #expect(tried.status == 0, "\(tried.err)")
        let id = try #require(Self.changeID(tried.out), "\(tried.out)")
        try await eventually("reverted on the status's error") { try await Self.phase(setup, id)["phase"] as? String == "reverted" }
        let record = try await Self.phase(setup, id)
        #expect((record["reason"] as? String)?.contains("reports an error") == true, "\(record)")
        #expect(try await setup.run(["get", "KernelParamSpecs.runtime.cosi.dev", "net.cosi.no-such-parameter"]).status == 1, "the created spec is gone")
        // Within 1 s of the status reporting the error (its first version with the error).
        let client = try await setup.client()
        let status = try await client.history(namespace: "runtime", type: "KernelParamStatuses.runtime.cosi.dev", id: "net.cosi.no-such-parameter")
        await client.close()
        let reported = try #require(status.entries.first { $0.resource?.spec.yamlSpec.contains("error") == true }?.time?.seconds)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let ended = try #require(formatter.date(from: record["ended"] as? String ?? ""))
        #expect(Int64(ended.timeIntervalSince1970) - reported <= 1, "reverted within 1 s of the error (to the second)")
    }

    /// The README's demonstration: a route tried in a sandbox namespace, never confirmed (the
    /// operator is cut off), is taken back by cosid at the deadline.
    @Test(.enabled(if: getuid() == 0, "needs root to make a network namespace (ip netns add); CI runs as root"))
    func aTriedRouteThatIsNotConfirmedIsRevertedAtTheDeadline() async throws {
        let name = "cosi-c-" + String(UInt32.random(in: 0 ... .max), radix: 16)
        let ip = URL(fileURLWithPath: "/usr/sbin/ip")
        #expect(try await runProcess(ip, ["netns", "add", name]).status == 0)
        defer { _ = try? Process.run(ip, arguments: ["netns", "del", name]).waitUntilExit() }
        #expect(try await runProcess(ip, ["-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]).status == 0)
        let setup = try await Setup(controllers: "links,addresses,routes", extra: ["--netns", "/run/netns/\(name)"])
        let base = "metadata: {namespace: network, type: LinkSpecs.net.cosi.dev, id: veth0}\nspec: {}\n---\nmetadata: {namespace: network, type: AddressSpecs.net.cosi.dev, id: veth0/10.99.0.1/24}\nspec: {}\n"
        #expect(try await setup.run(["apply", "-f", "-"], input: base).status == 0)
        try await eventually("the address is up") { try await runProcess(ip, ["-n", name, "addr", "show", "veth0"]).out.contains("10.99.0.1/24") }
        let tried = try await setup.run(["apply", "-f", "-", "--try", "6s"], input: "metadata: {namespace: network, type: RouteSpecs.net.cosi.dev, id: 10.98.0.0/16}\nspec: {gateway: 10.99.0.254}\n")
        #expect(tried.status == 0, "\(tried.err)")
        let id = try #require(Self.changeID(tried.out), "\(tried.out)")
        try await eventually("the route is in the kernel") { try await runProcess(ip, ["-n", name, "route"]).out.contains("10.98.0.0/16 via 10.99.0.254") }
        try await eventually("reverted at the deadline", timeout: .seconds(20)) { try await Self.phase(setup, id)["phase"] as? String == "reverted" }
        try await eventually("the route is gone") { !(try await runProcess(ip, ["-n", name, "route"]).out.contains("10.98.0.0/16")) }
        // The spec the change created: torn down by the revert, destroyed once the controller let go.
        try await eventually("the route spec is destroyed") { try await setup.run(["get", "RouteSpecs.net.cosi.dev", "10.98.0.0/16", "-n", "network"]).status == 1 }
        #expect(try await runProcess(ip, ["-n", name, "addr", "show", "veth0"]).out.contains("10.99.0.1/24"), "what the change did not touch stays")
    }
}
