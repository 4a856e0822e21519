/// The status a COSI error is reported with, in gRPC's numbering and with the names the
/// specification uses (NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, ...).
///
/// The engine classifies its errors with it, in one table (`StateError.Code.status`); the
/// controller runtime's errors carry one (`ControllerError.Code`); each service edge sends it as
/// it is. So the same engine error is the same status over the State service and the controller
/// services.
public enum CosiStatusCode: Int32, Hashable, Sendable, CustomStringConvertible {
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14

    public var description: String {
        switch self {
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        }
    }
}
