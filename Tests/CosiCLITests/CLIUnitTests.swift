@testable import CosiCLI
import CosiMessages
import Testing

@Suite("cosictl's pieces")
struct CLIUnitTests {
    static let catalog = TypeCatalog(definitions: [
        Meta.ResourceDefinitionSpec(resourceType: "HostnameSpecs.net.cosi.dev", defaultNamespace: "network", aliases: ["hostnamespec", "hsp"], allAliases: ["hostnamespecs", "hostnamespecs.net", "hostnamespec", "hsp"]),
        Meta.ResourceDefinitionSpec(resourceType: "HostnameStatuses.net.cosi.dev", defaultNamespace: "network", aliases: ["hostnamestatus", "hostname", "hst"], allAliases: ["hostnamestatuses"]),
        Meta.ResourceDefinitionSpec(resourceType: "Pears.test.dev", aliases: ["p"]),
        Meta.ResourceDefinitionSpec(resourceType: "Plums.test.dev", aliases: ["p"]),
    ])

    @Test func typesResolveByNameAndAlias() throws {
        #expect(try Self.catalog.resolve("HSP").type == "HostnameSpecs.net.cosi.dev")
        #expect(try Self.catalog.resolve("hostnamestatuses").type == "HostnameStatuses.net.cosi.dev")
        #expect(try Self.catalog.resolve("hostnamespecs.net.cosi.dev").defaultNamespace == "network")
        if case .undefined(let type) = try Self.catalog.resolve("Widgets.test.dev") { #expect(type == "Widgets.test.dev") } else { Issue.record("undefined") }
        #expect(throws: CLIError.self) { try Self.catalog.resolve("widgets") }
        #expect(Self.catalog.unknown("hostnamespecz").message == "no resource type \"hostnamespecz\"; did you mean hostnamespecs?")
        #expect(Self.catalog.unknown("zzzzzzzzzz").message.contains("is defined (`cosictl get rd` lists the types)"))
        do {
            _ = try Self.catalog.resolve("p")
            Issue.record("ambiguous")
        } catch {
            #expect(error.message.contains("\"p\" is ambiguous: it names Pears.test.dev (p), Plums.test.dev (p)"))
        }
        #expect(Self.catalog.statusType(of: "HostnameSpecs.net.cosi.dev")?.resourceType == "HostnameStatuses.net.cosi.dev")
        #expect(!TypeCatalog.isFullTypeName("hostnames") && TypeCatalog.isFullTypeName("Hostnames.net.cosi.dev"))
    }

    static let document = JSONValue.object([
        ("items", .array([
            .object([("metadata", .object([("id", .string("a"))])), ("spec", .object([("mtu", .number("1500")), ("tags", .array([.string("x"), .string("y")]))]))]),
            .object([("metadata", .object([("id", .string("b"))])), ("spec", .object([("mtu", .number("9000")), ("name", .string("007"))]))]),
        ])),
    ])

    @Test(arguments: [
        ("{.items[*].metadata.id}", "a b"),
        ("{.items[0].spec.mtu}", "1500"),
        ("{.items[-1].metadata.id}", "b"),
        ("{.items[0:1].metadata.id}", "a"),
        ("{.items[?(@.spec.mtu>1500)].metadata.id}", "b"),
        ("{.items[?(@.spec.name)].metadata.id}", "b"),
        ("{.items[?(@.metadata.id==\"a\")].spec.tags}", "x,y"),
        ("{..mtu}", "1500 9000"),
        ("{range .items[*]}{.metadata.id}={.spec.mtu}{\"\\n\"}{end}", "a=1500\nb=9000\n"),
        ("ids: {$.items[*]['metadata'].id}", "ids: a b"),
        ("{.items[1].spec.name}", "007"),
        ("{.items[0].spec}", #"{"mtu":1500,"tags":["x","y"]}"#),
    ])
    func jsonPathTemplates(_ template: String, _ expected: String) throws {
        #expect(try JSONPathTemplate(template).render(Self.document) == expected)
    }

    @Test(arguments: ["{.items", "{range .items[*]}{.a}", "{end}", "{.items[x]}", "{.items[?(@.a==b)]}"])
    func badTemplatesAreErrors(_ template: String) {
        #expect(throws: JSONPathTemplate.ParseError.self) { try JSONPathTemplate(template) }
    }

    @Test func greaterThanIsAnInvertedLessThan() throws {
        #expect(try LabelSelector.parse("weight>5").terms == [LabelTerm(key: "weight", op: .lteNumeric, value: ["5"], invert: true)])
        #expect(try LabelSelector.parse("weight>=10").terms == [LabelTerm(key: "weight", op: .ltNumeric, value: ["10"], invert: true)])
        #expect(try LabelSelector.parse("name>=m").terms == [LabelTerm(key: "name", op: .lt, value: ["m"], invert: true)])
        #expect(throws: LabelSelector.ParseError.self) { try LabelSelector.parse("a<>b=c") }
    }

    @Test func unifiedDiffs() {
        let diff = unifiedDiff("a\nb\nc\n", "a\nB\nc\n", from: "old", to: "new")
        #expect(diff == "--- old\n+++ new\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n")
        #expect(unifiedDiff("same\n", "same\n", from: "x", to: "y") == "")
        #expect(unifiedDiff("", "new\n", from: "/dev/null", to: "y") == "--- /dev/null\n+++ y\n@@ -0,0 +1,1 @@\n+new\n")
    }

    @Test func globalFlagsMoveAfterTheCommand() throws {
        #expect(try Cosictl.rewrite(["--context", "prod", "get", "ns"]) == ["get", "--context", "prod", "ns"])
        #expect(try Cosictl.rewrite(["--endpoint=h:1", "info"]) == ["info", "--endpoint=h:1"])
        #expect(try Cosictl.rewrite(["--help"]) == ["--help"])
        #expect(throws: CLIError.self) { try Cosictl.rewrite(["nosuch"]) }
    }

    @Test func yamlStringsAreQuotedWhenTheyWouldReadAsSomethingElse() throws {
        let resource = Resource(metadata: Metadata(namespace: "default", type: "T.test.dev", id: "007", version: "2", labels: ["a": "true", "b": "plain"]), spec: Spec(yamlSpec: "x: 1\n"))
        let yaml = try ResourceYAML.encode(resource)
        #expect(yaml.contains("id: '007'") && yaml.contains("version: '2'") && yaml.contains("a: 'true'") && yaml.contains("b: plain"), "\(yaml)")
        let back = try ResourceYAML.decode(yaml)
        #expect(back.first?.metadata.labels == resource.metadata.labels && back.first?.metadata.id == "007")
    }
}

import Foundation

@Suite("YAML round trips")
struct YAMLRoundTripTests {
    /// What the resource-yaml fuzz harness checks, on its seeds and on the forms that once broke
    /// it: a resource's own YAML reads back as one resource.
    @Test func seedsAndMetaTypesReadBack() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz/corpus/resource-yaml").standardized
        var texts = try FileManager.default.contentsOfDirectory(atPath: corpus.path).map { try String(contentsOf: corpus.appendingPathComponent($0), encoding: .utf8) }
        texts += [
            "metadata: {type: ResourceDefinitions.meta.cosi.dev, id: x.test.dev}\nspec: {resourceType: Xs.test.dev}\n",
            "metadata: {type: ResourceDefinitions.meta.cosi.dev, id: y}\n",
            "metadata: {namespace: meta, type: Namespaces.meta.cosi.dev, id: n}\nspec: {description: '007'}\n",
            "metadata: {type: T.test.dev, id: a, labels: {'1': '2'}}\nspec: 'a: b: c'\n",
        ]
        for text in texts {
            guard let resources = try? ResourceYAML.decode(text) else { continue }
            for resource in resources {
                let again = try ResourceYAML.decode(try ResourceYAML.encode(resource))
                #expect(again.count == 1 && again.first?.metadata == resource.metadata, "\(text)")
                // YAML anchors may come back written differently; the spec reads the same.
                #expect(again.first.map { ResourceYAML.canonicalSpec($0.spec) == ResourceYAML.canonicalSpec(resource.spec) && $0.spec.protoSpec == resource.spec.protoSpec } == true || text.contains("&"), "\(text)")
            }
        }
    }
}
