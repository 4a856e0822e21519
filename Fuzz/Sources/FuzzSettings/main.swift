import CosiDaemon
import Foundation

// cosid's config file (`--config`): any bytes as the file give the settings or an error naming
// the file and the setting, through CosiDaemon's `CosidSettings`: what is fuzzed is what cosid
// runs.
let path = FileManager.default.temporaryDirectory.appendingPathComponent("cosid-fuzz-settings-\(getpid()).yaml").path

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes: start, count: count))
    if let settings = try? CosidSettings.load(file: path) {
        // Settings that load print back (--print-config) to a file that loads the same.
        if let printed = try? settings.yaml() {
            _ = FileManager.default.createFile(atPath: path, contents: Data(printed.utf8))
            precondition((try? CosidSettings.load(file: path)) == settings, "printed settings do not read back the same")
        }
    }
    return 0
}
