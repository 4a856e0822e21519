import CCosiProto
import CProtobufC

/// The COSI-RPC/1 envelope messages (package `cosi.rpc.v1`): the payloads of SETTINGS, HEADERS,
/// TRAILERS and GOAWAY frames. They describe calls, not COSI resources.
public enum Envelope {
    /// Payload of a SETTINGS frame. A zero field means "use the default".
    public struct Settings: Hashable, Sendable {
        public var maxFrameSize: UInt32
        public var maxConcurrentStreams: UInt32
        public var initialWindow: UInt32
        public var initialConnectionWindow: UInt32

        public init(maxFrameSize: UInt32 = 0, maxConcurrentStreams: UInt32 = 0, initialWindow: UInt32 = 0, initialConnectionWindow: UInt32 = 0) {
            self.maxFrameSize = maxFrameSize
            self.maxConcurrentStreams = maxConcurrentStreams
            self.initialWindow = initialWindow
            self.initialConnectionWindow = initialConnectionWindow
        }
    }

    /// Payload of a HEADERS frame: the method and metadata that open a call.
    public struct CallHeaders: Hashable, Sendable {
        public var method: String
        public var metadata: [String: String]
        /// The call's deadline in milliseconds from now; 0 means none.
        public var timeoutMS: UInt64

        public init(method: String, metadata: [String: String] = [:], timeoutMS: UInt64 = 0) {
            self.method = method
            self.metadata = metadata
            self.timeoutMS = timeoutMS
        }
    }

    /// Payload of a TRAILERS frame: how the call ended.
    public struct Status: Hashable, Sendable {
        public var code: Int32
        public var message: String
        public var details: [String: String]

        public init(code: Int32, message: String = "", details: [String: String] = [:]) {
            self.code = code
            self.message = message
            self.details = details
        }
    }

    /// Payload of a GOAWAY frame.
    public struct GoAway: Hashable, Sendable {
        public var lastStreamID: UInt32
        public var code: UInt32
        public var reason: String

        public init(lastStreamID: UInt32, code: UInt32, reason: String = "") {
            self.lastStreamID = lastStreamID
            self.code = code
            self.reason = reason
        }
    }

    /// Request of `/cosi.rpc.v1.Server/Info` (empty).
    public struct InfoRequest: Hashable, Sendable {
        public init() {}
    }

    /// Response of `/cosi.rpc.v1.Server/Info`.
    public struct InfoResponse: Hashable, Sendable {
        /// The server's version string.
        public var version: String
        /// Every method this server serves.
        public var methods: [String]
        /// The caller's common name as the server sees it.
        public var identity: String
        /// The caller's roles (certificate Organization values).
        public var roles: [String]

        public init(version: String = "", methods: [String] = [], identity: String = "", roles: [String] = []) {
            self.version = version
            self.methods = methods
            self.identity = identity
            self.roles = roles
        }
    }
}

extension Envelope.Settings: CMessageBridged {
    typealias CStruct = Cosi__Rpc__V1__Settings
    static let messageName = "cosi.rpc.v1.Settings"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__settings__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__rpc__v1__settings__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__settings__free_unpacked(p, nil) }

    init(c: UnsafePointer<CStruct>) {
        self.init(
            maxFrameSize: c.pointee.max_frame_size,
            maxConcurrentStreams: c.pointee.max_concurrent_streams,
            initialWindow: c.pointee.initial_window,
            initialConnectionWindow: c.pointee.initial_connection_window
        )
    }

    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.max_frame_size = maxFrameSize
        c.pointee.max_concurrent_streams = maxConcurrentStreams
        c.pointee.initial_window = initialWindow
        c.pointee.initial_connection_window = initialConnectionWindow
    }
}

extension Envelope.CallHeaders: CMessageBridged {
    typealias CStruct = Cosi__Rpc__V1__CallHeaders
    static let messageName = "cosi.rpc.v1.CallHeaders"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__call_headers__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__rpc__v1__call_headers__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__call_headers__free_unpacked(p, nil) }

    init(c: UnsafePointer<CStruct>) {
        self.init(
            method: swiftString(c.pointee.method),
            metadata: swiftMap(c.pointee.n_metadata, c.pointee.metadata) { ($0.pointee.key, $0.pointee.value) },
            timeoutMS: c.pointee.timeout_ms
        )
    }

    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.method = arena.string(method)
        (c.pointee.n_metadata, c.pointee.metadata) = arena.map(
            metadata, initEntry: cosi__rpc__v1__call_headers__metadata_entry__init
        ) { $0.pointee.key = $1; $0.pointee.value = $2 }
        c.pointee.timeout_ms = timeoutMS
    }
}

extension Envelope.Status: CMessageBridged {
    typealias CStruct = Cosi__Rpc__V1__Status
    static let messageName = "cosi.rpc.v1.Status"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__status__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__rpc__v1__status__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__status__free_unpacked(p, nil) }

    init(c: UnsafePointer<CStruct>) {
        self.init(
            code: c.pointee.code,
            message: swiftString(c.pointee.message),
            details: swiftMap(c.pointee.n_details, c.pointee.details) { ($0.pointee.key, $0.pointee.value) }
        )
    }

    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.code = code
        c.pointee.message = arena.string(message)
        (c.pointee.n_details, c.pointee.details) = arena.map(
            details, initEntry: cosi__rpc__v1__status__details_entry__init
        ) { $0.pointee.key = $1; $0.pointee.value = $2 }
    }
}

extension Envelope.GoAway: CMessageBridged {
    typealias CStruct = Cosi__Rpc__V1__GoAway
    static let messageName = "cosi.rpc.v1.GoAway"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__go_away__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__rpc__v1__go_away__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__go_away__free_unpacked(p, nil) }

    init(c: UnsafePointer<CStruct>) {
        self.init(lastStreamID: c.pointee.last_stream_id, code: c.pointee.code, reason: swiftString(c.pointee.reason))
    }

    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.last_stream_id = lastStreamID
        c.pointee.code = code
        c.pointee.reason = arena.string(reason)
    }
}

extension Envelope.InfoRequest: CMessageBridged {
    typealias CStruct = Cosi__Rpc__V1__InfoRequest
    static let messageName = "cosi.rpc.v1.InfoRequest"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__info_request__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__rpc__v1__info_request__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__info_request__free_unpacked(p, nil) }
    init(c: UnsafePointer<CStruct>) { self.init() }
    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {}
}

extension Envelope.InfoResponse: CMessageBridged {
    typealias CStruct = Cosi__Rpc__V1__InfoResponse
    static let messageName = "cosi.rpc.v1.InfoResponse"
    static func cInit(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__info_response__init(p) }
    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { cosi__rpc__v1__info_response__unpack(nil, n, d) }
    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { cosi__rpc__v1__info_response__free_unpacked(p, nil) }

    init(c: UnsafePointer<CStruct>) {
        self.init(
            version: swiftString(c.pointee.version),
            methods: swiftStrings(c.pointee.n_methods, c.pointee.methods),
            identity: swiftString(c.pointee.identity),
            roles: swiftStrings(c.pointee.n_roles, c.pointee.roles)
        )
    }

    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {
        c.pointee.version = arena.string(version)
        c.pointee.n_methods = methods.count
        c.pointee.methods = arena.strings(methods)
        c.pointee.identity = arena.string(identity)
        c.pointee.n_roles = roles.count
        c.pointee.roles = arena.strings(roles)
    }
}
