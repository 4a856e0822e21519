import ArgumentParser
import CosiCLI

/// The executable's entry point: the commands live in CosiCLI (so they can be tested);
/// `@main` here makes ArgumentParser run them asynchronously.
@main
struct CosictlMain: AsyncParsableCommand {
    static let configuration = Cosictl.configuration
}
