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
        try await withTestServer(pki: pki, methods: echo) { _, port in
            let context = try TLSContext(role: .client, configuration: pki.client(), deviations: .init(omitCertificate: true))
            let error = await refused(port: port, context)
            #expect(error != nil)
            #expect("\(error!)".contains("certificate"), "\(error!)")
        }
    }

    @Test func certificateFromAnotherCAIsRefused() async throws {
        let other = try TestPKI(caName: "other CA")
        try await withTestServer(pki: pki, methods: echo) { _, port in
            // Trusts our server, but its own certificate comes from another CA.
            var configuration = try other.client()
            configuration.trustRoots = .pem(pki.caPEM)
            let error = await refused(port: port, try TLSContext(role: .client, configuration: configuration))
            #expect(error != nil)
        }
    }

    @Test func expiredCertificateIsRefused() async throws {
        try await withTestServer(pki: pki, methods: echo) { _, port in
            let error = await refused(port: port, try TLSContext(role: .client, configuration: pki.client(expired: true)))
            #expect(error != nil)
            #expect("\(error!)".contains("expired"), "\(error!)")
        }
    }

    @Test func certificateWithoutClientAuthUsageIsRefused() async throws {
        try await withTestServer(pki: pki, methods: echo) { _, port in
            let error = await refused(port: port, try TLSContext(role: .client, configuration: pki.client(usage: .server)))
            #expect(error != nil)
        }
    }

    @Test func tls12OnlyClientIsRefused() async throws {
        try await withTestServer(pki: pki, methods: echo) { _, port in
            let context = try TLSContext(role: .client, configuration: pki.client(), deviations: .init(maximumTLS12: true))
            let error = await refused(port: port, context)
            #expect(error != nil)
            #expect("\(error!)".contains("version"), "\(error!)")
        }
    }

    @Test func wrongALPNIsRefusedAndNoALPNIsAccepted() async throws {
        try await withTestServer(pki: pki, methods: echo) { _, port in
            let wrong = try TLSContext(role: .client, configuration: pki.client(), deviations: .init(alpn: ["h2", "http/1.1"]))
            #expect(await refused(port: port, wrong) != nil)
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
            let error = await refused(port: port, context)
            #expect(error != nil)
            #expect("\(error!)".contains("mismatch") || "\(error!)".contains("verif"), "\(error!)")
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
