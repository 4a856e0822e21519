import CosiClient
import CosiMessages
import CosiRPC
import CosiServer
import CosiTLS
import CosiTesting
import Foundation
import Testing

/// SIGHUP reloads the server certificate and the trusted client CAs without dropping connections.
@Suite("Certificate reload", .timeLimit(.minutes(1)))
struct ReloadTests {
    static func pem(_ source: PEMSource) -> String {
        if case .pem(let text) = source { return text }
        return ""
    }

    static func install(_ pki: TestPKI, in dir: String) throws {
        try writeFile(pki.caPEM, to: dir + "/ca.crt", mode: 0o644)
        try writeFile(pem(pki.server.certificateChain), to: dir + "/server.crt", mode: 0o644)
        try writeFile(pem(pki.server.privateKey), to: dir + "/server.key", mode: 0o600)
    }

    static func connect(_ port: Int, _ tls: TLSConfiguration) async throws -> CosiClient {
        try await CosiClient.connect(CosiClientConfiguration(host: "127.0.0.1", port: port, tls: tls))
    }

    @Test func rotateTheClientCAWhileAWatchStaysOpenThenDropTheOldOne() async throws {
        let dir = StateBackends.temporaryDirectory()
        let old = try TestPKI(caName: "old CA")
        try writeFile(try old.revocationList(), to: dir + "/crl.pem", mode: 0o644)
        let cosid = try await CosidProcess(["--crl", dir + "/crl.pem"], certificates: .pki(old), directory: dir)
        let (port, output) = (cosid.port, cosid.output)
        // The test certificates are valid for 30 days: cosid warns at start.
        try await CosidProcessTests.waitFor("expires in", in: output)
        var reloads = 0
        func reload() async throws {
            cosid.signal(SIGHUP)
            reloads += 1
            try await CosidProcessTests.waitFor("reloaded", in: output, after: reloads)
        }

        // An old client with an open watch.
        let oldClient = try await Self.connect(port, try old.client(name: "old"))
        var watch = oldClient.watchCall(WatchRequest(namespace: "default", type: "Reload.test.dev")).makeAsyncIterator()
        _ = try await watch.next() // ready

        // Rotate without downtime: trust both CAs, serve a certificate of the new one.
        let new = try TestPKI(caName: "new CA")
        try Self.install(new, in: dir)
        try writeFile(old.caPEM + new.caPEM, to: dir + "/ca.crt", mode: 0o644)
        try writeFile(try old.revocationList() + new.revocationList(), to: dir + "/crl.pem", mode: 0o644)
        try await reload()

        // The open watch keeps receiving events over its established connection.
        _ = try await oldClient.create(StateConformance.resource("Reload.test.dev", "after-rotation"), owner: "")
        let event = try #require(try await watch.next()?.event.first)
        #expect(event.resource?.metadata.id == "after-rotation")

        // A new client of the new CA connects (and sees the new server certificate).
        let newClient = try await Self.connect(port, try new.client(name: "new"))
        #expect(try await newClient.info().identity == "new")
        #expect(newClient.connection.serverIdentity?.commonName == "test server")

        // The old CA goes: the old client's connection no longer verifies, and ends.
        try writeFile(new.caPEM, to: dir + "/ca.crt", mode: 0o644)
        try writeFile(try new.revocationList(), to: dir + "/crl.pem", mode: 0o644)
        try await reload()
        await #expect { _ = try await watch.next() } throws: { error in
            (error as? RPCError)?.code == .permissionDenied && "\(error)".contains("no longer verifies")
        }
        try await CosidProcessTests.waitFor("connection revoked", in: output)
        #expect(try await newClient.info().identity == "new", "the others carry on")

        // A certificate of the new CA is revoked: its watch ends, it cannot connect again.
        let revokedTLS = try new.client(name: "revoked")
        let revoked = try await Self.connect(port, revokedTLS)
        var revokedWatch = revoked.watchCall(WatchRequest(namespace: "default", type: "Reload.test.dev")).makeAsyncIterator()
        _ = try await revokedWatch.next() // ready
        try writeFile(try new.revocationList(revoking: [revokedTLS]), to: dir + "/crl.pem", mode: 0o644)
        try await reload()
        await #expect { _ = try await revokedWatch.next() } throws: { error in
            (error as? RPCError)?.code == .permissionDenied && "\(error)".contains("certificate revoked")
        }
        await #expect(throws: (any Error).self) { _ = try await Self.connect(port, revokedTLS).info() }
        #expect(try await newClient.info().identity == "new")

        // A client of the removed CA is refused.
        var stale = try old.client(name: "stale")
        stale.trustRoots = .pem(new.caPEM)
        await #expect(throws: (any Error).self) { _ = try await Self.connect(port, stale).info() }

        // A broken file is reported; the previous material stays in use.
        try writeFile("not a certificate", to: dir + "/server.crt", mode: 0o644)
        cosid.signal(SIGHUP)
        try await CosidProcessTests.waitFor("keeping the previous", in: output)
        let another = try await Self.connect(port, try new.client(name: "another"))
        #expect(try await another.info().identity == "another")

        await oldClient.close()
        await revoked.close()
        await newClient.close()
        await another.close()
    }
}
