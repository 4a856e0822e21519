import CosiController
import CosiControllerRuntime
import CosiMessages
import CosiOSControllers
import CosiState
import CosiTesting
import Foundation
import Testing

/// The machine, kept: what the built-in controllers do when someone else changes what they keep.
extension OSControllerTests {
    func statusFields(_ engine: StateEngine, _ namespace: String, _ type: String, _ id: String) -> String {
        status(engine, namespace, type, id) ?? ""
    }

    /// Waits until the controller has handled everything that woke it and waits for more.
    func idle(_ runtime: ControllerRuntime, _ name: String) async throws {
        try await eventually("\(name) reconciled what woke it") { runtime.queue(of: name).map { $0.isWaiting } ?? false }
    }

    @Test(arguments: [
        ("hostname", "network", "HostnameSpecs.net.cosi.dev", "HostnameStatuses.net.cosi.dev", "hostname", "hostname: kept\n", "etc/hostname"),
        ("resolvers", "network", "ResolverSpecs.net.cosi.dev", "ResolverStatuses.net.cosi.dev", "resolvers", "dnsServers: [10.0.0.53] # kept\n", "etc/resolv.conf"),
        ("time-servers", "network", "TimeServerSpecs.net.cosi.dev", "TimeServerStatuses.net.cosi.dev", "timeservers", "timeServers: [ntp.kept]\n", "etc/systemd/timesyncd.conf.d/cosi.conf"),
        ("hosts", "network", "StaticHostSpecs.net.cosi.dev", "StaticHostStatuses.net.cosi.dev", "10.0.0.7", "hostnames: [kept]\n", "etc/hosts"),
    ])
    func aKeptFileIsPutBackAndTheCorrectionReported(
        _ controller: String, _ namespace: String, _ specType: String, _ statusType: String, _ id: String, _ yaml: String, _ path: String
    ) async throws {
        let log = LogCapture()
        try await withMachine(log: log) { engine, root, runtime in
            try await apply(engine, namespace, specType, id, yaml)
            try await eventually("the status") { statusFields(engine, namespace, statusType, id).contains("driftCorrections: 0") }
            try await idle(runtime, controller)
            let declared = try #require(file(root, path))
            // hosts keeps the lines it does not manage: its block is what is put back.
            let restored: (String?) -> Bool = controller == "hosts" ? { $0?.contains(declared) == true } : { $0 == declared }

            // Rewritten, edited in place, removed: each put back and counted.
            let changes: [(String, @Sendable () throws -> Void)] = [
                ("rewritten", { try root.replace(path, with: "hacked\n") }),
                ("edited in place", { try root.writeInPlace(path, "edited by hand\n") }),
                ("removed", { _ = unlink(root.resolve(path)) }),
            ]
            for (index, (what, change)) in changes.enumerated() {
                try change()
                do {
                    try await eventually("\(what): put back", timeout: .seconds(5)) { restored(file(root, path)) }
                } catch {
                    Issue.record("\(what): not put back: \(file(root, path) ?? "nil") vs \(declared); \(statusFields(engine, namespace, statusType, id))")
                    throw error
                }
                do {
                    try await eventually("\(what): counted", timeout: .seconds(5)) { statusFields(engine, namespace, statusType, id).contains("driftCorrections: \(index + 1)") }
                } catch {
                    Issue.record("\(what): not counted: \(statusFields(engine, namespace, statusType, id)) \(try engine.get(ResourceAddress(namespace: namespace, type: statusType, id: id)).metadata.annotations) \(log.records.map { "\($0.message) \($0.metadata)" })")
                    throw error
                }
                try await idle(runtime, controller)
            }
            let fields = statusFields(engine, namespace, statusType, id)
            #expect(fields.contains("lastDrift:") && (fields.contains("found: (no file)") || fields.contains("found: (no entry)")), "\(fields)")
            #expect(log.records.filter { $0.message == "drift corrected" && $0.metadata["controller"] == controller }.count == 3)

            // Its own writes are not drift: a new spec rewrites the file, the count stays.
            try await apply(engine, namespace, specType, id, yaml.replacingOccurrences(of: "kept", with: "changed").replacingOccurrences(of: "10.0.0.53", with: "10.0.0.54"))
            try await eventually("the new spec applied") { file(root, path) != declared && (file(root, path)?.contains("changed") == true || file(root, path)?.contains("10.0.0.54") == true) }
            try await idle(runtime, controller)
            #expect(statusFields(engine, namespace, statusType, id).contains("driftCorrections: 3"))
            #expect(log.records.filter { $0.message == "drift corrected" }.count == 3)
        }
    }

    @Test func aKernelParameterChangedByHandIsPutBackAtTheNextResync() async throws {
        let timers = ManualTimers()
        try await withMachine(timers: timers) { engine, root, runtime in
            try await apply(engine, "runtime", "KernelParamSpecs.runtime.cosi.dev", "vm.swappiness", "value: \"10\"\n")
            try await eventually("written") { file(root, "proc/sys/vm/swappiness") == "10\n" }
            try await idle(runtime, "kernel-params")
            try root.writeInPlace("proc/sys/vm/swappiness", "99\n")
            // procfs gives no events: nothing happens until the resync, which is armed at the interval.
            try await eventually("the resync armed") { timers.waiting == 1 }
            #expect(timers.asked.last == .seconds(10))
            #expect(file(root, "proc/sys/vm/swappiness") == "99\n")
            timers.fireAll()
            try await eventually("put back") { file(root, "proc/sys/vm/swappiness") == "10\n" }
            try await eventually("reported as read back, and counted") {
                let fields = statusFields(engine, "runtime", "KernelParamStatuses.runtime.cosi.dev", "vm.swappiness")
                return fields.contains("value: '10'") && fields.contains("driftCorrections: 1") && fields.contains("found: '99'")
            }
        }
    }

    @Test func aFailedApplyIsRetriedWithBackoffUntilItSucceeds() async throws {
        let timers = ManualTimers()
        try await withMachine(timers: timers) { engine, root, runtime in
            // A parameter that does not exist yet (a module not loaded).
            try await apply(engine, "runtime", "KernelParamSpecs.runtime.cosi.dev", "net.cosi.late", "value: \"1\"\n")
            try await eventually("reported") { statusFields(engine, "runtime", "KernelParamStatuses.runtime.cosi.dev", "net.cosi.late").contains("no such kernel parameter") }
            for _ in 0..<4 {
                try await idle(runtime, "kernel-params")
                try await eventually("a retry armed") { timers.waiting == 1 }
                timers.fireAll()
            }
            try await idle(runtime, "kernel-params")
            // 0.5 s, doubling, up to the resync interval.
            #expect(Array(timers.asked.prefix(5)) == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8)])
            // It appears, with no change of the spec: the next retry applies it.
            try FileManager.default.createDirectory(atPath: root.resolve("proc/sys/net/cosi"), withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: root.resolve("proc/sys/net/cosi/late"), contents: Data("0\n".utf8)))
            timers.fireAll()
            try await eventually("applied") { file(root, "proc/sys/net/cosi/late") == "1\n" }
            try await eventually("no error") { !statusFields(engine, "runtime", "KernelParamStatuses.runtime.cosi.dev", "net.cosi.late").contains("error") }
            try await eventually("then the resync is armed") { timers.asked.last == .seconds(10) }
        }
    }

    @Test func anObjectThatFlapsIsLeftAloneUntilItsSpecChanges() async throws {
        try await withMachine { engine, root, runtime in
            try await apply(engine, "network", "HostnameSpecs.net.cosi.dev", "hostname", "hostname: mine\n")
            try await eventually("written") { file(root, "etc/hostname") == "mine\n" }
            // A second writer that reverts the file each time: 5 corrections, then no more.
            for flip in 1...DriftLedger.flips {
                try await idle(runtime, "hostname")
                try root.replace("etc/hostname", with: "theirs\n")
                try await eventually("put back (\(flip))") { file(root, "etc/hostname") == "mine\n" }
            }
            try await eventually("left alone, and says so") {
                statusFields(engine, "network", "HostnameStatuses.net.cosi.dev", "hostname").contains("left alone until the spec changes")
            }
            try await idle(runtime, "hostname")
            let woken = runtime.queue(of: "hostname")?.deliveredCount ?? 0
            try root.replace("etc/hostname", with: "theirs\n")
            // The change woke the controller, and it did not fight.
            try await eventually("the change was seen") { (runtime.queue(of: "hostname")?.deliveredCount ?? 0) > woken }
            try await idle(runtime, "hostname")
            #expect(file(root, "etc/hostname") == "theirs\n")
            #expect(statusFields(engine, "network", "HostnameStatuses.net.cosi.dev", "hostname").contains("hostname: theirs"), "the status reports the machine")
            // A new spec: taken up again.
            try await apply(engine, "network", "HostnameSpecs.net.cosi.dev", "hostname", "hostname: mine2\n")
            try await eventually("resumed") { file(root, "etc/hostname") == "mine2\n" }
            try await eventually("no error") { !statusFields(engine, "network", "HostnameStatuses.net.cosi.dev", "hostname").contains("error") }
        }
    }
}
