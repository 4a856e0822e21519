import CosiMessages

/// What a controller reads: resources of one type in one namespace (or one of them, by id), and
/// how it depends on them (spec: controllers.md, "Declarations").
public struct ControllerInput: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        /// Notify me of changes.
        case weak
        /// Also: I may put finalizers on it, so it is not destroyed before I have cleaned up.
        case strong
        /// Notify me only when such a resource is tearing down and has no finalizers left (used
        /// on one's own outputs to finish their destruction).
        case destroyReady
    }

    public var namespace: String
    public var type: String
    /// One resource only, when set.
    public var id: String?
    public var kind: Kind

    public init(namespace: String, type: String, id: String? = nil, kind: Kind = .weak) {
        self.namespace = namespace
        self.type = type
        self.id = id
        self.kind = kind
    }

    /// Whether a resource is one this input covers (ignoring the kind's condition).
    public func covers(namespace: String, type: String, id: String) -> Bool {
        self.namespace == namespace && self.type == type && (self.id == nil || self.id == id)
    }

    public var description: String { "\(kind) \(namespace)/\(type)\(id.map { "/\($0)" } ?? "")" }
}

/// What a controller writes: resources of one type, in any namespace.
public struct ControllerOutput: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        /// No other controller may declare this type as an output.
        case exclusive
        /// Several controllers may; each touches only the resources it created.
        case shared
    }

    public var type: String
    public var kind: Kind

    public init(type: String, kind: Kind = .exclusive) {
        self.type = type
        self.kind = kind
    }

    public var description: String { "\(kind) \(type)" }
}

/// A single thread of reconciliation: it declares what it reads and writes, wakes up on changes to
/// its inputs, reads them, and drives its outputs to match.
///
/// The same controller runs in-process (registered with `ControllerRuntime` in `cosid`) or on
/// another machine (hosted by `RemoteControllerHost` of `CosiClient`): it only ever talks to its
/// runtime through the handle it is given.
///
/// ```swift
/// struct Doubler: Controller {
///     let name = "doubler"
///     let inputs = [ControllerInput(namespace: "default", type: "Ints.test.dev", kind: .strong)]
///     let outputs = [ControllerOutput(type: "Doubles.test.dev")]
///
///     func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws {
///         for await _ in events {
///             for input in try await runtime.list(namespace: "default", type: "Ints.test.dev") {
///                 // ... create or update the derived output
///             }
///         }
///     }
/// }
/// ```
public protocol Controller: Sendable {
    /// Unique among the runtime's controllers; the owner of every resource it creates.
    var name: String { get }
    var inputs: [ControllerInput] { get }
    var outputs: [ControllerOutput] { get }

    /// Reconciles until `events` ends (the runtime stops). Returning ends the controller for good;
    /// throwing makes the runtime restart it, with backoff, and a new reconcile event.
    func run(events: ReconcileEvents, runtime: any ControllerRuntimeHandle) async throws
}

/// What a controller may do, checked by the runtime (spec: "What a controller may do"): read its
/// inputs and output types; write, tear down and destroy only its output types, as their owner;
/// change finalizers only on its strong inputs. Refusals are ``ControllerError`` with code
/// `.permissionDenied`.
public protocol ControllerRuntimeHandle: Sendable {
    /// One resource. An input pinned to an id allows that id only.
    func get(namespace: String, type: String, id: String) async throws -> Resource
    /// The resources of a kind matching any of `labelQueries` (all when empty), sorted by id.
    func list(namespace: String, type: String, labelQueries: [LabelQuery]) async throws -> [Resource]
    /// Waits until the resource satisfies the condition and returns it (nil when it does not exist:
    /// a destroyed resource has no finalizers).
    func watchFor(namespace: String, type: String, id: String, finalizersEmpty: Bool) async throws -> Resource?
    /// Creates an output; its owner is the controller.
    func create(_ resource: Resource) async throws -> Resource
    /// Updates an output the controller owns; `resource.metadata.version` must be current.
    func update(_ resource: Resource) async throws -> Resource
    /// Moves an output to phase tearingDown; returns whether it has no finalizers left.
    func teardown(namespace: String, type: String, id: String) async throws -> Bool
    /// Destroys an output that has no finalizers.
    func destroy(namespace: String, type: String, id: String) async throws
    /// Adds finalizers to a strong input.
    func addFinalizers(namespace: String, type: String, id: String, _ finalizers: [String]) async throws
    /// Removes finalizers from a strong input (a resource that no longer exists is fine).
    func removeFinalizers(namespace: String, type: String, id: String, _ finalizers: [String]) async throws
    /// Queues a reconcile event for this controller (coalesced like any other).
    func queueReconcile() async throws
    /// Replaces the inputs; new ones are watched from now on, and one event follows.
    func updateInputs(_ inputs: [ControllerInput]) async throws
}

extension ControllerRuntimeHandle {
    public func list(namespace: String, type: String) async throws -> [Resource] {
        try await list(namespace: namespace, type: type, labelQueries: [])
    }

    /// The resource, or nil when it does not exist.
    public func getIfExists(namespace: String, type: String, id: String) async throws -> Resource? {
        do {
            return try await get(namespace: namespace, type: type, id: id)
        } catch let error as ControllerError where error.code == .notFound {
            return nil
        }
    }
}

/// Why a runtime call failed, the same for in-process and remote controllers.
public struct ControllerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as the status it is reported with.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let status: CosiStatusCode
        public init(_ status: CosiStatusCode) { self.status = status }
        public static let notFound = Code(.notFound)
        public static let alreadyExists = Code(.alreadyExists)
        /// A stale version, finalizers pending, a finalizer on a resource tearing down, a
        /// conflicting registration, a runtime not in the state the call needs.
        public static let failedPrecondition = Code(.failedPrecondition)
        /// Outside what the controller declared, or not its resource.
        public static let permissionDenied = Code(.permissionDenied)
        public static let invalidArgument = Code(.invalidArgument)
        /// The runtime (or the connection to it) is gone.
        public static let unavailable = Code(.unavailable)
        public static let deadlineExceeded = Code(.deadlineExceeded)
        /// Storage is full, or too many writes wait: try again later.
        public static let resourceExhausted = Code(.resourceExhausted)
        public static let unimplemented = Code(.unimplemented)
        public static let `internal` = Code(.internal)
        public var description: String { "\(status)" }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
