import CosiMessages
import CosiState
import Dispatch

// A watch resumed from any bookmark a client sends: decoded, checked against the log, and
// either started (then closed) or refused with a clear error; never a crash or a hang.
let engine: StateEngine = {
    let engine = try! StateEngine(storage: MemoryStorage())
    for index in 0..<20 {
        let done = DispatchSemaphore(value: 0)
        engine.create(Resource(metadata: Metadata(namespace: "ns", type: "T", id: "r\(index)")), owner: "") { _ in done.signal() }
        done.wait()
    }
    return engine
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bookmark = Array(UnsafeRawBufferPointer(start: start, count: count))
    _ = Bookmark.decode(bookmark)
    let done = DispatchSemaphore(value: 0)
    engine.watch(WatchRequest(namespace: "ns", type: "T", options: WatchOptions(startFromBookmark: bookmark), apiVersion: 1)) { result in
        if case .success(let watch) = result { watch.close() }
        done.signal()
    }
    done.wait()
    return 0
}
