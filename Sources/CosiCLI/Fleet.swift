import ArgumentParser
import CosiClient
import CosiRPC
import Foundation
import NIOConcurrencyHelpers

/// What one node's command printed, kept until every node has answered, so that the output of
/// `--nodes` is one table (a NODE column first) in the order the nodes were given, whatever
/// order they answered in.
final class NodeOutput: Sendable {
    enum Item: Sendable {
        case line(String)
        /// Text printed as it is, without the node in front (YAML documents that carry their
        /// node in a `node` key).
        case document(String)
        case table([[String]])
        case note(String)
    }

    private let state = NIOLockedValueBox<(items: [Item], partial: String)>(([], ""))

    var items: [Item] {
        state.withLockedValue { state in
            state.partial.isEmpty ? state.items : state.items + [.line(state.partial)]
        }
    }

    func write(_ text: String) {
        state.withLockedValue { state in
            var pending = state.partial + text
            while let newline = pending.firstIndex(of: "\n") {
                state.items.append(.line(String(pending[..<newline])))
                pending = String(pending[pending.index(after: newline)...])
            }
            state.partial = pending
        }
    }

    func append(_ item: Item) {
        state.withLockedValue { state in
            if !state.partial.isEmpty {
                state.items.append(.line(state.partial))
                state.partial = ""
            }
            state.items.append(item)
        }
    }
}

/// Where command output goes: standard output, or the buffer of the node a task works for.
enum Output {
    @TaskLocal static var capture: NodeOutput?
}

/// Prints a line of a command's output (to the node's buffer under `--nodes`).
func out(_ text: String = "", terminator: String = "\n") {
    if let capture = Output.capture {
        capture.write(text + terminator)
    } else {
        print(text, terminator: terminator)
    }
}

/// Prints a whole document (YAML that names its node itself): as it is, under `--nodes` too.
func outDocument(_ text: String) {
    if let capture = Output.capture {
        capture.append(.document(text))
    } else {
        print(text, terminator: "")
    }
}

/// Under `--nodes`, the node a command's body works for (nil for the one server).
func currentNode(_ client: CosiClient) -> String? {
    Output.capture == nil ? nil : CosiNode(host: client.configuration.host, port: client.configuration.port).description
}

/// One node's outcome under `--nodes`: what it printed and how it ended.
struct NodeOutcome<Value: Sendable>: Sendable {
    var node: CosiNode
    var output: NodeOutput
    var result: Result<Value, any Error>
}

/// A failure that carries what the node printed before it.
private struct CapturedFailure: Error {
    var output: NodeOutput
    var error: any Error
}

extension ConnectionOptions {
    /// Runs `body` on the one server, or on every node of `--nodes` (or the context's nodes):
    /// each node's output under a NODE column, a failed node as one error row (node, status,
    /// message) on standard error that does not stop the others, then a summary line
    /// (`3 nodes: 2 ok, 1 failed`). Throws exit code `failureExitCode` when a node failed, after
    /// printing. Returns what each node that succeeded returned, with its node (nil for the one
    /// server).
    @discardableResult
    func eachNode<Value: Sendable>(
        failureExitCode: Int32 = 1, bounded: Bool = true,
        _ body: @escaping @Sendable (CosiClient) async throws -> Value
    ) async throws -> [(node: CosiNode?, value: Value)] {
        let nodes = try fleetNodes()
        if nodes.isEmpty {
            return [(nil, try await withClient(body))]
        }
        let outcomes = try await runOnNodes(nodes, bounded: bounded, body)
        let failed = report(outcomes)
        if failed > 0 { throw ExitCode(failureExitCode) }
        return outcomes.compactMap { outcome in (try? outcome.result.get()).map { (outcome.node, $0) } }
    }

    /// The fleet's connection settings: the certificates of the context and flags.
    func fleet(_ nodes: [CosiNode]) throws -> CosiFleet {
        guard endpoint?.hasPrefix("unix:") != true else { throw ValidationError("--nodes and a unix: endpoint do not go together") }
        // The certificates and deadlines of the context and flags; each node gives its address.
        var options = self
        options.endpoint = "127.0.0.1:50000"
        return CosiFleet(nodes: nodes, configuration: try options.configuration())
    }

    /// Runs `body` on every node (at most --parallel at once, each bounded by --timeout when
    /// `bounded`), capturing what each prints; the outcomes come in the nodes' order.
    func runOnNodes<Value: Sendable>(
        _ nodes: [CosiNode], bounded: Bool = true, _ body: @escaping @Sendable (CosiClient) async throws -> Value
    ) async throws -> [NodeOutcome<Value>] {
        guard parallel >= 1 else { throw ValidationError("--parallel must be at least 1") }
        let fleet = try fleet(nodes)
        let results = await fleet.fanOut(parallel: parallel, timeout: bounded ? try timeoutDuration() : nil, failFast: failFast) { _, client in
            let output = NodeOutput()
            do {
                let value = try await Output.$capture.withValue(output) { try await body(client) }
                return (output, value)
            } catch {
                throw CapturedFailure(output: output, error: error)
            }
        }
        await fleet.close()
        return results.map { answer in
            switch answer.result {
            case .success(let (output, value)):
                return NodeOutcome(node: answer.node, output: output, result: .success(value))
            case .failure(let failure as CapturedFailure):
                return NodeOutcome(node: answer.node, output: failure.output, result: .failure(failure.error))
            case .failure(let error):
                return NodeOutcome(node: answer.node, output: NodeOutput(), result: .failure(error))
            }
        }
    }

    /// Prints the outcomes: tables merged under a NODE column, lines prefixed with their node,
    /// notes and error rows on standard error, and the summary line. Returns how many failed.
    @discardableResult
    func report<Value>(_ outcomes: [NodeOutcome<Value>]) -> Int {
        let width = outcomes.map(\.node.description.count).max() ?? 0
        func prefixed(_ node: CosiNode, _ text: String) -> String {
            node.description.padding(toLength: width + 3, withPad: " ", startingAt: 0) + text
        }
        var header: [String]?
        var rows: [[String]] = []
        var lines: [String] = []
        for outcome in outcomes {
            for item in outcome.output.items {
                switch item {
                case .table(let table):
                    guard let first = table.first else { continue }
                    if header == nil { header = ["NODE"] + first }
                    rows += table.dropFirst().map { [outcome.node.description] + $0 }
                case .line(let text):
                    lines.append(prefixed(outcome.node, text))
                case .document(let text):
                    lines.append(text.hasSuffix("\n") ? String(text.dropLast()) : text)
                case .note(let text):
                    note(prefixed(outcome.node, text))
                }
            }
        }
        if let header { printTable([header] + rows) }
        for line in lines { print(line) }
        fflush(nil)
        var errorRows: [[String]] = []
        for outcome in outcomes {
            guard case .failure(let error) = outcome.result else { continue }
            let (status, message) = Self.status(of: error)
            errorRows.append([outcome.node.description, status, message])
        }
        if !errorRows.isEmpty {
            var table = TableWriter()
            table.measure(errorRows)
            for row in errorRows { note(table.line(row)) }
        }
        let failed = errorRows.count
        note("\(outcomes.count) node\(outcomes.count == 1 ? "" : "s"): \(outcomes.count - failed) ok" + (failed > 0 ? ", \(failed) failed" : ""))
        return failed
    }

    /// An error as a status name and a message: a server status as it is, cosictl's sentences
    /// under the status they begin with (ERROR when none).
    static func status(of error: any Error) -> (String, String) {
        switch error {
        case let error as RPCError:
            return ("\(error.code)", error.message)
        case let error as CLIError:
            if let colon = error.message.firstIndex(of: ":") {
                let head = error.message[..<colon]
                if !head.isEmpty, head.allSatisfy({ $0.isUppercase || $0 == "_" }) {
                    return (String(head), error.message[error.message.index(after: colon)...].trimmingCharacters(in: .whitespaces))
                }
            }
            return ("ERROR", error.message)
        case let error as CosiNodeError:
            return ("INVALID_ARGUMENT", error.description)
        case is ExitCode:
            return ("ERROR", "the command failed on this node")
        default:
            let failed = fail(error)
            if let cli = failed as? CLIError { return status(of: cli) }
            return ("ERROR", "\(error)")
        }
    }
}
