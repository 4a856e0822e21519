import CosiClient
import CosiTLS
import CosiTesting
import Foundation

/// The one way tests start the real `cosid`: in a directory of its own (`directory`), listening
/// on 127.0.0.1 on a free port, its log collected in `output`. Stopped by ``stop()`` (or when
/// the value goes away); ``restart()`` brings it back on the same port and directory.
final class CosidProcess: @unchecked Sendable {
    /// Which certificates it serves with.
    enum Certificates {
        /// A per-run ``TestPKI``'s, installed in the directory (`--ca`, `--cert`, `--key`).
        case pki(TestPKI)
        /// Its own development certificates, created on first start in `directory/Certs`.
        case development
        /// A server certificate of its own, `name`, issued by the PKI's CA (one machine of a
        /// fleet).
        case node(TestPKI, name: String)
    }

    /// Where its certificates, data (when durable) and sandbox root live; removed at the end.
    let directory: String
    let pki: TestPKI?
    private(set) var port = 0
    let output = CosidProcessTests.Output()
    private var process = Process()
    private let arguments: [String]
    /// A command cosid runs under (`unshare ...`, which execs it: the process id stays cosid's).
    private let wrapper: [String]

    /// Starts cosid. `durable`: state in `directory/data` (kept across ``restart()``), else in
    /// memory; `controllers` acting on the sandbox `directory/root`; `arguments` come last.
    /// `directory`: one the caller prepared (files the arguments name), else a new one.
    init(
        _ arguments: [String] = [], certificates: Certificates? = nil, durable: Bool = false, controllers: String = "none", directory: String? = nil,
        under wrapper: [String] = []
    ) async throws {
        self.wrapper = wrapper
        self.directory = directory ?? StateBackends.temporaryDirectory()
        let directory = self.directory
        var base = ["--controllers", controllers, "--root", directory + "/root"]
        base += durable ? ["--data-dir", directory + "/data"] : ["--in-memory"]
        let chosen = try certificates ?? .pki(TestPKI())
        switch chosen {
        case .pki(let pki):
            self.pki = pki
            try ReloadTests.install(pki, in: directory)
            base += ["--ca", directory + "/ca.crt", "--cert", directory + "/server.crt", "--key", directory + "/server.key"]
        case .development:
            pki = nil
            base += ["--certs-dir", directory + "/Certs"]
        case .node(let pki, let name):
            self.pki = pki
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let server = try pki.server(commonName: name)
            try writeFile(pki.caPEM, to: directory + "/ca.crt", mode: 0o644)
            try writeFile(ReloadTests.pem(server.certificateChain), to: directory + "/server.crt", mode: 0o644)
            try writeFile(ReloadTests.pem(server.privateKey), to: directory + "/server.key", mode: 0o600)
            base += ["--ca", directory + "/ca.crt", "--cert", directory + "/server.crt", "--key", directory + "/server.key"]
        }
        self.arguments = base + arguments
        do {
            try await start(listen: "127.0.0.1:0")
        } catch {
            stop()
            throw error
        }
    }

    private func start(listen: String) async throws {
        process = Process()
        if let command = wrapper.first {
            process.executableURL = URL(fileURLWithPath: command)
            process.arguments = Array(wrapper.dropFirst()) + [CosidProcessTests.executable.path, "--listen", listen] + arguments
        } else {
            process.executableURL = CosidProcessTests.executable
            process.arguments = ["--listen", listen] + arguments
        }
        let pipe = Pipe()
        let output = self.output
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
        let before = output.value.components(separatedBy: "listening").count
        try process.run()
        if listen.hasSuffix(":0") {
            port = try await CosidProcessTests.port(from: output)
        } else {
            try await CosidProcessTests.waitFor("listening", in: output, after: before)
        }
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        StateBackends.removeDirectory(directory)
    }

    /// SIGTERM, and waits until it has exited.
    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// Stops it and starts it again on the same port and directory (the same state when durable).
    func restart() async throws {
        stop()
        try await start(listen: "127.0.0.1:\(port)")
    }

    /// SIGTERM without waiting; ``waitForExit()`` waits.
    func terminate() { process.terminate() }

    /// Sends `signal` (SIGHUP to reload, SIGKILL to crash it).
    func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
        if signal == SIGKILL { process.waitUntilExit() }
    }

    /// Waits until it has exited (observably, without blocking a task thread); its status.
    func waitForExit() async throws -> Int32 {
        try await eventually("cosid exited") { !process.isRunning }
        return process.terminationStatus
    }

    var isRunning: Bool { process.isRunning }

    /// Its process id.
    var pid: Int32 { process.processIdentifier }

    /// The process's resident memory, in bytes (`VmRSS` of /proc/PID/status).
    func residentBytes() throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { throw CocoaError(.fileReadCorruptFile) }
        return kib * 1024
    }

    /// A client TLS context for a certificate of this PKI.
    func clientContext(name: String = "attacker", roles: [String] = ["os:admin"]) throws -> TLSContext {
        guard let pki else { throw ConformanceFailure("this cosid serves development certificates: use client()") }
        return try pki.clientContext(name: name, roles: roles)
    }

    /// How a client reaches it: the PKI's client certificate, or the development admin's.
    func clientConfiguration(name: String = "tester", roles: [String] = ["os:admin"]) throws -> CosiClientConfiguration {
        if let pki { return CosiClientConfiguration(host: "127.0.0.1", port: port, tls: try pki.client(name: name, roles: roles)) }
        return .development(directory: directory + "/Certs", port: port)
    }

    /// A connected client (see ``clientConfiguration(name:roles:)``).
    func client(name: String = "tester", roles: [String] = ["os:admin"]) async throws -> CosiClient {
        try await CosiClient.connect(try clientConfiguration(name: name, roles: roles))
    }

    /// Runs cosid with exactly `arguments` until it exits (a refusal, `--print-config`): status,
    /// standard output and standard error. The process is waited for on a thread of its own.
    static func run(_ arguments: [String]) async throws -> (status: Int32, out: String, err: String) {
        try await runProcess(CosidProcessTests.executable, arguments)
    }
}

/// Runs an executable to its end, draining both pipes at once, off the tasks' threads.
/// Starts cosictl in the background in `directory` (its config and home there), collecting its
/// standard output and error as they come.
func startCosictl(_ arguments: [String], directory: String) throws -> (process: Process, out: CosidProcessTests.Output, err: CosidProcessTests.Output) {
    let process = Process()
    process.executableURL = CosictlTests.cosictl
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    process.arguments = arguments
    process.environment = ["COSICONFIG": directory + "/none.yaml", "HOME": directory]
    let out = Pipe(), err = Pipe()
    let collected = CosidProcessTests.Output(), errors = CosidProcessTests.Output()
    process.standardOutput = out
    process.standardError = err
    out.fileHandleForReading.readabilityHandler = { collected.append($0.availableData) }
    err.fileHandleForReading.readabilityHandler = { errors.append($0.availableData) }
    try process.run()
    return (process, collected, errors)
}

func runProcess(_ executable: URL, _ arguments: [String], directory: String? = nil, environment: [String: String]? = nil, input: String? = nil) async throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    if let environment { process.environment = environment }
    let out = Pipe(), err = Pipe(), stdin = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = stdin
    try process.run()
    return await withCheckedContinuation { continuation in
        Thread {
            if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
            try? stdin.fileHandleForWriting.close()
            let errors = CosidProcessTests.Output()
            let drained = DispatchSemaphore(value: 0)
            Thread {
                errors.append(err.fileHandleForReading.readDataToEndOfFile())
                drained.signal()
            }.start()
            let outData = out.fileHandleForReading.readDataToEndOfFile()
            drained.wait()
            process.waitUntilExit()
            continuation.resume(returning: (process.terminationStatus, String(decoding: outData, as: UTF8.self), errors.value))
        }.start()
    }
}
