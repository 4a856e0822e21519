import CosiCLI

/// The executable's entry point: the commands live in CosiCLI (so they can be tested), which
/// also owns the exit codes (see `Cosictl.main(arguments:)`).
@main
enum CosictlMain {
    static func main() async {
        await Cosictl.main(arguments: Array(CommandLine.arguments.dropFirst()))
    }
}
