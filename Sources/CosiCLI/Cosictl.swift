import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `cosictl`: manage a machine's resources from a shell.
public struct Cosictl: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "cosictl",
        abstract: "The COSI command-line client.",
        discussion: """
        Connection settings come from $COSICONFIG or ~/.config/cosi/config.yaml (a named context),
        overridden by --context, --endpoint, --ca, --cert and --key, which go before or after the
        command. Next to a development cosid, the certificates in ./Certs are used.

        Many machines at once: --nodes A,B,C (or a context's nodes:) runs the command on each,
        at most --parallel at once (32), each bounded by --timeout: a NODE column first, a node
        that fails is one error row on stderr (node, status, message) and does not stop the
        others (unless --fail-fast), a summary line (3 nodes: 2 ok, 1 failed), exit code 1 if
        any node failed. get --watch merges the nodes' streams; edit takes one node.

        Exit codes: 0 success, 1 a refused or failed call (the status on stderr), 64 a usage error;
        diff and apply --dry-run follow diff(1): 0 no differences, 1 differences, 2 an error.

        Examples:
          cosictl get rd                                     # every resource type and its short names
          cosictl get hostnamestatuses -o yaml --watch
          cosictl apply -f hostname.yaml --wait
          cosictl --nodes 10.0.0.5,10.0.0.6 get hostnamestatuses --watch
          cosictl describe hsp hostname
        """,
        version: cosiVersion,
        subcommands: [
            Get.self, Describe.self, Apply.self, Diff.self, Create.self, Edit.self, Delete.self, Teardown.self, Wait.self,
            Confirm.self, Revert.self, History.self, Rollback.self,
            Controllers.self, Graph.self, Info.self, Version.self, Gen.self, Config.self, Completion.self,
        ]
    )

    public init() {}

    /// Options of the connection that may come before the command (`cosictl --context prod get
    /// ns`), as talosctl and kubectl take them.
    static let connectionOptions: Set<String> = ["--context", "--endpoint", "--ca", "--cert", "--key", "--nodes", "--parallel", "--timeout"]

    /// Connection flags (no value) that may come before the command.
    static let connectionFlags: Set<String> = ["--fail-fast"]

    /// Runs cosictl with `arguments` (without the program name) and exits with its exit code.
    public static func main(arguments given: [String]) async -> Never {
        let arguments: [String]
        do {
            arguments = try rewrite(given)
        } catch let error as CLIError {
            note("cosictl: \(error.message)")
            terminate(error.exitCode)
        } catch {
            exit(withError: error)
        }
        do {
            var command = try parseAsRoot(arguments)
            if var asynchronous = command as? AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
            terminate(0)
        } catch let error as CLIError {
            note("Error: \(error.message)")
            terminate(error.exitCode)
        } catch {
            exit(withError: error)
        }
    }

    /// Moves connection options given before the command to after it, and refuses a command
    /// that does not exist (ArgumentParser would print the top-level help and exit 0).
    static func rewrite(_ arguments: [String]) throws -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count, arguments[index].hasPrefix("-") {
            let argument = arguments[index]
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            guard connectionOptions.contains(name) || connectionFlags.contains(name) else { return arguments }
            leading.append(argument)
            if !connectionFlags.contains(name), !argument.contains("="), index + 1 < arguments.count {
                leading.append(arguments[index + 1])
                index += 1
            }
            index += 1
        }
        guard index < arguments.count else { return arguments }
        let command = arguments[index]
        let commands = configuration.subcommands.flatMap { [$0._commandName] + $0.configuration.aliases } + ["help"]
        guard commands.contains(command) else {
            let close = commands.filter { editDistance($0, command) <= 2 }
            let hint = close.isEmpty ? "" : "; did you mean \(close.joined(separator: " or "))?"
            throw CLIError("unknown command \"\(command)\"\(hint) (see cosictl --help)", exitCode: 64)
        }
        return [command] + leading + arguments[(index + 1)...]
    }
}

/// Ends the process (the C library's `exit`, out of reach of ParsableCommand's `exit(withError:)`
/// inside the command types).
func terminate(_ code: Int32) -> Never {
    fflush(nil)
    exit(code)
}

/// Standard input, read once: under `--nodes` every node's command reads the same documents.
enum StandardInput {
    static let text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
}

/// Reads YAML documents from a file or standard input.
func readDocuments(_ file: String) throws -> [Resource] {
    let text: String
    if file == "-" {
        text = StandardInput.text
    } else {
        guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else { throw CLIError("cannot read \(file): no such file, or not readable UTF-8 text") }
        text = contents
    }
    do {
        let resources = try ResourceYAML.decode(text)
        guard !resources.isEmpty else { throw CLIError("\(file) holds no resource") }
        return resources
    } catch let error as CLIError {
        throw error
    } catch {
        throw CLIError("\(file): \(error)")
    }
}

/// A type argument (`hsp`, `HostnameSpecs.net.cosi.dev`, or `TYPE/ID` as `-o name` prints it)
/// and an optional id, resolved against the server's types.
struct Selection {
    var resolution: TypeCatalog.Resolution
    var namespace: String
    var id: String?
    /// What the user typed, for messages.
    var typed: String

    var type: String { resolution.type }

    init(_ typeArgument: String, _ id: String?, namespace: String?, catalog: TypeCatalog) throws {
        var typed = typeArgument
        var id = id
        if let slash = typeArgument.firstIndex(of: "/") {
            guard id == nil else { throw ValidationError("give TYPE ID or TYPE/ID, not both") }
            typed = String(typeArgument[..<slash])
            id = String(typeArgument[typeArgument.index(after: slash)...])
            guard !id!.isEmpty else { throw ValidationError("\(typeArgument): the id after / is empty") }
        }
        self.typed = typed
        self.id = id
        resolution = try catalog.resolve(typed)
        self.namespace = namespace ?? resolution.defaultNamespace
    }

    /// The address of the one resource selected.
    var address: String { "\(namespace)/\(type)/\(id ?? "")" }
}

/// The controllers cosid publishes, by name, for saying who holds a finalizer or owns a
/// resource.
struct ControllerDirectory {
    var byName: [String: PublishedController]

    static func load(_ client: CosiClient) async -> ControllerDirectory {
        let controllers = (try? await PublishedController.all(client)) ?? []
        return ControllerDirectory(byName: Dictionary(controllers.map { ($0.name, $0) }) { first, _ in first })
    }

    /// `greeter (remote controller of admin, not connected)`.
    func describe(_ name: String) -> String {
        guard let controller = byName[name] else { return "\(name) (no controller of that name is registered)" }
        if controller.origin == "remote" {
            return "\(name) (remote controller of \(controller.identity.isEmpty ? "?" : controller.identity), \(controller.running ? "connected" : "not connected"))"
        }
        return "\(name) (built-in controller, \(controller.running ? "running" : "not running"))"
    }
}
