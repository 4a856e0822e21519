import CosiMessages
import CosiState
import NIOCore

// Label and id queries as a List or Watch carries them: built (or refused with a clear error)
// and matched against a few resources. The first byte chooses how the rest is read: as a
// ListRequest, or as an id regexp (RE2) on its own.
let resources = [
    Resource(metadata: Metadata(namespace: "ns", type: "T", id: "node-1", labels: ["app": "web", "tier": "1"])),
    Resource(metadata: Metadata(namespace: "ns", type: "T", id: "", labels: [:])),
    Resource(metadata: Metadata(namespace: "ns", type: "T", id: String(repeating: "a", count: 300), labels: ["app": "", "x": "10"])),
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let raw = UnsafeRawBufferPointer(start: start, count: count)
    guard let first = raw.first else { return 0 }
    let rest = UnsafeRawBufferPointer(rebasing: raw.dropFirst())
    let query: ResourceQuery?
    if first & 1 == 0 {
        guard let request = try? ListRequest(serializedBytes: ByteBuffer(bytes: rest)) else { return 0 }
        query = try? ResourceQuery(labelQueries: request.options?.labelQuery ?? [], idQuery: request.options?.idQuery)
    } else {
        query = try? ResourceQuery(labelQueries: [], idQuery: IDQuery(regexp: String(decoding: rest, as: UTF8.self)))
    }
    if let query { for resource in resources { _ = query.matches(resource) } }
    return 0
}
