import Foundation
import Yams

/// A JSON value that keeps the order of object keys and the text of numbers: how cosictl prints
/// `-o json`, and what `-o jsonpath` and `--sort-by` evaluate against.
///
/// Strings stay strings: a label `"007"` is `"007"`, never `7`. Numbers are only what the
/// resource's YAML spec says are numbers (plain scalars that YAML resolves to int or float).
public indirect enum JSONValue: Equatable, Sendable {
    case object([(String, JSONValue)])
    case array([JSONValue])
    case string(String)
    /// A number, as JSON text.
    case number(String)
    case bool(Bool)
    case null

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case let (.object(a), .object(b)): a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case let (.array(a), .array(b)): a == b
        case let (.string(a), .string(b)): a == b
        case let (.number(a), .number(b)): a == b
        case let (.bool(a), .bool(b)): a == b
        case (.null, .null): true
        default: false
        }
    }

    /// A member of an object.
    public subscript(key: String) -> JSONValue? {
        if case .object(let pairs) = self { return pairs.first { $0.0 == key }?.1 }
        return nil
    }

    /// A string map as an object, keys sorted.
    static func strings(_ map: [String: String]) -> JSONValue {
        .object(map.keys.sorted().map { ($0, .string(map[$0]!)) })
    }

    // MARK: From YAML

    /// A YAML node as JSON: mappings, sequences, and scalars by the tag YAML resolves for them
    /// (quoted scalars are strings; plain ones may be ints, floats, booleans or null).
    public static func from(_ node: Node) -> JSONValue {
        switch node {
        case .mapping(let mapping):
            return .object(mapping.map { key, value in (key.string ?? "", from(value)) })
        case .sequence(let sequence):
            return .array(sequence.map(from))
        case .scalar(let scalar):
            switch node.tagName {
            case .null: return .null
            case .bool: return node.bool.map(JSONValue.bool) ?? .string(scalar.string)
            case .int:
                if let value = node.int { return .number(String(value)) }
                return .string(scalar.string)
            case .float:
                guard let value = node.float, value.isFinite else { return .string(scalar.string) }
                if isJSONNumber(scalar.string) { return .number(scalar.string) }
                return .number(String(value))
            default:
                return .string(scalar.string)
            }
        case .alias:
            return .null
        }
    }

    /// Whether `text` is a number as JSON writes one.
    static func isJSONNumber(_ text: String) -> Bool {
        text.wholeMatch(of: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/) != nil
    }

    // MARK: Writing

    /// JSON text: `indent` spaces per level, or one line when `indent` is 0.
    public func serialized(indent: Int = 2) -> String {
        var out = ""
        write(to: &out, indent: indent, level: 0)
        return out
    }

    private func write(to out: inout String, indent: Int, level: Int) {
        let newline = indent > 0 ? "\n" : ""
        let pad = { (level: Int) in String(repeating: " ", count: indent * level) }
        switch self {
        case .object(let pairs):
            if pairs.isEmpty { out += "{}"; return }
            out += "{" + newline
            for (index, (key, value)) in pairs.enumerated() {
                out += pad(level + 1) + Self.quote(key) + (indent > 0 ? ": " : ":")
                value.write(to: &out, indent: indent, level: level + 1)
                out += (index < pairs.count - 1 ? "," : "") + newline
            }
            out += pad(level) + "}"
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "[" + newline
            for (index, item) in items.enumerated() {
                out += pad(level + 1)
                item.write(to: &out, indent: indent, level: level + 1)
                out += (index < items.count - 1 ? "," : "") + newline
            }
            out += pad(level) + "]"
        case .string(let text): out += Self.quote(text)
        case .number(let text): out += text
        case .bool(let value): out += value ? "true" : "false"
        case .null: out += "null"
        }
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20: out += String(format: "\\u%04x", c.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// The value as a table cell or a jsonpath result: strings bare, others as JSON.
    public var text: String {
        switch self {
        case .string(let text): text
        case .number(let text): text
        case .bool(let value): value ? "true" : "false"
        case .null: ""
        case .array(let items) where items.allSatisfy({ if case .object = $0 { false } else if case .array = $0 { false } else { true } }):
            items.map(\.text).joined(separator: ",")
        default: serialized(indent: 0)
        }
    }
}

/// A text scalar that reads back as text: plain when YAML reads its plain form as a string,
/// single-quoted otherwise (`007`, `1.10`, `true`, `null`, the empty string).
func yamlString(_ text: String) -> Node {
    let plain = Node(text)
    return !text.isEmpty && Resolver.default.resolveTag(of: plain) == .str ? plain : Node(text, Tag(.str), .singleQuoted)
}

extension Node {
    /// The resolved tag's name (Yams keeps `Tag.name` internal).
    fileprivate var tagName: Tag.Name { Tag.Name(rawValue: tag.rawValue) }
}
