import CosiMessages
import DequeModule
import NIOConcurrencyHelpers

/// How a waiting watcher is woken: its task resumes, or a callback runs (a watch driven from an
/// event loop rather than a task).
enum WatchWaker {
    case task(CheckedContinuation<Void, Never>)
    case callback(@Sendable () -> Void)

    func wake() {
        switch self {
        case .task(let continuation): continuation.resume()
        case .callback(let callback): callback()
        }
    }
}
