import CosiClient
import CosiMessages
import CosiRPC
import CosiTLS
import CosiTesting
import NIOCore
import NIOPosix
import Testing

@Suite("Mutual TLS handshake on 127.0.0.1", .timeLimit(.minutes(1)))
struct HandshakeTests {
    let pki: TestPKI
    let echo = RPCMethodTable([RPCMethod(name: "/test.Echo/Echo", handler: .unary { request, _ in request })])
    let info = RPCMethodTable([
        .unary("/test.Who/Am", Envelope.InfoRequest.self, Envelope.InfoResponse.self) { _, context in
            Envelope.InfoResponse(identity: context.peer.commonName, roles: context.peer.organizations)
        },
    ])

    init() throws { pki = try TestPKI() }

    /// Connects and makes one call (with TLS 1.3 a refused client may only learn so on its first read).
    func call(port: Int, _ context: TLSContext, serverName: String? = nil) async throws {
        let connection = try await RPCClientConnection.connect(host: "127.0.0.1", port: port, tls: context, serverName: serverName, connectTimeout: .seconds(3))
        _ = try await connection.unary("/test.Echo/Echo", request: ByteBuffer(string: "x"), timeout: .seconds(3))
        await connection.close()
    }

    func refused(port: Int, _ context: TLSContext, serverName: String? = nil) async -> (any Error)? {
        do {
            try await call(port: port, context, serverName: serverName)
            return nil
        } catch {
            return error
        }
    }

    /// Why a handshake failed, as each side saw it: the client's error and the reason the
    /// server logged with "TLS handshake refused".
    struct Refusal {
        var client: String
        var server: String
    }

    /// Makes a call with `context` that the server must refuse; returns both sides' reasons.
    func refusal(_ context: TLSContext, pki: TestPKI? = nil) async throws -> Refusal {
        let log = LogCapture()
        return try await withTestServer(pki: pki ?? self.pki, methods: echo, logger: log.logger("server")) { _, port in
            let error = try #require(await refused(port: port, context), "the handshake should fail")
            #expect((error as? RPCError)?.code == .unavailable, "\(error)")
            // The server logs its side once the handshake has failed there.
            func logged() -> String? { log.records.first { $0.message == "TLS handshake refused" }?.metadata["error"] }
            try await eventually("the server logs the refusal", timeout: .seconds(5)) { logged() != nil }
            return Refusal(client: (error as? RPCError)?.message ?? "\(error)", server: try #require(logged(), "the server logged no refusal"))
        }
    }

    @Test func goodClientSucceedsAndTheServerSeesItsIdentity() async throws {
        try await withTestServer(pki: pki, methods: info) { _, port in
            let context = try TLSContext(role: .client, configuration: pki.client(name: "alice", roles: ["os:reader", "os:operator"]))
            let connection = try await RPCClientConnection.connect(host: "127.0.0.1", port: port, tls: context)
            let reply = try Envelope.InfoResponse(serializedBytes: try await connection.unary("/test.Who/Am", request: ByteBuffer()))
            #expect(reply.identity == "alice")
            #expect(reply.roles == ["os:reader", "os:operator"])
            #expect(connection.serverIdentity?.commonName == "test server")
            #expect(connection.serverIdentity?.fingerprint.count == 64)
            await connection.close()
        }
    }

    @Test func clientWithoutCertificateIsRefused() async throws {
        let refusal = try await refusal(try TLSContext(role: .client, configuration: pki.client(), deviations: .init(omitCertificate: true)))
        #expect(refusal.server.contains("peer did not return a certificate"), "\(refusal.server)")
        #expect(refusal.client.contains("alert certificate required"), "\(refusal.client)")
    }

    @Test func certificateFromAnotherCAIsRefused() async throws {
        // Trusts our server, but its own certificate comes from another CA.
        var configuration = try TestPKI(caName: "other CA").client()
        configuration.trustRoots = .pem(pki.caPEM)
        let refusal = try await refusal(try TLSContext(role: .client, configuration: configuration))
        #expect(refusal.server.contains("certificate verification: unable to get local issuer certificate"), "\(refusal.server)")
        #expect(refusal.client.contains("alert unknown ca"), "\(refusal.client)")
    }

    @Test func expiredCertificateIsRefused() async throws {
        let refusal = try await refusal(try TLSContext(role: .client, configuration: pki.client(expired: true)))
        #expect(refusal.server.contains("certificate verification: certificate has expired"), "\(refusal.server)")
        #expect(refusal.client.contains("alert certificate expired"), "\(refusal.client)")
    }

    @Test func certificateWithoutClientAuthUsageIsRefused() async throws {
        let refusal = try await refusal(try TLSContext(role: .client, configuration: pki.client(usage: .server)))
        #expect(refusal.server.contains("certificate verification: unsuitable certificate purpose"), "\(refusal.server)")
        #expect(refusal.client.contains("alert unsupported certificate"), "\(refusal.client)")
    }

    @Test func tls12OnlyClientIsRefused() async throws {
        let refusal = try await refusal(try TLSContext(role: .client, configuration: pki.client(), deviations: .init(maximumTLS12: true)))
        #expect(refusal.server.contains("unsupported protocol"), "\(refusal.server)")
        #expect(refusal.client.contains("alert protocol version"), "\(refusal.client)")
    }

    @Test func wrongALPNIsRefusedAndNoALPNIsAccepted() async throws {
        try await withTestServer(pki: pki, methods: echo) { _, port in
            let wrong = try TLSContext(role: .client, configuration: pki.client(), deviations: .init(alpn: ["h2", "http/1.1"]))
            let error = try #require(await refused(port: port, wrong))
            #expect("\(error)".contains("alert no application protocol"), "\(error)")
            let none = try TLSContext(role: .client, configuration: pki.client(), deviations: .init(alpn: []))
            #expect(await refused(port: port, none) == nil)
            let alsoOurs = try TLSContext(role: .client, configuration: pki.client(), deviations: .init(alpn: ["h2", "cosi-rpc/1"]))
            #expect(await refused(port: port, alsoOurs) == nil)
        }
    }

    @Test func clientRefusesAServerWhoseSANDoesNotMatch() async throws {
        let mismatched = try TestPKI(serverNames: ["other.example"], serverIPs: ["10.9.9.9"])
        try await withTestServer(pki: mismatched, methods: echo) { _, port in
            let context = try TLSContext(role: .client, configuration: mismatched.client())
            let error = try #require(await refused(port: port, context))
            #expect("\(error)".contains("certificate verification: IP address mismatch"), "\(error)")
            // The same server is accepted under a name it does carry.
            #expect(await refused(port: port, context, serverName: "other.example") == nil)
        }
    }

    @Test(arguments: [KeyAlgorithm.ecdsaP256, .rsa2048])
    func otherKeyAlgorithmsWork(_ algorithm: KeyAlgorithm) async throws {
        let pki = try TestPKI(algorithm: algorithm)
        try await withTestServer(pki: pki, methods: echo) { _, port in
            let context = try TLSContext(role: .client, configuration: pki.client(algorithm: algorithm))
            #expect(await refused(port: port, context) == nil)
        }
    }

    @Test func silentPeerIsDisconnectedAfterTheHandshakeTimeout() async throws {
        try await withTestServer(pki: pki, methods: echo, configure: { $0.handshakeTimeout = .milliseconds(300) }) { server, port in
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port).get()
            let clock = ContinuousClock()
            let start = clock.now
            try await channel.closeFuture.get()
            #expect(clock.now - start < .seconds(3))
            _ = server
        }
    }

    @Test func badMaterialGivesAClearError() throws {
        #expect {
            _ = try TLSContext(role: .server, configuration: TLSConfiguration(
                certificateChain: .file("/nonexistent/server.crt"), privateKey: .file("/nonexistent/server.key"), trustRoots: .file("/nonexistent/ca.crt")))
        } throws: { error in
            (error as? TLSError)?.code == .invalidMaterial && "\(error)".contains("/nonexistent/server.crt")
        }
        let client = try pki.client()
        let other = try TestPKI().client()
        #expect {
            _ = try TLSContext(role: .client, configuration: TLSConfiguration(
                certificateChain: client.certificateChain, privateKey: other.privateKey, trustRoots: client.trustRoots))
        } throws: { "\($0)".contains("does not match") }
    }
}
