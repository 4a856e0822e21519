import ArgumentParser
import CosiClient
import CosiTLS
import Foundation
import Yams

/// `cosictl gen`: certificates and config contexts.
struct Gen: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Issue certificates (OpenSSL, Ed25519 by default) and write config contexts.",
        discussion: """
        Example:
          cosictl gen ca --out pki/ca
          cosictl gen server --ca pki/ca --host localhost --host 10.0.0.5 --out pki/server
          cosictl gen client --ca pki/ca --name alice --role os:reader --days 90 --out pki/alice
          cosictl gen config --ca-cert pki/ca.crt --cert pki/alice.crt --key pki/alice.key --endpoint 10.0.0.5:50000
        """,
        subcommands: [GenCA.self, GenServer.self, GenClient.self, GenConfig.self]
    )
}

struct KeyOptions: ParsableArguments, Sendable {
    @Option(help: "Key algorithm.") var algorithm: KeyAlgorithm = .ed25519
    @Option(help: "Days of validity.") var days: Int = 365
    @Option(help: "Output path prefix: writes PREFIX.crt and PREFIX.key (mode 0600).") var out: String

    func validate() throws {
        guard days >= 1 else { throw ValidationError("--days must be at least 1") }
    }

    func write(_ certificate: Certificate, _ key: PrivateKey) throws {
        for path in [out + ".crt", out + ".key"] where FileManager.default.fileExists(atPath: path) {
            throw CLIError("\(path) exists already: remove it or choose another --out")
        }
        try writeFile(key.pemEncoded(), to: out + ".key", mode: 0o600)
        try writeFile(certificate.pemEncoded(), to: out + ".crt", mode: 0o644)
        print("wrote \(out).crt and \(out).key")
    }
}

/// Loads the issuing CA from PREFIX.crt and PREFIX.key.
func loadIssuer(_ prefix: String) throws -> CertificateAuthority {
    guard let certificate = try Certificate.load(.file(prefix + ".crt")).first else { throw CLIError("no certificate in \(prefix).crt") }
    let key = try PrivateKey(pem: .file(prefix + ".key"))
    return CertificateAuthority(certificate: certificate, key: key)
}

struct GenCA: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(commandName: "ca", abstract: "A new certificate authority.", discussion: "Example:\n  cosictl gen ca --out pki/ca --days 3650")
    @OptionGroup var key: KeyOptions
    @Option(help: "The CA's common name.") var name = "cosi CA"

    func run() throws {
        let authority = try CertificateAuthority.create(name: name, algorithm: key.algorithm, validity: .days(key.days))
        try key.write(authority.certificate, authority.key)
    }
}

struct GenServer: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(commandName: "server", abstract: "A server certificate for cosid.", discussion: "Example:\n  cosictl gen server --ca pki/ca --host localhost --host 127.0.0.1 --out pki/server")
    @OptionGroup var key: KeyOptions
    @Option(help: "The issuing CA's path prefix (PREFIX.crt, PREFIX.key).") var ca: String
    @Option(help: "A host name or IP address the certificate is for (repeat for several).") var host: [String]

    func validate() throws { guard !host.isEmpty else { throw ValidationError("give at least one --host") } }

    func run() throws {
        let (certificate, privateKey) = try loadIssuer(ca).issueServer(hosts: host, algorithm: key.algorithm, validity: .days(key.days))
        try key.write(certificate, privateKey)
    }
}

struct GenClient: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(commandName: "client", abstract: "A client certificate: the name is the identity, the roles are Organization values.", discussion: "Example:\n  cosictl gen client --ca pki/ca --name alice --role os:reader --out pki/alice")
    @OptionGroup var key: KeyOptions
    @Option(help: "The issuing CA's path prefix (PREFIX.crt, PREFIX.key).") var ca: String
    @Option(help: "The identity (common name).") var name: String
    @Option(help: "A role: os:admin, os:operator, os:reader, os:controller (repeat for several).") var role: [String] = []

    func run() throws {
        let (certificate, privateKey) = try loadIssuer(ca).issueClient(name: name, roles: role, algorithm: key.algorithm, validity: .days(key.days))
        try key.write(certificate, privateKey)
    }
}

struct GenConfig: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Add a context for a client certificate to the config file.", discussion: """
        With --nodes, the context's commands act on every node listed (a NODE column, per-node
        results), as `--nodes` on the command line does; --endpoint or --nodes on a command
        overrides them.

        Examples:
          cosictl gen config --name prod --ca-cert pki/ca.crt --cert pki/alice.crt --key pki/alice.key --endpoint 10.0.0.5:50000
          cosictl gen config --name fleet --ca-cert pki/ca.crt --cert pki/alice.crt --key pki/alice.key --nodes 10.0.0.5,10.0.0.6,10.0.0.7
        """)
    @Option(help: "The context's name.") var name = "default"
    @Option(help: "The CA certificate file the server must chain to.") var caCert: String
    @Option(help: "The client certificate file.") var cert: String
    @Option(help: "The client key file.") var key: String
    @Option(help: "Server endpoint host:port (repeat for several).") var endpoint: [String] = ["127.0.0.1:50000"]
    @Option(help: "Machines the context's commands act on by default, host or host:port; comma-separated or repeated.") var nodes: [String] = []

    func validate() throws {
        for node in nodes.flatMap({ $0.split(separator: ",") }) {
            do { _ = try CosiNode(parsing: String(node)) } catch { throw ValidationError("--nodes: \(error)") }
        }
    }

    func run() throws {
        let path = ConnectionOptions.configPath
        var file = ConnectionOptions.ConfigFile(context: nil, contexts: [:])
        if let text = try? String(contentsOfFile: path, encoding: .utf8), let existing = try? YAMLDecoder().decode(ConnectionOptions.ConfigFile.self, from: text) {
            file = existing
        }
        func absolute(_ path: String) -> String {
            path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        }
        let replaced = file.contexts[name] != nil
        let previous = file.context
        file.contexts[name] = ConnectionOptions.Context(endpoints: endpoint, nodes: nodes.isEmpty ? nil : nodes.flatMap { $0.split(separator: ",").map(String.init) }, ca: absolute(caCert), crt: absolute(cert), key: absolute(key))
        file.context = name
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try writeFile(try YAMLEncoder().encode(file), to: path, mode: 0o600)
        print("\(replaced ? "replaced" : "wrote") context \"\(name)\" in \(path)")
        if let previous, previous != name {
            print("the current context is now \"\(name)\" (it was \"\(previous)\"; `cosictl config use-context \(previous)` goes back)")
        } else if previous == nil {
            print("the current context is now \"\(name)\"")
        }
    }
}

extension KeyAlgorithm: ExpressibleByArgument {}
