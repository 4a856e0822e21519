import CosiMessages
import CosiProtobuf
import NIOCore

// Every request message the server decodes (State, ControllerRuntime, ControllerAdapter), and
// the fields the access check scans from a request's bytes without decoding it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = ByteBuffer(bytes: UnsafeRawBufferPointer(start: start, count: count))
    func decode<M: ProtobufMessage>(_ type: M.Type) {
        // A message that decodes must encode and decode to the same value.
        guard let message = try? M(serializedBytes: bytes) else { return }
        let again = try? M(serializedBytes: message.serializedBytes())
        precondition(again != nil, "\(M.self) decoded, but its encoding does not decode")
    }
    decode(GetRequest.self)
    decode(ListRequest.self)
    decode(CreateRequest.self)
    decode(UpdateRequest.self)
    decode(DestroyRequest.self)
    decode(WatchRequest.self)
    decode(TeardownRequest.self)
    decode(TeardownAndDestroyRequest.self)
    decode(Runtime.RegisterControllerRequest.self)
    decode(Runtime.ReconcileEventsRequest.self)
    decode(Runtime.RuntimeListRequest.self)
    decode(Runtime.RuntimeUpdateRequest.self)
    for path in [[1], [2], [1, 1, 1], [1, 1, 2], [2, 1, 1], [2, 1, 2]] {
        _ = try? WireScan.string(at: path, in: bytes)
    }
    _ = try? WireScan.occurrences(of: 1, in: bytes)
    return 0
}
