import CosiTLS
import CosiTesting
import Foundation

/// A `cosid` process for one test: in memory, no built-in controllers, certificates from a
/// per-run ``TestPKI``, listening on 127.0.0.1 on a free port. Stopped by ``stop()`` (or when
/// the value goes away).
final class CosidProcess: @unchecked Sendable {
    let pki: TestPKI
    let port: Int
    let output: CosidProcessTests.Output
    private let process: Process
    private let directory: String

    init(_ arguments: [String] = [], pki: TestPKI? = nil) async throws {
        let pki = try pki ?? TestPKI()
        self.pki = pki
        directory = StateBackends.temporaryDirectory()
        try ReloadTests.install(pki, in: directory)
        process = Process()
        process.executableURL = CosidProcessTests.executable
        process.arguments = [
            "--listen", "127.0.0.1:0", "--in-memory", "--controllers", "none",
            "--ca", directory + "/ca.crt", "--cert", directory + "/server.crt", "--key", directory + "/server.key",
        ] + arguments
        let pipe = Pipe()
        let output = CosidProcessTests.Output()
        self.output = output
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
        try process.run()
        do {
            port = try await CosidProcessTests.port(from: output)
        } catch {
            process.terminate()
            throw error
        }
    }

    deinit { stop() }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        StateBackends.removeDirectory(directory)
    }

    var isRunning: Bool { process.isRunning }

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
        try pki.clientContext(name: name, roles: roles)
    }
}
