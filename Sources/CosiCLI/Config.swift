import ArgumentParser
import CosiTLS
import Foundation
import Yams

/// `cosictl config`: the contexts of the config file.
struct Config: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Show and choose the contexts of the config file ($COSICONFIG or ~/.config/cosi/config.yaml).",
        discussion: """
        Examples:
          cosictl config get-contexts
          cosictl config use-context prod
          cosictl config current-context
        """,
        subcommands: [GetContexts.self, UseContext.self, CurrentContext.self]
    )

    /// The config file, or a clear error when there is none.
    static func load() throws -> ConnectionOptions.ConfigFile {
        let path = ConnectionOptions.configPath
        guard FileManager.default.fileExists(atPath: path) else {
            throw CLIError("there is no config file at \(path): write one with `cosictl gen config`")
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw CLIError("cannot read the config file \(path): \(error.localizedDescription)")
        }
        do { return try YAMLDecoder().decode(ConnectionOptions.ConfigFile.self, from: text) } catch {
            throw CLIError("the config file \(path) is not valid: \(error)")
        }
    }

    static func save(_ file: ConnectionOptions.ConfigFile) throws {
        let path = ConnectionOptions.configPath
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try writeFile(try YAMLEncoder().encode(file), to: path, mode: 0o600)
    }
}

struct GetContexts: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(commandName: "get-contexts", abstract: "List the contexts; * marks the current one.")

    func run() throws {
        let file = try Config.load()
        let current = file.context ?? file.contexts.keys.sorted().first
        let rows = file.contexts.keys.sorted().map { name -> [String] in
            let context = file.contexts[name]!
            let identity = context.crt.flatMap { try? Certificate.load(.file($0)).first }.map { $0.identity.commonName } ?? "-"
            return [name == current ? "*" : "", name, (context.endpoints ?? ["127.0.0.1:50000"]).joined(separator: ","), (context.nodes ?? []).joined(separator: ",").nonEmpty ?? "-", identity]
        }
        printTable([["CURRENT", "NAME", "ENDPOINTS", "NODES", "IDENTITY"]] + rows)
    }
}

struct UseContext: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(commandName: "use-context", abstract: "Make a context the current one.")
    @Argument(help: "The context's name.") var name: String

    func run() throws {
        var file = try Config.load()
        guard file.contexts[name] != nil else {
            throw CLIError("the config file has no context \"\(name)\" (it has: \(file.contexts.keys.sorted().joined(separator: ", ")))")
        }
        let previous = file.context
        file.context = name
        try Config.save(file)
        print(previous == name ? "the current context is \"\(name)\" already" : "switched to context \"\(name)\"" + (previous.map { " (was \"\($0)\")" } ?? ""))
    }
}

struct CurrentContext: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(commandName: "current-context", abstract: "Print the current context's name.")

    func run() throws {
        let file = try Config.load()
        guard let current = file.context ?? file.contexts.keys.sorted().first else { throw CLIError("the config file has no contexts") }
        print(current)
    }
}

/// `cosictl completion SHELL`.
struct Completion: ParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        abstract: "Print a shell completion script: subcommands, flags, and the server's type names and short names.",
        discussion: """
        Type names come from the last server cosictl talked to (cached in
        ~/.cache/cosi/resource-types whenever a command reads the types).

        Examples:
          source <(cosictl completion bash)
          cosictl completion zsh > "${fpath[1]}/_cosictl"
          cosictl completion fish > ~/.config/fish/completions/cosictl.fish
        """
    )
    @Argument(help: "bash, zsh or fish.") var shell: String

    func validate() throws {
        guard ["bash", "zsh", "fish"].contains(shell) else { throw ValidationError("the shells are bash, zsh and fish, not \(shell)") }
    }

    func run() throws {
        print(Cosictl.completionScript(for: CompletionShell(rawValue: shell)!))
    }
}

extension String {
    /// Nil for the empty string.
    var nonEmpty: String? { isEmpty ? nil : self }
}
