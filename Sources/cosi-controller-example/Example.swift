import ArgumentParser
import CosiClient
import CosiController
import CosiMessages
import CosiTLS

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `cosi-controller-example`: a remote controller that derives one resource type from another.
///
/// Against a `cosid` started with `scripts/run` (development certificates in ./Certs), it registers
/// a controller "greeter" that turns every `Names.example.cosi.dev` resource {name: X} in namespace
/// `default` into a `Greetings.example.cosi.dev` resource {greeting: "Hello, X!"}, keeps them in
/// step, and cleans them up when a name is deleted (it holds a finalizer on each name until its
/// greeting is gone). Stop it and start it again: it reconnects and carries on.
@main
struct Example: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cosi-controller-example",
        abstract: "A remote COSI controller: derives one resource type from another.",
        discussion: """
        Start cosid (scripts/run), then, from the same directory:
          swift run cosi-controller-example
          cosictl apply -f - <<< $'metadata: {namespace: default, type: Names.example.cosi.dev, id: ada}\\nspec: {name: Ada}'
          cosictl get Greetings.example.cosi.dev --watch
        """
    )

    @Option(help: "cosid's address.") var endpoint = "127.0.0.1:50000"
    @Option(help: "Directory of cosid's development certificates (admin.crt, admin.key, ca.crt).") var certsDir = "Certs"
    @Option(help: "A client certificate with role os:controller or os:admin (default: <certs-dir>/admin.crt).") var cert: String?
    @Option(help: "Its private key (default: <certs-dir>/admin.key).") var key: String?
    @Option(help: "The CA the server's certificate must chain to (default: <certs-dir>/ca.crt).") var ca: String?
    @Option(help: "The controller's name (the owner of what it creates).") var name = "greeter"
    @Option(help: "The namespace it works in.") var namespace = "default"
    @Option(help: "The input type.") var from = "Names.example.cosi.dev"
    @Option(help: "The output type.") var to = "Greetings.example.cosi.dev"
    @Option(help: "The output's YAML spec; {value} is the input spec's first value.") var template = "greeting: \"Hello, {value}!\""

    func run() async throws {
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]) else {
            throw ValidationError("--endpoint must be host:port")
        }
        let host = String(endpoint[..<colon])
        let configuration = CosiClientConfiguration(host: host, port: port, tls: TLSConfiguration(
            certificateChain: .file(cert ?? certsDir + "/admin.crt"),
            privateKey: .file(key ?? certsDir + "/admin.key"),
            trustRoots: .file(ca ?? certsDir + "/ca.crt")
        ))
        let template = self.template
        let deriving = DerivingController(name: name, namespace: namespace, from: from, to: to) { spec in
            template.replacingAll("{value}", with: DerivingController.value(in: spec)) + "\n"
        }
        print("\(name): deriving \(namespace)/\(to) from \(namespace)/\(from) at \(endpoint)")
        fflush(nil)
        try await withCosiClient(configuration) { client in
            // Its types are defined, so `cosictl` knows them (an os:controller certificate may
            // not write meta: then an admin defines them, or cosictl is told --allow-undefined-type).
            for type in [from, to] {
                do {
                    try await client.define(Meta.ResourceDefinitionSpec(resourceType: type, defaultNamespace: namespace))
                } catch {
                    print("\(name): cannot define \(type) (\(error)); define it as os:admin, or use cosictl apply --allow-undefined-type")
                }
            }
            try await RemoteControllerHost(client: client, controller: Logged(base: deriving)).run()
        }
    }
}

/// The deriving controller, printing a line per reconcile.
struct Logged: Controller {
    let base: DerivingController
    var name: String { base.name }
    var inputs: [ControllerInput] { base.inputs }
    var outputs: [ControllerOutput] { base.outputs }

    func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws {
        for await _ in events {
            try await base.reconcile(runtime)
            let count = try await runtime.list(namespace: base.namespace, type: base.outputType).count
            print("\(name): reconciled, \(count) \(base.outputType)")
            fflush(nil)
        }
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
