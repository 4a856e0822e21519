import ArgumentParser
import CosiRPC
import Foundation

/// A failure cosictl reports as one sentence on standard error, without the usage text, and exits
/// with `exitCode`: 1 for a refused or failed call (the message starts with the gRPC status name),
/// 2 for an error of `diff` and `apply --dry-run` (which follow diff(1)).
///
/// Usage errors stay ArgumentParser's `ValidationError`s: the usage text and exit code 64.
public struct CLIError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var exitCode: Int32

    public init(_ message: String, exitCode: Int32 = 1) {
        self.message = message
        self.exitCode = exitCode
    }

    public var description: String { message }

    /// A call's failure: `CODE: message`.
    public init(_ error: RPCError) {
        self.init("\(error.code): \(error.message)")
    }
}

/// An error as cosictl reports it: a server status as `CODE: message` (exit 1), usage errors as
/// they are (exit 64).
func fail(_ error: any Error) -> any Error {
    switch error {
    case let error as RPCError: CLIError(error)
    case is ValidationError, is CLIError, is CancellationError, is ExitCode, is CleanExit: error
    default: CLIError("\(error)")
    }
}

/// Writes a line to standard error.
func note(_ text: String) {
    if let capture = Output.capture {
        capture.append(.note(text))
        return
    }
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
