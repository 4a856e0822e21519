import Benchmark
import CosiMessages
import CosiRPC
import CosiState
import CosiStateService
import CosiTLS
import CosiWire
import Dispatch
import NIOCore

// The hot paths of cosid, measured in allocations (the metric a change must not make worse)
// and time. Each runs the server's own code without a network: the frame decoder, the State
// service's Get and Create handlers as a connection calls them, and one change fanned out to
// 1,000 watches as their event loops poll them.

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.mallocCountTotal, .wallClock, .throughput],
        warmupIterations: 10,
        maxDuration: .seconds(3),
        maxIterations: 20_000
    )

    // MARK: Frame decode

    // 100 MESSAGE frames of 300 bytes, as one read from the socket brings them.
    var frames = ByteBuffer()
    for index in 0..<100 {
        _ = frames.writeFrame(Frame(type: .message, streamID: UInt32(2 * index + 1), payload: ByteBuffer(repeating: 0x61, count: 300)))
    }
    let read = frames
    Benchmark("Frame decode: 100 frames from one read") { benchmark in
        for _ in benchmark.scaledIterations {
            var decoder = FrameDecoder(maxFrameSize: 1 << 20, requireSettingsFirst: false)
            decoder.append(read)
            while let frame = try decoder.nextFrame() { blackHole(frame) }
        }
    }

    // MARK: Get and Create through the State service's handlers

    let engine = try! StateEngine(storage: MemoryStorage())
    let methods = RPCMethodTable(StateService.methods(engine: engine))
    let peer = PeerIdentity(commonName: "bench", organizations: ["os:admin"], fingerprint: "")
    func resource(_ id: String) -> Resource {
        Resource(
            metadata: Metadata(namespace: "bench", type: "Hot.bench.dev", id: id, labels: ["app": "bench"]),
            spec: Spec(yamlSpec: String(repeating: "a", count: 256))
        )
    }
    func wait(_ body: (@escaping @Sendable () -> Void) -> Void) {
        let done = DispatchSemaphore(value: 0)
        body { done.signal() }
        done.wait()
    }
    for index in 0..<1_000 {
        wait { done in engine.create(resource("r\(index)"), owner: "") { _ in done() } }
    }

    guard case .unaryOnLoop(let get)? = methods[StateService.get]?.handler else { fatalError("Get runs on the event loop") }
    let getRequest = GetRequest(namespace: "bench", type: "Hot.bench.dev", id: "r500").serializedBytes()
    let getContext = CallContext(method: StateService.get, peer: peer)
    Benchmark("Get: decode, look up, encode (a 256-byte resource)") { benchmark in
        for _ in benchmark.scaledIterations {
            try get.prepare(getRequest, getContext)(UnaryResponder { result in
                if case .success(let answer) = result { blackHole(answer.encode()) }
            })
        }
    }

    guard case .unaryOnLoop(let create)? = methods[StateService.create]?.handler else { fatalError("Create runs on the event loop") }
    let createContext = CallContext(method: StateService.create, peer: peer)
    // Requests made before measuring: the client's encoding is not the server's cost.
    let createRequests = (0..<25_000).map { CreateRequest(resource: resource("c\($0)")).serializedBytes() }
    nonisolated(unsafe) var next = 0
    Benchmark(
        "Create: decode, commit (in memory), answer",
        configuration: .init(metrics: [.mallocCountTotal, .wallClock, .throughput], warmupIterations: 10, maxDuration: .seconds(3), maxIterations: 20_000)
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            let request = createRequests[next % createRequests.count]
            next += 1
            wait { done in
                do {
                    try create.prepare(request, createContext)(UnaryResponder { result in
                        if case .success(let answer) = result { blackHole(answer.encode()) }
                        done()
                    })
                } catch {
                    fatalError("\(error)")
                }
            }
        }
    }

    // MARK: One change to 1,000 watches

    nonisolated(unsafe) var hot = resource("hot")
    wait { done in engine.create(hot, owner: "") { result in
        if case .success(let stored) = result { hot = stored }
        done()
    } }
    nonisolated(unsafe) var current = hot
    let pollers: [WatchPoller] = (0..<1_000).map { _ in
        nonisolated(unsafe) var made: StateWatch?
        wait { done in engine.watch(WatchRequest(namespace: "bench", type: "Hot.bench.dev")) { result in
            made = try? result.get()
            done()
        } }
        return made!.makePoller()
    }
    let ready: @Sendable () -> Void = {}
    Benchmark("Fan-out: one update delivered to 1,000 watches (encoded once, polled by each)") { benchmark in
        for _ in benchmark.scaledIterations {
            var changed = current
            changed.metadata.annotations = ["n": changed.metadata.version]
            wait { done in engine.update(changed, owner: "", expectedPhase: nil) { result in
                if case .success(let stored) = result { current = stored }
                done()
            } }
            for poller in pollers {
                while case .responses(let responses) = try poller.pollResponses(aggregated: false, whenReady: ready) { blackHole(responses) }
            }
        }
    }
}
