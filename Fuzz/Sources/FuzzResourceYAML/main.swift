import CosiCLI

// cosictl's reader of YAML resource files (apply -f): any text gives resources or a clear
// error; resources read back from their own YAML unchanged.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeRawBufferPointer(start: start, count: count), as: UTF8.self)
    guard let resources = try? ResourceYAML.decode(text) else { return 0 }
    for resource in resources {
        guard let yaml = try? ResourceYAML.encode(resource) else { continue }
        let again = try? ResourceYAML.decode(yaml)
        precondition(again?.count == 1, "a resource's own YAML does not read back")
    }
    return 0
}
