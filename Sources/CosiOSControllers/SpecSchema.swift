import CosiController
import CosiMessages
import Yams

/// The fields a built-in spec type has: each a text or a list of texts, some required. cosid
/// checks every Create and Update of the type against it, so a misspelt field (`hostnam: x`) is
/// refused instead of being stored and ignored.
public struct SpecSchema: Sendable {
    public enum Kind: Sendable {
        /// One scalar, read as text.
        case text
        /// A list of scalars (one scalar reads as a list of one).
        case list
        /// A whole number within a range.
        case integer(ClosedRange<Int>)
        /// `true` or `false`.
        case boolean
        /// One of a few texts.
        case among([String])
    }

    public struct Field: Sendable {
        public var name: String
        public var kind: Kind
        public var required: Bool

        public static func text(_ name: String, required: Bool = false) -> Field { Field(name: name, kind: .text, required: required) }
        public static func list(_ name: String) -> Field { Field(name: name, kind: .list, required: false) }
        public static func integer(_ name: String, in range: ClosedRange<Int>) -> Field { Field(name: name, kind: .integer(range), required: false) }
        public static func boolean(_ name: String) -> Field { Field(name: name, kind: .boolean, required: false) }
        public static func text(_ name: String, among values: [String]) -> Field { Field(name: name, kind: .among(values), required: false) }
    }

    public var fields: [Field]

    public init(_ fields: [Field]) { self.fields = fields }

    /// What is wrong with a YAML spec, naming the field and the known ones; nil when it fits.
    public func problem(in yamlSpec: String) -> String? {
        let known = fields.map(\.name).sorted().joined(separator: ", ")
        let node: Node?
        do { node = try Yams.compose(yaml: yamlSpec) } catch { return "the spec is not YAML: \(error)" }
        guard let node, !(node.scalar?.string.isEmpty ?? false), node.tagName != .null else {
            let required = fields.filter(\.required).map(\.name)
            return required.isEmpty ? nil : "\(required.joined(separator: ", ")) is required (fields: \(known))"
        }
        guard let mapping = node.mapping else { return "the spec must be a mapping of fields (\(known))" }
        for (key, value) in mapping {
            guard let name = key.string, let field = fields.first(where: { $0.name == name }) else {
                return "unknown field \"\(key.string ?? "")\" (fields: \(known))"
            }
            switch field.kind {
            case .text:
                guard value.scalar != nil, value.tagName != .null else { return "field \(name) must be a single value, not \(describe(value))" }
            case .list:
                if value.scalar != nil, value.tagName != .null { continue }
                guard let items = value.sequence, items.allSatisfy({ $0.scalar != nil }) else { return "field \(name) must be a list of values, not \(describe(value))" }
            case .integer(let range):
                guard let text = value.scalar?.string, let number = Int(text), range.contains(number) else {
                    return "field \(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), not \(value.scalar.map { "\"\($0.string)\"" } ?? describe(value))"
                }
            case .boolean:
                guard value.tagName == .bool else { return "field \(name) must be true or false, not \(value.scalar.map { "\"\($0.string)\"" } ?? describe(value))" }
            case .among(let values):
                guard let text = value.scalar?.string, value.tagName != .null, values.contains(text) else {
                    return "field \(name) must be one of \(values.map { $0.isEmpty ? "\"\"" : $0 }.joined(separator: ", ")), not \(value.scalar.map { "\"\($0.string)\"" } ?? describe(value))"
                }
            }
        }
        for field in fields where field.required && mapping[Node(field.name)] == nil {
            return "field \(field.name) is required (fields: \(known))"
        }
        return nil
    }

    private func describe(_ node: Node) -> String {
        switch node {
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .scalar: node.tagName == .null ? "null" : "a value"
        case .alias: "an alias"
        }
    }
}

extension Node {
    /// The resolved tag's name (Yams keeps `Tag.name` internal).
    fileprivate var tagName: Tag.Name { Tag.Name(rawValue: tag.rawValue) }
}
