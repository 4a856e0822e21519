import CosiClient
import CosiMessages
import CosiTesting
import Foundation
import Testing

/// The machine, kept, where it is the process's behaviour: the sandbox rule and cosid's own
/// namespaces. Tests that change the kernel run cosid in namespaces they make, as root.
@Suite("The machine, kept (cosid processes)", .timeLimit(.minutes(2)))
struct MachineKeptTests {
    static let unshare = ["/usr/bin/unshare", "--uts", "--mount", "--propagation", "private"]

    static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        _ = gethostname(&buffer, 255)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The host name in the UTS namespace of process `pid` (`nsenter --uts hostname`), or set it.
    static func hostname(of pid: Int32, set name: String? = nil) async throws -> String {
        let result = try await runProcess(URL(fileURLWithPath: "/usr/bin/nsenter"), ["--target", "\(pid)", "--uts", "hostname"] + (name.map { [$0] } ?? []))
        #expect(result.status == 0, "nsenter: \(result.err)")
        return result.out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func declare(_ client: CosiClient, _ hostname: String) async throws {
        _ = try await client.create(Resource(
            metadata: Metadata(namespace: "network", type: "HostnameSpecs.net.cosi.dev", id: "hostname"), spec: Spec(yamlSpec: "hostname: \(hostname)\n")
        ))
    }

    static func status(_ client: CosiClient) async throws -> String {
        (try? await client.get(namespace: "network", type: "HostnameStatuses.net.cosi.dev", id: "hostname"))?.spec.yamlSpec ?? ""
    }

    @Test func aSandboxInTheHostsNamespacesLeavesTheLiveHostnameAloneAndSaysHowToKeepIt() async throws {
        let before = Self.hostname()
        let cosid = try await CosidProcess(controllers: "hostname,mounts")
        try await withCosiClient(try cosid.clientConfiguration()) { client in
            try await Self.declare(client, "sandboxed-only")
            try await eventually("the file") { (try? String(contentsOfFile: cosid.directory + "/root/etc/hostname", encoding: .utf8)) == "sandboxed-only\n" }
            try await eventually("reported from the file") { try await Self.status(client).contains("hostname: sandboxed-only") }
        }
        #expect(Self.hostname() == before, "the host's hostname is untouched")
        #expect(try !String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8).contains(cosid.directory), "nothing is mounted in the host's namespace")
        #expect(cosid.output.value.contains("the live hostname and the mounts controller off"), "the log says what is off: \(cosid.output.value)")
        #expect(cosid.output.value.contains("unshare --uts --mount --propagation private"), "and how to start it so")
    }

    @Test(.enabled(if: getuid() == 0, "needs root to make a UTS namespace (unshare); CI runs as root"))
    func inItsOwnUTSNamespaceTheLiveHostnameIsSetAndKept() async throws {
        let before = Self.hostname()
        let cosid = try await CosidProcess(["--resync-interval", "1"], controllers: "hostname", under: Self.unshare)
        try await withCosiClient(try cosid.clientConfiguration()) { client in
            try await Self.declare(client, "kept-live")
            try await eventually("the kernel's hostname in cosid's namespace") { try await Self.hostname(of: cosid.pid) == "kept-live" }
            try await eventually("reported from uname") { try await Self.status(client).contains("hostname: kept-live") }
            // Changed by hand inside the namespace: put back within the resync interval.
            _ = try await Self.hostname(of: cosid.pid, set: "by-hand")
            try await eventually("put back") { try await Self.hostname(of: cosid.pid) == "kept-live" }
            try await eventually("counted, with what was found") {
                let status = try await Self.status(client)
                return status.contains("driftCorrections: 1") && status.contains("kernel hostname by-hand")
            }
        }
        #expect(Self.hostname() == before, "the host's hostname is untouched")
        #expect(!cosid.output.value.contains("the live hostname off"))
    }

    @Test func aSandboxInTheHostsNetworkNamespaceLeavesTheNetworkAloneAndSaysHow() async throws {
        let cosid = try await CosidProcess(controllers: "links,addresses,routes")
        try await withCosiClient(try cosid.clientConfiguration()) { client in
            _ = try await client.create(Resource(
                metadata: Metadata(namespace: "network", type: "AddressSpecs.net.cosi.dev", id: "lo/10.250.0.1/32"), spec: Spec(yamlSpec: "{}\n")
            ))
            try await eventually("started") { cosid.output.value.contains("the network controllers off") }
            let statuses = try await client.list(namespace: "network", type: "AddressStatuses.net.cosi.dev")
            #expect(statuses.isEmpty, "nothing of the host's network is reported or kept")
        }
        #expect(cosid.output.value.contains("--netns /run/netns/NAME"), "the log says how to run them: \(cosid.output.value)")
    }

    @Test(.enabled(if: getuid() == 0, "needs root to make a network namespace (ip netns add); CI runs as root"))
    func withNetnsTheNetworkControllersActThereAndCosidListensWhereItRuns() async throws {
        let name = "cosi-p-" + String(UInt32.random(in: 0 ... .max), radix: 16)
        let ip = URL(fileURLWithPath: "/usr/sbin/ip")
        #expect(try await runProcess(ip, ["netns", "add", name]).status == 0)
        defer { _ = try? Process.run(ip, arguments: ["netns", "del", name]).waitUntilExit() }
        #expect(try await runProcess(ip, ["-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]).status == 0)
        let cosid = try await CosidProcess(["--netns", "/run/netns/\(name)"], controllers: "links,addresses")
        try await withCosiClient(try cosid.clientConfiguration()) { client in
            _ = try await client.create(Resource(metadata: Metadata(namespace: "network", type: "LinkSpecs.net.cosi.dev", id: "veth0"), spec: Spec(yamlSpec: "{}\n")))
            _ = try await client.create(Resource(
                metadata: Metadata(namespace: "network", type: "AddressSpecs.net.cosi.dev", id: "veth0/10.99.0.1/24"), spec: Spec(yamlSpec: "{}\n")
            ))
            try await eventually("the address in the namespace") { try await runProcess(ip, ["-n", name, "addr", "show", "veth0"]).out.contains("inet 10.99.0.1/24") }
            let removed = try await runProcess(ip, ["-n", name, "addr", "del", "10.99.0.1/24", "dev", "veth0"])
            #expect(removed.status == 0, "\(removed.err)")
            try await eventually("back") { try await runProcess(ip, ["-n", name, "addr", "show", "veth0"]).out.contains("inet 10.99.0.1/24") }
            let links = try await client.list(namespace: "network", type: "LinkStatuses.net.cosi.dev").map(\.metadata.id)
            #expect(Set(links) == ["lo", "veth0", "veth1"], "the statuses are the namespace's, not the host's: \(links)")
        }
        #expect(!cosid.output.value.contains("the network controllers off"))
    }

    /// A command run in cosid's mount namespace.
    static func inMounts(of pid: Int32, _ command: [String]) async throws -> (status: Int32, out: String, err: String) {
        try await runProcess(URL(fileURLWithPath: "/usr/bin/nsenter"), ["--target", "\(pid)", "--mount"] + command)
    }

    static func mountStatus(_ client: CosiClient, _ id: String) async throws -> String {
        (try? await client.get(namespace: "runtime", type: "MountStatuses.runtime.cosi.dev", id: id))?.spec.yamlSpec ?? ""
    }

    @Test(.enabled(if: getuid() == 0, "needs root to make a mount namespace (unshare); CI runs as root"))
    func declaredMountsAreMadeKeptAndUndoneInCosidsOwnMountNamespace() async throws {
        let cosid = try await CosidProcess(controllers: "mounts", under: Self.unshare)
        let data = cosid.directory + "/root/mnt/data"
        let bound = cosid.directory + "/root/mnt/bound"
        let source = cosid.directory + "/root/srv/source"  // under the root: a sandbox binds only its own files
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try "from the source\n".write(toFile: source + "/file", atomically: true, encoding: .utf8)
        func mounted(_ point: String) async throws -> String? {
            let table = try await Self.inMounts(of: cosid.pid, ["cat", "/proc/self/mountinfo"]).out
            return table.split(separator: "\n").first { $0.split(separator: " ").dropFirst(4).first.map(String.init) == point }.map(String.init)
        }
        try await withCosiClient(try cosid.clientConfiguration()) { client in
            _ = try await client.create(Resource(
                metadata: Metadata(namespace: "runtime", type: "MountSpecs.runtime.cosi.dev", id: "/mnt/data"),
                spec: Spec(yamlSpec: "source: scratch\nfsType: tmpfs\noptions: [nosuid, nodev, size=4m]\n")
            ))
            _ = try await client.create(Resource(
                metadata: Metadata(namespace: "runtime", type: "MountSpecs.runtime.cosi.dev", id: "/mnt/bound"),
                spec: Spec(yamlSpec: "source: \(source)\nfsType: none\noptions: [bind, ro]\n")
            ))
            try await eventually("the tmpfs is mounted") { try await mounted(data)?.contains("nosuid,nodev") == true }
            #expect(try await mounted(data)?.contains("size=4096k") == true, "the filesystem's option is passed")
            try await eventually("the bind mount is mounted, read-only") { try await mounted(bound)?.contains(" ro,") == true }
            #expect(try await Self.inMounts(of: cosid.pid, ["cat", bound + "/file"]).out == "from the source\n")
            try await eventually("reported") {
                let status = try await Self.mountStatus(client, "/mnt/data")
                return status.contains("fsType: tmpfs") && status.contains("nosuid") && status.contains("driftCorrections: 0")
            }
            // Unmounted by hand: back, and counted.
            #expect(try await Self.inMounts(of: cosid.pid, ["umount", data]).status == 0)
            try await eventually("mounted again") { try await mounted(data) != nil }
            try await eventually("counted") { try await Self.mountStatus(client, "/mnt/data").contains("driftCorrections: 1") }

            // Busy: the spec stays tearing down with the error, and goes once the mount is free.
            let holder = Process()
            holder.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            // It stays inside the mount until its input ends.
            holder.arguments = ["--target", "\(cosid.pid)", "--mount", "/bin/sh", "-c", "cd '\(data)' && echo inside && exec cat > /dev/null"]
            let input = Pipe()
            let output = Pipe()
            holder.standardInput = input
            holder.standardOutput = output
            try holder.run()
            defer { if holder.isRunning { holder.terminate() } }
            #expect(String(decoding: output.fileHandleForReading.availableData, as: UTF8.self) == "inside\n")
            _ = try await client.teardown(namespace: "runtime", type: "MountSpecs.runtime.cosi.dev", id: "/mnt/data")
            do {
                try await eventually("busy, said in the status", timeout: .seconds(5)) { try await Self.mountStatus(client, "/mnt/data").lowercased().contains("busy") }
            } catch {
                Issue.record("status: \(try await Self.mountStatus(client, "/mnt/data")) mounted: \(try await mounted(data) ?? "no") spec: \(try await client.get(namespace: "runtime", type: "MountSpecs.runtime.cosi.dev", id: "/mnt/data").metadata) log: \(cosid.output.value.suffix(1500))")
                throw error
            }
            #expect(try await client.get(namespace: "runtime", type: "MountSpecs.runtime.cosi.dev", id: "/mnt/data").metadata.phase == "tearingDown")
            #expect(try await mounted(data) != nil)
            try input.fileHandleForWriting.close()
            do {
                try await eventually("unmounted once free", timeout: .seconds(15)) { try await mounted(data) == nil }
            } catch {
                Issue.record("status: \(try await Self.mountStatus(client, "/mnt/data")) holder: \(holder.isRunning) log: \(cosid.output.value.suffix(2500))")
                throw error
            }
            try await eventually("the spec may go: its finalizer is removed, its status gone") {
                let spec = try await client.get(namespace: "runtime", type: "MountSpecs.runtime.cosi.dev", id: "/mnt/data")
                let status = try? await client.get(namespace: "runtime", type: "MountStatuses.runtime.cosi.dev", id: "/mnt/data")
                return spec.metadata.finalizers.isEmpty && status == nil
            }
            #expect(FileManager.default.fileExists(atPath: data), "the mount point is left")

            // What could reach the host's files is refused in a sandbox, before anything is mounted.
            for (id, yaml) in [
                ("/mnt/proc", "source: proc\nfsType: proc\n"),
                ("/mnt/etc", "source: /etc\nfsType: none\noptions: [bind]\n"),
            ] {
                _ = try await client.create(Resource(metadata: Metadata(namespace: "runtime", type: "MountSpecs.runtime.cosi.dev", id: id), spec: Spec(yamlSpec: yaml)))
                try await eventually("\(id) refused") { try await Self.mountStatus(client, id).contains("a sandbox never touches the host") }
                #expect(try await mounted(cosid.directory + "/root" + id) == nil, "\(id) is not mounted")
            }
        }
        #expect(try !String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8).contains(cosid.directory), "nothing is mounted in the host's namespace")
    }
}
