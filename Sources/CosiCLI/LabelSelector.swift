import CosiMessages

/// Kubernetes-style label selectors, as `cosictl get -l` takes them.
///
/// `k=v` (or `k==v`), `k!=v`, `k` (exists), `!k` (does not exist), `k in (a,b)`, `k notin (a,b)`,
/// `k<v`, `k<=v`, `k>v`, `k>=v`; a comma means AND. The orderings compare numerically (with
/// units, as COSI does: `10k`, `4Gi`) when the value is a number, byte-wise otherwise. COSI's
/// terms have `<` and `<=` only: `k>v` is `k<=v` inverted and `k>=v` is `k<v` inverted (a
/// resource without the label matches neither, since an ordering on a missing label never
/// matches, even inverted).
public enum LabelSelector {
    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    public static func parse(_ text: String) throws -> LabelQuery {
        var terms: [LabelTerm] = []
        for part in splitTerms(text) {
            let term = part.trimmingCharacters(in: " ")
            guard !term.isEmpty else { throw ParseError(description: "empty term in label selector \"\(text)\"") }
            terms.append(try parseTerm(term))
        }
        return LabelQuery(terms: terms)
    }

    /// Splits on commas outside parentheses.
    static func splitTerms(_ text: String) -> [String] {
        var parts: [String] = []
        var current = ""
        var depth = 0
        for character in text {
            switch character {
            case "(": depth += 1; current.append(character)
            case ")": depth -= 1; current.append(character)
            case "," where depth == 0: parts.append(current); current = ""
            default: current.append(character)
            }
        }
        parts.append(current)
        return parts
    }

    static func parseTerm(_ term: String) throws -> LabelTerm {
        if term.hasPrefix("!") {
            let key = String(term.dropFirst()).trimmingCharacters(in: " ")
            try checkKey(key, term)
            return LabelTerm(key: key, op: .exists, invert: true)
        }
        for (word, invert) in [(" notin ", true), (" in ", false)] {
            if let range = term.range(of: word) {
                let key = String(term[..<range.lowerBound]).trimmingCharacters(in: " ")
                var list = String(term[range.upperBound...]).trimmingCharacters(in: " ")
                guard list.hasPrefix("("), list.hasSuffix(")") else {
                    throw ParseError(description: "\"\(term)\": the values of \(word.trimmingCharacters(in: " ")) go in parentheses, e.g. k in (a,b)")
                }
                list = String(list.dropFirst().dropLast())
                let values = list.split(separator: ",").map { String($0).trimmingCharacters(in: " ") }.filter { !$0.isEmpty }
                try checkKey(key, term)
                guard !values.isEmpty else { throw ParseError(description: "\"\(term)\": give at least one value") }
                return LabelTerm(key: key, op: .in, value: values, invert: invert)
            }
        }
        let symbols: [(String, LabelTerm.Operation, Bool)] = [
            ("!=", .equal, true), ("<=", .lte, false), (">=", .lt, true), ("==", .equal, false), ("=", .equal, false), ("<", .lt, false), (">", .lte, true),
        ]
        for (symbol, op, invert) in symbols {
            if let range = term.range(of: symbol) {
                let key = String(term[..<range.lowerBound]).trimmingCharacters(in: " ")
                let value = String(term[range.upperBound...]).trimmingCharacters(in: " ")
                try checkKey(key, term)
                var op = op
                if op == .lt || op == .lte, isNumber(value) { op = op == .lt ? .ltNumeric : .lteNumeric }
                return LabelTerm(key: key, op: op, value: [value], invert: invert)
            }
        }
        try checkKey(term, term)
        return LabelTerm(key: term, op: .exists)
    }

    static func checkKey(_ key: String, _ term: String) throws {
        guard !key.isEmpty, !key.contains(where: { " ()=<>!,".contains($0) }) else {
            throw ParseError(description: "\"\(term)\" is not a label selector term (use k=v, k!=v, k, !k, k in (a,b), k notin (a,b), k<v, k<=v, k>v, k>=v)")
        }
    }

    static func isNumber(_ value: String) -> Bool {
        guard let first = value.trimmingCharacters(in: " ").first else { return false }
        return first.isNumber || first == "-"
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var text = Substring(self)
        while text.first == set { text.removeFirst() }
        while text.last == set { text.removeLast() }
        return String(text)
    }
}
