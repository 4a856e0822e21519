import CosiCLI
import CosiMessages
import Testing

@Suite("Label selectors")
struct LabelSelectorTests {
    @Test func everyForm() throws {
        let query = try LabelSelector.parse("app=web, tier!=db, frozen, !legacy, zone in (a, b), env notin (dev), weight<10k, name<=m, rank<3")
        #expect(query.terms == [
            LabelTerm(key: "app", op: .equal, value: ["web"]),
            LabelTerm(key: "tier", op: .equal, value: ["db"], invert: true),
            LabelTerm(key: "frozen", op: .exists),
            LabelTerm(key: "legacy", op: .exists, invert: true),
            LabelTerm(key: "zone", op: .in, value: ["a", "b"]),
            LabelTerm(key: "env", op: .in, value: ["dev"], invert: true),
            LabelTerm(key: "weight", op: .ltNumeric, value: ["10k"]),
            LabelTerm(key: "name", op: .lte, value: ["m"]),
            LabelTerm(key: "rank", op: .ltNumeric, value: ["3"]),
        ])
    }

    @Test(arguments: ["", "a=b,", "zone in a,b", "k in ()", "bad key=1", "(x)"])
    func badSelectorsAreClearErrors(_ text: String) {
        #expect(throws: LabelSelector.ParseError.self) { try LabelSelector.parse(text) }
    }
}
