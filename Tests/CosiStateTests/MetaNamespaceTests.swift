import CosiMessages
import CosiState
import CosiTesting
import NIOCore
import Testing

@Suite("The meta namespace")
struct MetaNamespaceTests {
    func definition(_ engine: StateEngine, _ id: String) throws -> Meta.ResourceDefinitionSpec {
        let resource = try engine.get(ResourceAddress(namespace: "meta", type: MetaNamespace.resourceDefinitionType, id: id))
        return try Meta.ResourceDefinitionSpec(serializedBytes: resource.spec.protoSpec)
    }

    @Test func builtInsAreRegisteredOwnedByMeta() throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        let rd = try definition(engine, "resourcedefinitions.meta.cosi.dev")
        #expect(rd.displayType == "ResourceDefinition")
        #expect(rd.aliases == ["resourcedefinition", "rd", "rds"])
        #expect(rd.allAliases == ["resourcedefinitions", "resourcedefinitions.meta", "resourcedefinitions.meta.cosi", "resourcedefinition", "rd", "rds"])
        let ns = try definition(engine, "namespaces.meta.cosi.dev")
        #expect(ns.aliases == ["namespace", "ns"])
        let meta = try engine.get(ResourceAddress(namespace: "meta", type: MetaNamespace.namespaceType, id: "meta"))
        #expect(meta.metadata.owner == "meta")
    }

    @Test func definitionsAreCheckedAndCompleted() async throws {
        let engine = try StateBackends.memory().engine
        defer { engine.shutdown() }
        let good = try MetaNamespace.definition(Meta.ResourceDefinitionSpec(resourceType: "HostnameStatuses.net.talos.dev"))
        let stored = try await engine.create(good, owner: "admin")
        let spec = try Meta.ResourceDefinitionSpec(serializedBytes: stored.spec.protoSpec)
        #expect(spec.displayType == "HostnameStatus")
        #expect(spec.aliases == ["hostnamestatus", "hs"])
        #expect(spec.allAliases.prefix(3) == ["hostnamestatuses", "hostnamestatuses.net", "hostnamestatuses.net.talos"])

        for (type, reason) in [("hostnames.net.talos.dev", "CamelCase"), ("Hostname.net.talos.dev", "plural"), ("Hostnames.Net", "suffix"), ("Hostnames", "Name.suffix")] {
            let resource = Resource(
                metadata: Metadata(namespace: "meta", type: MetaNamespace.resourceDefinitionType, id: type.lowercased()),
                spec: Spec(protoSpec: Array(buffer: Meta.ResourceDefinitionSpec(resourceType: type).serializedBytes()))
            )
            await #expect(throws: StateError.self, "\(type): \(reason)") { _ = try await engine.create(resource, owner: "admin") }
        }
        // The id must be the type in lower case.
        var wrongID = try MetaNamespace.definition(Meta.ResourceDefinitionSpec(resourceType: "Mounts.block.talos.dev"))
        wrongID.metadata.id = "mounts"
        await #expect { _ = try await engine.create(wrongID, owner: "admin") } throws: { "\($0)".contains("lower case") }
    }

    @Test func singulars() {
        #expect(MetaNamespace.singular("HostnameStatuses") == "HostnameStatus")
        #expect(MetaNamespace.singular("Namespaces") == "Namespace")
        #expect(MetaNamespace.singular("Policies") == "Policy")
        #expect(MetaNamespace.singular("Boxes") == "Box")
        #expect(MetaNamespace.singular("Matches") == "Match")
        #expect(MetaNamespace.singular("Links") == "Link")
    }
}
