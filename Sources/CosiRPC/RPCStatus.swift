
/// The outcome of a call, as carried by a TRAILERS frame. Codes are gRPC's.
public struct RPCStatus: Hashable, Sendable, CustomStringConvertible {
    /// A status code. Unknown values from newer peers are kept as their number.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let ok = Code(rawValue: 0)
        public static let cancelled = Code(rawValue: 1)
        public static let unknown = Code(rawValue: 2)
        public static let invalidArgument = Code(rawValue: 3)
        public static let deadlineExceeded = Code(rawValue: 4)
        public static let notFound = Code(rawValue: 5)
        public static let alreadyExists = Code(rawValue: 6)
        public static let permissionDenied = Code(rawValue: 7)
        public static let resourceExhausted = Code(rawValue: 8)
        public static let failedPrecondition = Code(rawValue: 9)
        public static let aborted = Code(rawValue: 10)
        public static let outOfRange = Code(rawValue: 11)
        public static let unimplemented = Code(rawValue: 12)
        public static let `internal` = Code(rawValue: 13)
        public static let unavailable = Code(rawValue: 14)
        public static let dataLoss = Code(rawValue: 15)
        public static let unauthenticated = Code(rawValue: 16)

        private static let names = [
            "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
            "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
            "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
            "UNAUTHENTICATED",
        ]

        public var description: String {
            Self.names.indices.contains(Int(rawValue)) ? Self.names[Int(rawValue)] : "CODE(\(rawValue))"
        }
    }

    public var code: Code
    /// For people.
    public var message: String
    /// Machine-readable extras.
    public var details: [String: String]

    public init(code: Code, message: String = "", details: [String: String] = [:]) {
        self.code = code
        self.message = message
        self.details = details
    }

    public static let ok = RPCStatus(code: .ok)

    public var description: String { message.isEmpty ? "\(code)" : "\(code): \(message)" }

    init(_ envelope: Envelope.Status) {
        self.init(code: Code(rawValue: envelope.code), message: envelope.message, details: envelope.details)
    }

    var envelope: Envelope.Status { Envelope.Status(code: code.rawValue, message: message, details: details) }
}

/// An error that ends a call with a status: thrown by handlers on the server and by calls on the
/// client.
public struct RPCError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: RPCStatus.Code
    public var message: String
    public var details: [String: String]

    public init(code: RPCStatus.Code, message: String, details: [String: String] = [:]) {
        self.code = code
        self.message = message
        self.details = details
    }

    public init(status: RPCStatus) {
        self.init(code: status.code, message: status.message, details: status.details)
    }

    public var status: RPCStatus { RPCStatus(code: code, message: message, details: details) }
    public var description: String { "\(code): \(message)" }
}

/// The code of a connection error, carried by GOAWAY.
public struct ConnectionErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let noError = ConnectionErrorCode(rawValue: 0)
    public static let protocolError = ConnectionErrorCode(rawValue: 1)
    public static let internalError = ConnectionErrorCode(rawValue: 2)
    public static let flowControlError = ConnectionErrorCode(rawValue: 3)
    public static let frameSizeError = ConnectionErrorCode(rawValue: 4)
    public static let enhanceYourCalm = ConnectionErrorCode(rawValue: 5)

    public var description: String {
        switch rawValue {
        case 0: "NO_ERROR"
        case 1: "PROTOCOL_ERROR"
        case 2: "INTERNAL_ERROR"
        case 3: "FLOW_CONTROL_ERROR"
        case 4: "FRAME_SIZE_ERROR"
        case 5: "ENHANCE_YOUR_CALM"
        default: "CODE(\(rawValue))"
        }
    }
}

/// A violation of COSI-RPC/1 that ends the connection with GOAWAY(code).
public struct ConnectionError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: ConnectionErrorCode
    public var message: String
    public init(code: ConnectionErrorCode, message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code): \(message)" }
}
