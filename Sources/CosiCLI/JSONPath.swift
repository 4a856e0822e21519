/// kubectl's JSONPath templates, for `cosictl get -o jsonpath=TEMPLATE` and `--sort-by`.
///
/// A template is text with expressions in braces: `{.metadata.id}`, `{.items[*].spec.hostname}`,
/// `{range .items[*]}{.metadata.id}{"\t"}{.spec.value}{"\n"}{end}`. An expression is a path from
/// the root (`$`, or a leading `.`; inside `range`, from the current item): `.key`, `['key']`,
/// `[n]` (negative from the end), `[start:end]`, `[*]` and `.*`, `..key` (at any depth), and
/// filters `[?(@.path OP value)]` with `==`, `!=`, `<`, `<=`, `>`, `>=` (numbers compared as
/// numbers) or `[?(@.path)]` (present). A string literal in braces (`{"\n"}`) is printed with
/// its escapes. Several results of one expression are separated by spaces; strings print bare,
/// objects and lists as JSON.
public struct JSONPathTemplate: Sendable {
    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    enum Segment: Sendable {
        case child(String)
        case recursive(String?)
        case wildcard
        case index(Int)
        case slice(Int?, Int?)
        case filter(Filter)
    }

    struct Filter: Sendable {
        var path: [Segment]
        /// nil: the path exists.
        var comparison: (op: String, value: JSONValue)?
    }

    indirect enum Part: Sendable {
        case text(String)
        case path([Segment])
        case range([Segment], [Part])
    }

    let parts: [Part]

    public init(_ template: String) throws(ParseError) {
        var tokens = try Self.tokens(template)
        parts = try Self.parts(&tokens, inRange: false)
        if !tokens.isEmpty { throw ParseError(description: "jsonpath: {end} without {range}") }
    }

    /// The results of a single path expression (for `--sort-by`): `{.spec.mtu}` or `.spec.mtu`.
    public static func path(_ expression: String) throws(ParseError) -> JSONPathTemplate {
        let trimmed = expression.hasPrefix("{") ? expression : "{" + expression + "}"
        return try JSONPathTemplate(trimmed)
    }

    /// Renders the template against `root`.
    public func render(_ root: JSONValue) -> String {
        Self.render(parts, current: root)
    }

    /// Every value the template's (first) expression selects.
    public func values(_ root: JSONValue) -> [JSONValue] {
        for part in parts {
            if case .path(let segments) = part { return Self.evaluate(segments, on: [root]) }
        }
        return []
    }

    // MARK: Rendering

    static func render(_ parts: [Part], current: JSONValue) -> String {
        var out = ""
        for part in parts {
            switch part {
            case .text(let text): out += text
            case .path(let segments): out += evaluate(segments, on: [current]).map(\.text).joined(separator: " ")
            case .range(let segments, let body):
                for item in evaluate(segments, on: [current]) { out += render(body, current: item) }
            }
        }
        return out
    }

    static func evaluate(_ segments: [Segment], on start: [JSONValue]) -> [JSONValue] {
        var values = start
        for segment in segments {
            values = values.flatMap { apply(segment, to: $0) }
        }
        return values
    }

    static func apply(_ segment: Segment, to value: JSONValue) -> [JSONValue] {
        switch segment {
        case .child(let key):
            return value[key].map { [$0] } ?? []
        case .wildcard:
            switch value {
            case .object(let pairs): return pairs.map(\.1)
            case .array(let items): return items
            default: return []
            }
        case .index(let index):
            guard case .array(let items) = value else { return [] }
            let position = index < 0 ? items.count + index : index
            return items.indices.contains(position) ? [items[position]] : []
        case .slice(let start, let end):
            guard case .array(let items) = value else { return [] }
            func clamp(_ bound: Int?, _ fallback: Int) -> Int {
                guard let bound else { return fallback }
                return min(max(bound < 0 ? items.count + bound : bound, 0), items.count)
            }
            let lower = clamp(start, 0), upper = clamp(end, items.count)
            return lower < upper ? Array(items[lower..<upper]) : []
        case .recursive(let key):
            var found: [JSONValue] = []
            func walk(_ node: JSONValue) {
                if let key { if let child = node[key] { found.append(child) } } else { found.append(node) }
                switch node {
                case .object(let pairs): pairs.forEach { walk($0.1) }
                case .array(let items): items.forEach(walk)
                default: break
                }
            }
            walk(value)
            return found
        case .filter(let filter):
            let items: [JSONValue]
            switch value {
            case .array(let list): items = list
            case .object(let pairs): items = pairs.map(\.1)
            default: return []
            }
            return items.filter { item in
                let selected = evaluate(filter.path, on: [item])
                guard let (op, expected) = filter.comparison else { return !selected.isEmpty }
                return selected.contains { compare($0, op, expected) }
            }
        }
    }

    /// Numbers compare as numbers when the filter's value is one; anything else as text.
    static func compare(_ value: JSONValue, _ op: String, _ expected: JSONValue) -> Bool {
        if case .number = expected, let a = Double(value.text), let b = Double(expected.text) { return holds(a, op, b) }
        return holds(value.text, op, expected.text)
    }

    static func holds<T: Comparable>(_ a: T, _ op: String, _ b: T) -> Bool {
        switch op {
        case "==": a == b
        case "!=": a != b
        case "<": a < b
        case "<=": a <= b
        case ">": a > b
        default: a >= b
        }
    }

    // MARK: Parsing

    enum Token {
        case text(String)
        case expression(String)
    }

    static func tokens(_ template: String) throws(ParseError) -> [Token] {
        var tokens: [Token] = []
        var text = ""
        var index = template.startIndex
        while index < template.endIndex {
            let character = template[index]
            guard character == "{" else {
                text.append(character)
                index = template.index(after: index)
                continue
            }
            if !text.isEmpty { tokens.append(.text(text)); text = "" }
            var quote: Character?
            var end = template.index(after: index)
            var expression = ""
            while end < template.endIndex {
                let c = template[end]
                if let q = quote {
                    if c == "\\", template.index(after: end) < template.endIndex {
                        expression.append(c)
                        end = template.index(after: end)
                        expression.append(template[end])
                    } else {
                        if c == q { quote = nil }
                        expression.append(c)
                    }
                } else if c == "\"" || c == "'" {
                    quote = c
                    expression.append(c)
                } else if c == "}" {
                    break
                } else {
                    expression.append(c)
                }
                end = template.index(after: end)
            }
            guard end < template.endIndex else { throw ParseError(description: "jsonpath: unclosed { in \"\(template)\"") }
            tokens.append(.expression(trimmed(expression[...])))
            index = template.index(after: end)
        }
        if !text.isEmpty { tokens.append(.text(text)) }
        return tokens
    }

    static func parts(_ tokens: inout [Token], inRange: Bool) throws(ParseError) -> [Part] {
        var parts: [Part] = []
        while !tokens.isEmpty {
            let token = tokens.removeFirst()
            switch token {
            case .text(let text):
                parts.append(.text(text))
            case .expression(let expression):
                if expression == "end" {
                    guard inRange else { throw ParseError(description: "jsonpath: {end} without {range}") }
                    return parts
                }
                if expression.hasPrefix("range ") {
                    let segments = try parsePath(trimmed(expression.dropFirst(6)))
                    let body = try Self.parts(&tokens, inRange: true)
                    parts.append(.range(segments, body))
                    continue
                }
                if let first = expression.first, first == "\"" || first == "'" {
                    parts.append(.text(try literal(expression)))
                    continue
                }
                parts.append(.path(try parsePath(expression)))
            }
        }
        if inRange { throw ParseError(description: "jsonpath: {range} without {end}") }
        return parts
    }

    static func literal(_ text: String) throws(ParseError) -> String {
        guard text.count >= 2, text.first == text.last else { throw ParseError(description: "jsonpath: unterminated string \(text)") }
        var out = ""
        var escaped = false
        for c in text.dropFirst().dropLast() {
            if escaped {
                switch c {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                default: out.append(c)
                }
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// Parses a path: `$`, `@` or nothing, then segments.
    static func parsePath(_ text: String) throws(ParseError) -> [Segment] {
        let chars = Array(text)
        var i = 0
        if i < chars.count, chars[i] == "$" || chars[i] == "@" { i += 1 }
        var segments: [Segment] = []
        func name() -> String {
            var out = ""
            while i < chars.count, chars[i] != ".", chars[i] != "[" , chars[i] != " " { out.append(chars[i]); i += 1 }
            return out
        }
        while i < chars.count {
            let c = chars[i]
            if c == "." {
                i += 1
                if i < chars.count, chars[i] == "." {
                    i += 1
                    let key = name()
                    segments.append(.recursive(key.isEmpty || key == "*" ? nil : key))
                    continue
                }
                let key = name()
                if key == "*" { segments.append(.wildcard) } else if !key.isEmpty { segments.append(.child(key)) }
            } else if c == "[" {
                guard let close = Self.closingBracket(chars, from: i) else { throw ParseError(description: "jsonpath: unclosed [ in \"\(text)\"") }
                let inside = trimmed(String(chars[(i + 1)..<close])[...])
                i = close + 1
                segments.append(try bracket(inside, in: text))
            } else if c == " " {
                throw ParseError(description: "jsonpath: unexpected text in \"\(text)\"")
            } else {
                let key = name()
                segments.append(.child(key))
            }
        }
        return segments
    }

    static func closingBracket(_ chars: [Character], from start: Int) -> Int? {
        var depth = 0
        var quote: Character?
        var i = start
        while i < chars.count {
            let c = chars[i]
            if let q = quote {
                if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "[" {
                depth += 1
            } else if c == "]" {
                depth -= 1
                if depth == 0 { return i }
            }
            i += 1
        }
        return nil
    }

    static func bracket(_ inside: String, in text: String) throws(ParseError) -> Segment {
        if inside == "*" { return .wildcard }
        if let first = inside.first, first == "'" || first == "\"" { return .child(try literal(inside)) }
        if inside.hasPrefix("?(") && inside.hasSuffix(")") {
            let body = trimmed(inside.dropFirst(2).dropLast())
            for op in ["==", "!=", "<=", ">=", "<", ">"] {
                guard let range = body.range(of: op) else { continue }
                let left = trimmed(body[..<range.lowerBound])
                let right = trimmed(body[range.upperBound...])
                guard left.hasPrefix("@") else { throw ParseError(description: "jsonpath: a filter compares @.path with a value, in \"\(text)\"") }
                let value: JSONValue
                if let first = right.first, first == "'" || first == "\"" {
                    value = .string(try literal(right))
                } else if JSONValue.isJSONNumber(right) {
                    value = .number(right)
                } else if right == "true" || right == "false" {
                    value = .bool(right == "true")
                } else {
                    throw ParseError(description: "jsonpath: \(right) is not a quoted string, a number or a boolean, in \"\(text)\"")
                }
                return .filter(Filter(path: try parsePath(left), comparison: (op, value)))
            }
            guard body.hasPrefix("@") else { throw ParseError(description: "jsonpath: a filter starts with @, in \"\(text)\"") }
            return .filter(Filter(path: try parsePath(body), comparison: nil))
        }
        if inside.contains(":") {
            let bounds = inside.split(separator: ":", omittingEmptySubsequences: false).map { trimmed($0) }
            guard bounds.count == 2 else { throw ParseError(description: "jsonpath: [\(inside)] is not a slice [start:end], in \"\(text)\"") }
            func bound(_ text: String) throws(ParseError) -> Int? {
                if text.isEmpty { return nil }
                guard let value = Int(text) else { throw ParseError(description: "jsonpath: [\(inside)] is not a slice [start:end]") }
                return value
            }
            return .slice(try bound(bounds[0]), try bound(bounds[1]))
        }
        guard let index = Int(inside) else { throw ParseError(description: "jsonpath: [\(inside)] is not an index, a slice, * or a filter, in \"\(text)\"") }
        return .index(index)
    }
}

/// Text without the spaces around it.
func trimmed(_ text: Substring) -> String {
    var text = text
    while text.first == " " { text.removeFirst() }
    while text.last == " " { text.removeLast() }
    return String(text)
}
