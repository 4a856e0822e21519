import ArgumentParser
import CosiClient
import CosiMessages
import CosiRPC
import CosiState
import CosiTLS
import Foundation
import NIOConcurrencyHelpers

// `cosi-bench put | get | watch`: the loads of ../shared/peer/etcd/etcdload, under the same
// names, flags and output, run against cosid, so that the two servers are compared like with
// like. Closed loop: each client has one request in flight, operation indexes 0..<total come
// from a shared counter, clients share --conns connections (client w uses connection w mod
// conns), one untimed call on each connection finishes its handshake before the clock starts.
// stdout gets exactly one line, `RESULT key=value ...` (or a JSON object with --json); progress
// goes to stderr. Exit status 0 when status=ok, 2 when the load was incomplete.
//
// What maps to what: an etcd key is a resource id (namespace `bench`), a value is the resource's
// YAML spec (--val-size bytes), a put of a new key is a Create (of a key written before in this
// run, an Update), a get is a Get, a watch of a prefix is a Watch of a fresh type. cosid reads are
// always linearizable (one node, reads after commit): --consistency is accepted and reported.

/// The flags every subcommand shares, as etcdload spells them.
struct LoadOptions: ParsableArguments {
    @Option(help: "cosid endpoint (host:port), reached with mutual TLS.") var endpoint = "127.0.0.1:50000"
    @Option(help: "Directory with ca.crt, client.crt and client.key (default: the development Certs/: ca.crt, admin.crt, admin.key).") var certs: String?
    @Option(help: "CA certificate (default CERTS/ca.crt).") var cacert: String?
    @Option(help: "Client certificate (default CERTS/client.crt).") var cert: String?
    @Option(help: "Client private key (default CERTS/client.key).") var key: String?
    @Option(help: "Client connections; workers share them round-robin.") var conns = 1
    @Option(help: "Operations to run (upper bound).") var total = 10_000
    @Option(help: "Value size in bytes.") var valSize = 256
    @Option(help: "Pace the load to this many operations/s in total (0 = as fast as possible).") var rate: Double = 0
    @Option(help: "Hard bound on the whole load, including connecting (e.g. 120s, 2m).") var timeout = "120s"
    @Option(help: "Bound on connecting each client.") var dialTimeout = "5s"
    @Flag(help: "Print the result as one JSON object instead of the RESULT line.") var json = false

    func validate(workers: Int) throws {
        guard workers >= 1 else { throw ValidationError("need at least one client/writer") }
        guard conns >= 1 else { throw ValidationError("--conns must be >= 1") }
        guard total >= 1 else { throw ValidationError("--total must be >= 1") }
        guard valSize >= 0 else { throw ValidationError("--val-size must be >= 0") }
        guard rate >= 0 else { throw ValidationError("--rate must be >= 0") }
        _ = try Self.duration(timeout, "--timeout")
        _ = try Self.duration(dialTimeout, "--dial-timeout")
    }

    /// A Go-style duration: 120s, 500ms, 2m, 1h.
    static func duration(_ text: String, _ name: String) throws -> Duration {
        for (suffix, scale) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value > 0 { return .milliseconds(Int64(value * scale * 1000)) }
        }
        throw ValidationError("\(name) must be a duration such as 120s, 500ms or 2m, not \(text)")
    }

    /// The client configuration for the endpoint and certificates.
    func clientConfiguration() throws -> CosiClientConfiguration {
        let parts = endpoint.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--endpoint must be host:port, not \(endpoint)") }
        let (caName, certName, keyName, directory) = certs.map { ("ca.crt", "client.crt", "client.key", $0) } ?? ("ca.crt", "admin.crt", "admin.key", "Certs")
        var configuration = CosiClientConfiguration(host: String(parts[0]), port: port, tls: TLSConfiguration(
            certificateChain: .file(cert ?? directory + "/" + certName),
            privateKey: .file(key ?? directory + "/" + keyName),
            trustRoots: .file(cacert ?? directory + "/" + caName)
        ))
        configuration.defaultTimeout = nil
        return configuration
    }

    /// Opens `count` connections and makes one untimed call on each.
    func dial(_ count: Int) async throws -> [CosiClient] {
        let configuration = try clientConfiguration()
        var clients: [CosiClient] = []
        do {
            for index in 0..<count {
                do {
                    let client = try await CosiClient.connect(configuration)
                    clients.append(client)
                    _ = try await client.info(timeout: try Self.duration(dialTimeout, "--dial-timeout"))
                } catch {
                    throw ValidationError("connecting to \(endpoint) (connection \(index + 1) of \(count); is cosid up, and do the certificates match?): \(error)")
                }
            }
        } catch {
            for client in clients { await client.close() }
            throw error
        }
        return clients
    }
}

/// What one closed-loop run measured.
struct LoadStats {
    var latencies: [Duration] = []
    var ok = 0
    var errors = 0
    var timedOut = false
    var start: Duration = .zero
    var end: Duration = .zero
    var firstError: String?
}

/// Runs `workers` closed-loop workers over `clients` (worker w uses clients[w % count]) until
/// `total` operations were tried or `deadline` passes. With `rate` > 0, operation i starts no
/// earlier than start + i/rate. `operation` gets (client, worker, index, send time since t0).
func runLoad(
    clients: [CosiClient], workers: Int, total: Int, rate: Double, t0: ContinuousClock.Instant, deadline: ContinuousClock.Instant,
    progress: String,
    _ operation: @escaping @Sendable (CosiClient?, Int, Int, Duration) async throws -> Void
) async -> LoadStats {
    let clock = ContinuousClock()
    let next = NIOLockedValueBox(0)
    let done = NIOLockedValueBox((ok: 0, errors: 0, firstError: String?.none))
    let start = clock.now - t0
    struct WorkerResult: Sendable { var latencies: [Duration]; var end: Duration }
    let reporter = Task {
        let tty = isatty(2) == 1
        var last = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let counts = done.withLockedValue { $0 }
            let line = "\(progress): \(counts.ok)/\(total) ok, \(counts.ok - last)/s" + (counts.errors > 0 ? ", \(counts.errors) errors" : "")
            FileHandle.standardError.write(Data(((tty ? "\r" : "") + line + (tty ? "   " : "\n")).utf8))
            last = counts.ok
        }
    }
    let results = await withTaskGroup(of: WorkerResult.self) { group in
        for worker in 0..<workers {
            group.addTask {
                let client = clients.isEmpty ? nil : clients[worker % clients.count]
                var latencies: [Duration] = []
                latencies.reserveCapacity(total / workers + 1)
                var end = Duration.zero
                while true {
                    let index = next.withLockedValue { value -> Int in
                        defer { value += 1 }
                        return value
                    }
                    guard index < total, clock.now < deadline else { break }
                    if rate > 0 {
                        let due = t0 + start + .nanoseconds(Int64(Double(index) / rate * 1e9))
                        if due > clock.now { try? await Task.sleep(until: min(due, deadline), clock: clock) }
                        guard clock.now < deadline else { break }
                    }
                    let sent = clock.now - t0
                    do {
                        try await operation(client, worker, index, sent)
                        let finished = clock.now - t0
                        latencies.append(finished - sent)
                        end = finished
                        done.withLockedValue { $0.ok += 1 }
                    } catch {
                        if clock.now >= deadline { break }
                        done.withLockedValue { state in
                            state.errors += 1
                            if state.firstError == nil { state.firstError = "\(error)" }
                        }
                    }
                }
                return WorkerResult(latencies: latencies, end: end)
            }
        }
        var all: [WorkerResult] = []
        for await result in group { all.append(result) }
        return all
    }
    reporter.cancel()
    if isatty(2) == 1 { FileHandle.standardError.write(Data("\n".utf8)) }
    var stats = LoadStats()
    stats.start = start
    for result in results {
        stats.latencies += result.latencies
        stats.end = max(stats.end, result.end)
    }
    let counts = done.withLockedValue { $0 }
    stats.ok = stats.latencies.count
    stats.errors = counts.errors
    stats.firstError = counts.firstError
    stats.timedOut = clock.now >= deadline && stats.ok + stats.errors < total
    if stats.end < stats.start { stats.end = clock.now - t0 }
    if let first = stats.firstError {
        FileHandle.standardError.write(Data("cosi-bench: \(stats.errors) errors, first: \(first)\n".utf8))
    }
    return stats
}

/// The RESULT line: ordered key=value pairs, formatted as etcdload formats them.
struct LoadResult {
    private(set) var pairs: [(String, String)] = []

    init(_ workload: String, timedOut: Bool, complete: Bool) {
        add("workload", workload)
        add("status", timedOut ? "timeout" : complete ? "ok" : "incomplete")
    }

    mutating func add(_ key: String, _ value: String) { pairs.append((key, value)) }
    mutating func add(_ key: String, _ value: Int) { add(key, String(value)) }
    mutating func add(_ key: String, _ value: Double) { add(key, String(format: "%.3f", value)) }
    mutating func addRate(_ key: String, _ value: Double) { add(key, String(format: "%.1f", value)) }

    /// p50/p90/p99/max by nearest rank, in milliseconds.
    mutating func percentiles(_ prefix: String, _ latencies: [Duration]) {
        let sorted = latencies.sorted()
        func pick(_ p: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            let index = max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1)
            return milliseconds(sorted[index])
        }
        add(prefix + "p50_ms", pick(0.50))
        add(prefix + "p90_ms", pick(0.90))
        add(prefix + "p99_ms", pick(0.99))
        add(prefix + "max_ms", pick(1))
    }

    mutating func addLoad(_ stats: LoadStats, total: Int, cpu: Double) {
        let seconds = self.seconds(stats.end - stats.start)
        add("total", total)
        add("ok", stats.ok)
        add("errors", stats.errors)
        add("secs", seconds)
        addRate("ops_per_s", seconds > 0 ? Double(stats.ok) / seconds : 0)
        percentiles("", stats.latencies)
        add("client_cpu_s", cpu)
        if seconds > 0 { add("client_cores", cpu / seconds) }
    }

    func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    func milliseconds(_ duration: Duration) -> Double { seconds(duration) * 1000 }

    func print(json: Bool) {
        if json {
            let fields = pairs.map { key, value in
                "\"\(key)\":" + (Double(value) != nil ? value : "\"\(value)\"")
            }
            Swift.print("{" + fields.joined(separator: ",") + "}")
        } else {
            Swift.print("RESULT " + pairs.map { "\($0)=\($1)" }.joined(separator: " "))
        }
    }
}

/// This process's user and system CPU time so far, in seconds.
func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Random printable bytes (a YAML spec must be text).
func randomText(_ count: Int) -> String {
    let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
    return String((0..<count).map { _ in alphabet.randomElement()! })
}

/// Eight random hex digits: a fresh key prefix (or type) per run.
func runTag() -> String { String(UInt32.random(in: .min ... .max), radix: 16) }

/// Exits 2 (the load ran but is incomplete) after printing the result, as etcdload does.
struct LoadIncomplete: Error, CustomStringConvertible {
    var description: String { "load incomplete" }
}

struct PutLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "etcdload put: N clients write distinct sequential keys (Create; an Update once keys wrap around)."
    )
    @OptionGroup var load: LoadOptions
    @Option(help: "Concurrent clients (closed loop, one request in flight each).") var clients = 1
    @Option(help: "Key length: zero-padded decimal digits.") var keySize = 8
    @Option(help: "Sequential keys wrap around after this many.") var keySpace = 100_000_000
    @Option(help: "Prefix before the key digits (default: a fresh one per run).") var prefix: String?

    func run() async throws {
        try load.validate(workers: clients)
        guard (1...18).contains(keySize), keySpace >= 1, Double(keySpace) <= pow(10, Double(keySize)) else {
            throw ValidationError("--key-space \(keySpace) does not fit in --key-size \(keySize) digits")
        }
        let clock = ContinuousClock()
        let t0 = clock.now
        let deadline = t0 + (try LoadOptions.duration(load.timeout, "--timeout"))
        let connections = try await load.dial(load.conns)
        let type = "Puts.bench.dev"
        let prefix = self.prefix ?? "p\(runTag())-"
        let value = randomText(load.valSize)
        let keySize = self.keySize, keySpace = self.keySpace
        // Versions of the keys written in this run, for an Update once the keys wrap around.
        let versions = NIOLockedValueBox([String: String]())
        let cpu0 = cpuSeconds()
        let stats = await runLoad(clients: connections, workers: clients, total: load.total, rate: load.rate, t0: t0, deadline: deadline, progress: "put") { client, _, index, _ in
            let client = client!
            let digits = String(index % keySpace)
            let id = prefix + String(repeating: "0", count: max(0, keySize - digits.count)) + digits
            if index < keySpace {
                _ = try await client.create(Resource(metadata: Metadata(namespace: "bench", type: type, id: id), spec: Spec(yamlSpec: value)))
            } else {
                var current = try await client.get(namespace: "bench", type: type, id: id)
                current.spec = Spec(yamlSpec: value)
                let stored = try await client.update(current)
                versions.withLockedValue { $0[id] = stored.metadata.version }
            }
        }
        try await load.finish("put", stats, cpu: cpuSeconds() - cpu0, closing: connections, settings: [("clients", "\(clients)")])
    }
}

extension LoadOptions {
    /// Ends a closed-loop load of unary calls: closes its connections, prints its settings and
    /// figures, and fails (exit 2) when it timed out or not every request succeeded.
    func finish(_ name: String, _ stats: LoadStats, cpu: Double, closing connections: [CosiClient], settings: [(String, String)]) async throws {
        for client in connections { await client.close() }
        let complete = stats.errors == 0 && stats.ok == total
        var result = LoadResult(name, timedOut: stats.timedOut, complete: complete)
        for (key, value) in settings { result.add(key, value) }
        result.add("conns", conns)
        result.add("val_size", valSize)
        result.addRate("rate", rate)
        result.addLoad(stats, total: total, cpu: cpu)
        result.print(json: json)
        if stats.timedOut || !complete { throw ExitCode(2) }
    }
}

struct GetLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "etcdload get: N clients read one existing key (a Get of one resource)."
    )
    @OptionGroup var load: LoadOptions
    @Option(help: "Concurrent clients (closed loop, one request in flight each).") var clients = 1
    @Option(help: "l = linearizable, s = serializable (cosid's reads are always linearizable).") var consistency = "l"
    @Option(help: "The key to read; it is written (val-size bytes) before the load.") var getKey = "etcdload-get"

    func run() async throws {
        try load.validate(workers: clients)
        guard consistency == "l" || consistency == "s" else { throw ValidationError("--consistency must be l or s, not \(consistency)") }
        let clock = ContinuousClock()
        let t0 = clock.now
        let deadline = t0 + (try LoadOptions.duration(load.timeout, "--timeout"))
        let connections = try await load.dial(load.conns)
        let type = "Gets.bench.dev"
        let key = getKey, size = load.valSize
        let value = randomText(size)
        if var existing = try? await connections[0].get(namespace: "bench", type: type, id: key) {
            existing.spec = Spec(yamlSpec: value)
            _ = try await connections[0].update(existing)
        } else {
            _ = try await connections[0].create(Resource(metadata: Metadata(namespace: "bench", type: type, id: key), spec: Spec(yamlSpec: value)))
        }
        let cpu0 = cpuSeconds()
        let stats = await runLoad(clients: connections, workers: clients, total: load.total, rate: load.rate, t0: t0, deadline: deadline, progress: "get") { client, _, _, _ in
            let client = client!
            let resource = try await client.get(namespace: "bench", type: type, id: key)
            guard resource.spec.yamlSpec.utf8.count == size else {
                throw ValidationError("get \(key): a \(resource.spec.yamlSpec.utf8.count)-byte value, want \(size)")
            }
        }
        try await load.finish("get", stats, cpu: cpuSeconds() - cpu0, closing: connections, settings: [("consistency", consistency), ("clients", "\(clients)")])
    }
}

struct WatchLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "etcdload watch: W watchers watch a fresh type while N writers create --total resources of it; every watcher must see each exactly once, in order."
    )
    @OptionGroup var load: LoadOptions
    @Option(help: "Concurrent writers (closed loop), sharing --conns connections.") var writers = 1
    @Option(help: "Watchers of the type; each has its own Watch call.") var watchers = 1
    @Option(help: "Connections for the watchers (separate from the writers').") var watchConns = 1
    @Option(help: "After failed puts, how long to wait for the remaining events.") var drain = "3s"
    @Flag(help: "Decode every watch response whole with the client library, instead of scanning the fields the check needs.") var decode = false

    /// One watcher's view of the run.
    struct Seen: Sendable {
        var seen: [Bool]
        var latencies: [Duration] = []
        var unique = 0
        var duplicates = 0
        var outOfOrder = 0
        var foreign = 0
        var lastRevision: UInt64 = 0
        var lastEvent: Duration = .zero
        var error: String?
    }

    func run() async throws {
        try load.validate(workers: writers)
        guard watchers >= 1, watchConns >= 1 else { throw ValidationError("--watchers and --watch-conns must be >= 1") }
        guard load.valSize >= 20 else { throw ValidationError("--val-size must be >= 20 for watch (the value carries the send time)") }
        let clock = ContinuousClock()
        let t0 = clock.now
        let deadline = t0 + (try LoadOptions.duration(load.timeout, "--timeout"))
        let drainTime = try LoadOptions.duration(drain, "--drain")
        let watchConnections = try await load.dial(watchConns)
        let connections = try await load.dial(load.conns)
        // A fresh type per run, so every key is written exactly once.
        let type = "W\(runTag())s.bench.dev"
        let total = load.total
        let padding = randomText(load.valSize)

        // Every watcher is confirmed created (its first, empty response) before the first put.
        let ready = NIOLockedValueBox((created: 0, failed: String?.none))
        let stop = NIOLockedValueBox(false)
        let watching = Task {
            await withTaskGroup(of: Seen.self) { group in
                for index in 0..<watchers {
                    let connection = watchConnections[index % watchConnections.count]
                    group.addTask {
                        var state = Seen(seen: [Bool](repeating: false, count: total))
                        state.latencies.reserveCapacity(total)
                        var stream = ScannedWatch(connection, WatchRequest(namespace: "bench", type: type, apiVersion: 1), decode: decode).makeAsyncIterator()
                        do {
                            guard try await stream.next() != nil else { throw ValidationError("the watch ended at once") }
                            ready.withLockedValue { $0.created += 1 }
                        } catch {
                            ready.withLockedValue { $0.failed = $0.failed ?? "watcher \(index) was not created: \(error)" }
                            state.error = "\(error)"
                            return state
                        }
                        do {
                            while state.unique < total, !stop.withLockedValue({ $0 }), let events = try await stream.next() {
                                let now = clock.now - t0
                                for event in events {
                                    guard event.type == .created, let id = event.id, let index = Int(id), index >= 0, index < total,
                                          let sentText = event.yamlSpec?.split(separator: ";", maxSplits: 1).first, let sent = Int64(sentText) else {
                                        state.foreign += 1
                                        continue
                                    }
                                    let revision = event.bookmark.flatMap(Bookmark.decode) ?? 0
                                    if revision <= state.lastRevision { state.outOfOrder += 1 }
                                    state.lastRevision = revision
                                    if state.seen[index] {
                                        state.duplicates += 1
                                        continue
                                    }
                                    state.seen[index] = true
                                    state.unique += 1
                                    state.latencies.append(now - .nanoseconds(sent))
                                    state.lastEvent = now
                                }
                            }
                        } catch {
                            if !stop.withLockedValue({ $0 }) { state.error = "\(error)" }
                        }
                        return state
                    }
                }
                var all: [Seen] = []
                for await state in group { all.append(state) }
                return all
            }
        }

        while true {
            let (created, failed) = ready.withLockedValue { ($0.created, $0.failed) }
            if let failed { throw ValidationError(failed) }
            if created == watchers { break }
            guard clock.now < deadline else { throw ValidationError("the watchers were not created before --timeout") }
            try await Task.sleep(for: .milliseconds(1))
        }
        let putOK = NIOLockedValueBox([Bool](repeating: false, count: total))
        let cpu0 = cpuSeconds()
        let stats = await runLoad(clients: connections, workers: writers, total: total, rate: load.rate, t0: t0, deadline: deadline, progress: "watch") { client, _, index, sent in
            let client = client!
            let nanos = String(sent.components.seconds * 1_000_000_000 + sent.components.attoseconds / 1_000_000_000)
            let value = nanos + ";" + padding.dropFirst(nanos.count + 1)
            let digits = String(index)
            let id = String(repeating: "0", count: max(0, 8 - digits.count)) + digits
            _ = try await client.create(Resource(metadata: Metadata(namespace: "bench", type: type, id: id), spec: Spec(yamlSpec: value)))
            putOK.withLockedValue { $0[index] = true }
        }
        // Wait for the watchers: until each has every event (bounded by --timeout), or, after
        // failed puts, for the drain period.
        let waitUntil = stats.errors == 0 && !stats.timedOut ? deadline : min(deadline, clock.now + drainTime)
        let watched = Task { await watching.value }
        let stopper = Task {
            try? await Task.sleep(until: waitUntil, clock: clock)
            stop.withLockedValue { $0 = true }
            for client in watchConnections { await client.close() }
        }
        let states = await watched.value
        stopper.cancel()
        let cpu = cpuSeconds() - cpu0
        let timedOut = stats.timedOut || clock.now >= deadline
        for client in connections { await client.close() }
        for client in watchConnections { await client.close() }

        let written = putOK.withLockedValue { $0 }
        var missing = 0, duplicates = 0, outOfOrder = 0, foreign = 0, events = 0, errors = 0
        var lastEvent = Duration.zero
        var latencies: [Duration] = []
        for (index, state) in states.enumerated() {
            missing += zip(written, state.seen).filter { $0 && !$1 }.count
            duplicates += state.duplicates
            outOfOrder += state.outOfOrder
            foreign += state.foreign
            events += state.unique
            latencies += state.latencies
            lastEvent = max(lastEvent, state.lastEvent)
            if let error = state.error {
                errors += 1
                FileHandle.standardError.write(Data("cosi-bench: watcher \(index): \(error)\n".utf8))
            }
        }
        let checksOK = missing == 0 && duplicates == 0 && outOfOrder == 0 && foreign == 0 && errors == 0
        let complete = stats.errors == 0 && stats.ok == total && checksOK
        var result = LoadResult("watch", timedOut: timedOut, complete: complete)
        result.add("writers", writers)
        result.add("conns", load.conns)
        result.add("watchers", watchers)
        result.add("watch_conns", watchConns)
        result.add("val_size", load.valSize)
        result.addRate("rate", load.rate)
        result.addLoad(stats, total: total, cpu: cpu)
        result.add("events", events)
        let eventSeconds = result.seconds(lastEvent - stats.start)
        result.addRate("events_per_s", eventSeconds > 0 ? Double(events) / eventSeconds : 0)
        result.percentiles("ev_", latencies)
        result.add("missing", missing)
        result.add("duplicates", duplicates)
        result.add("out_of_order", outOfOrder)
        // A Create returns no revision, so an event cannot be matched to its put's revision.
        result.add("mismatched", 0)
        result.add("foreign", foreign)
        result.add("watch_errors", errors)
        result.print(json: load.json)
        if timedOut || !complete { throw ExitCode(2) }
    }
}
