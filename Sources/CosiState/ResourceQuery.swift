import CRE2
import CosiMessages

/// A validated filter on resources: an id regular expression AND (an OR of label queries).
///
/// Built once per List or Watch (validation errors name the field), then applied to each
/// resource or event.
public struct ResourceQuery: Sendable {
    /// Compiled id regexp, when one was given.
    private let idPattern: IDPattern?
    private let labelQueries: [LabelQuery]

    /// Matches everything.
    public static let all = ResourceQuery(idPattern: nil, labelQueries: [])

    private init(idPattern: IDPattern?, labelQueries: [LabelQuery]) {
        self.idPattern = idPattern
        self.labelQueries = labelQueries
    }

    /// Validates the queries of a request.
    ///
    /// - Throws: `.invalidArgument` for a term other than EXISTS with no value, or an id regexp
    ///   that does not compile; `.unimplemented` for an unknown operator.
    public init(labelQueries: [LabelQuery], idQuery: IDQuery?, field: String = "options") throws(StateError) {
        guard labelQueries.count <= ResourceLimits.labelQueries else {
            throw StateError(.invalidArgument, "\(field).label_query has \(labelQueries.count) queries, more than the limit of \(ResourceLimits.labelQueries)")
        }
        for (q, query) in labelQueries.enumerated() {
            guard query.terms.count <= ResourceLimits.termsPerQuery else {
                throw StateError(.invalidArgument, "\(field).label_query[\(q)] has \(query.terms.count) terms, more than the limit of \(ResourceLimits.termsPerQuery)")
            }
            for (t, term) in query.terms.enumerated() {
                let name = "\(field).label_query[\(q)].terms[\(t)]"
                guard term.value.count <= ResourceLimits.valuesPerTerm else {
                    throw StateError(.invalidArgument, "\(name).value has \(term.value.count) values, more than the limit of \(ResourceLimits.valuesPerTerm)")
                }
                guard (0...7).contains(term.op.rawValue) else {
                    throw StateError(.unimplemented, "\(name).op: unknown label operator \(term.op.rawValue)")
                }
                let needsValue = term.op != .exists && term.op != .notExists
                if needsValue, term.value.isEmpty {
                    throw StateError(.invalidArgument, "\(name).value must not be empty for operator \(LabelTerm.name(of: term.op))")
                }
            }
        }
        var pattern: IDPattern?
        if let regexp = idQuery?.regexp, !regexp.isEmpty {
            guard regexp.utf8.count <= ResourceLimits.idPatternBytes else {
                throw StateError(.invalidArgument, "\(field).id_query.regexp is \(regexp.utf8.count) bytes, more than the limit of \(ResourceLimits.idPatternBytes)")
            }
            do throws(IDPattern.CompileError) {
                pattern = try IDPattern(regexp)
            } catch {
                throw StateError(.invalidArgument, "\(field).id_query.regexp does not compile: \(error.reason): \(regexp)")
            }
        }
        self.init(idPattern: pattern, labelQueries: labelQueries)
    }

    /// Whether the query filters nothing.
    public var matchesEverything: Bool { idPattern == nil && labelQueries.isEmpty }

    /// Whether `resource` passes the filter.
    public func matches(_ resource: Resource) -> Bool {
        if let idPattern, !idPattern.matches(resource.metadata.id) { return false }
        if labelQueries.isEmpty { return true }
        let labels = resource.metadata.labels
        return labelQueries.contains { query in query.terms.allSatisfy { $0.matches(labels) } }
    }
}

/// A compiled id regexp, in RE2's syntax (the syntax of the reference COSI runtime's Go
/// regexp), matched by RE2 in time linear in the id: no pattern can make a match run long
/// (`(a+)+$` included). Owns its RE2 object; matching is thread-safe.
final class IDPattern: @unchecked Sendable {
    struct CompileError: Error {
        var reason: String
    }

    private let compiled: OpaquePointer

    init(_ source: String) throws(CompileError) {
        var error = [CChar](repeating: 0, count: 256)
        let compiled = source.utf8CString.withUnsafeBufferPointer { pattern in
            cosi_re2_new(pattern.baseAddress, pattern.count - 1, &error, error.count)
        }
        guard let compiled else {
            throw CompileError(reason: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        self.compiled = compiled
    }

    deinit { cosi_re2_free(compiled) }

    /// Whether the pattern matches somewhere in `id`.
    func matches(_ id: String) -> Bool {
        var id = id
        return id.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { cosi_re2_partial_match(compiled, $0.baseAddress, $0.count) == 1 }
        }
    }
}

extension LabelTerm {
    static func name(of op: Operation) -> String {
        ["EXISTS", "EQUAL", "NOT_EXISTS", "IN", "LT", "LTE", "LT_NUMERIC", "LTE_NUMERIC"][Int(op.rawValue)]
    }

    /// Evaluates the term against a label map (see state.md: a missing key or an unparsable
    /// number makes an ordering term indeterminate, which never matches, even inverted).
    func matches(_ labels: [String: String]) -> Bool {
        let value = labels[key]
        switch op {
        case .exists:
            return (value != nil) != invert
        case .notExists:
            // Deprecated: EXISTS inverted; its own invert flag is ignored.
            return value == nil
        case .equal:
            return (value == self.value[0]) != invert
        case .in:
            return (value.map { self.value.contains($0) } ?? false) != invert
        case .lt, .lte:
            guard let value else { return false }
            let bound = self.value[0]
            let holds = op == .lt ? value.utf8.lexicographicallyPrecedes(bound.utf8) : !bound.utf8.lexicographicallyPrecedes(value.utf8)
            return holds != invert
        case .ltNumeric, .lteNumeric:
            guard let value, let number = LabelNumber.parse(value), let bound = LabelNumber.parse(self.value[0]) else { return false }
            let holds = op == .ltNumeric ? number < bound : number <= bound
            return holds != invert
        default:
            return false
        }
    }
}

/// Numbers in labels: an integer with an optional unit (`k`, `Ki`, `M`, `Mi`, ...).
enum LabelNumber {
    /// Parses "10", " 1 k", "4GB" (4·10^9), "5GiB" (5·2^30); nil when it does not parse.
    /// Products beyond the 64-bit range saturate (they still compare correctly with smaller ones).
    static func parse(_ text: String) -> Int64? {
        var rest = Substring(text.trimmingSpaces)
        let digits = rest.prefix { $0.isASCII && ($0.isNumber || $0 == "-") }
        guard !digits.isEmpty, let number = Int64(digits) else { return nil }
        rest = Substring(String(rest.dropFirst(digits.count)).trimmingSpaces).lowercased()[...]
        guard let first = rest.first else { return number }
        let exponents: [Character: Int64] = ["k": 1, "m": 2, "g": 3, "t": 4, "p": 5]
        guard let exponent = exponents[first] else { return nil }
        let binary = rest.dropFirst().first == "i"
        var multiplier: Int64 = 1
        for _ in 0..<exponent { multiplier *= binary ? 1024 : 1000 }
        let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
        if overflow { return number < 0 ? .min : .max }
        return product
    }
}

extension String {
    var trimmingSpaces: String {
        var scalars = Substring(self)
        while scalars.first == " " { scalars.removeFirst() }
        while scalars.last == " " { scalars.removeLast() }
        return String(scalars)
    }
}
