import CosiMessages

/// Why a state operation failed. `code.status` classifies it (the one table of how engine errors
/// are reported, after state.md and controllers.md); the engine knows nothing of the wire.
public struct StateError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        /// The resource does not exist.
        public static let notFound = Code("notFound")
        /// A resource with that address exists already.
        public static let alreadyExists = Code("alreadyExists")
        /// The caller's owner does not match the resource's owner.
        public static let ownerMismatch = Code("ownerMismatch")
        /// The request's version is not the stored version.
        public static let versionConflict = Code("versionConflict")
        /// The resource still has finalizers.
        public static let finalizersPending = Code("finalizersPending")
        /// A request field is invalid (the message names it).
        public static let invalidArgument = Code("invalidArgument")
        /// The expected phase does not match the stored phase.
        public static let phaseConflict = Code("phaseConflict")
        /// A finalizer was to be added to a resource that is tearing down (it could block its
        /// destruction for ever): a conflict with the resource's state.
        public static let tearingDown = Code("tearingDown")
        /// A feature or operator this server does not implement.
        public static let unimplemented = Code("unimplemented")
        /// A bookmark cannot be used: malformed, in the future, or older than the retained history.
        public static let bookmarkUnusable = Code("bookmarkUnusable")
        /// A watcher fell behind the retained history.
        public static let historyLost = Code("historyLost")
        /// The call's deadline passed while waiting.
        public static let deadlineExceeded = Code("deadlineExceeded")
        /// The engine is shutting down.
        public static let unavailable = Code("unavailable")
        /// Storage failed; the engine refuses further writes.
        public static let storageFailure = Code("storageFailure")
        /// The file system that holds the data directory is full; writes are refused until there
        /// is space again (reads and watches go on).
        public static let storageFull = Code("storageFull")
        /// Too many writes wait for the committer; this one was refused at once (try again).
        public static let overloaded = Code("overloaded")
        /// The resource is part of a change being tried: writes to it wait for its confirm or
        /// revert (changes.md).
        public static let changePending = Code("changePending")
        /// The change is not in the phase the call needs (confirm or revert of a change that is
        /// not being tried).
        public static let changeEnded = Code("changeEnded")
        public var description: String { name }

        /// How this error is reported, wherever it surfaces (the State service, the controller
        /// services, an in-process controller): the only table of it.
        public var status: CosiStatusCode {
            switch self {
            case .notFound: .notFound
            case .alreadyExists: .alreadyExists
            case .ownerMismatch: .permissionDenied
            // Conflicts with the resource's state or the log's history.
            case .versionConflict, .finalizersPending, .tearingDown, .bookmarkUnusable, .historyLost, .changePending, .changeEnded: .failedPrecondition
            // state.md: an Update whose expected_phase differs is INVALID_ARGUMENT.
            case .invalidArgument, .phaseConflict: .invalidArgument
            case .unimplemented: .unimplemented
            case .deadlineExceeded: .deadlineExceeded
            case .unavailable, .storageFailure: .unavailable
            case .storageFull, .overloaded: .resourceExhausted
            default: .unknown
            }
        }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
