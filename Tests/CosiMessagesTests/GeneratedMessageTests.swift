import CosiMessages
import CosiProtobuf
import NIOCore
import Testing

/// The generated Swift types for state.proto, meta.proto and runtime.proto round-trip through
/// protobuf-c, including explicit presence, nested messages, enums and repeated messages.
@Suite("Generated message types")
struct GeneratedMessageTests {
    func roundTrip<M: ProtobufMessage>(_ message: M) throws -> M {
        try M(serializedBytes: message.serializedBytes())
    }

    @Test func watchRequestKeepsPresence() throws {
        let full = WatchRequest(
            namespace: "default", type: "Hostnames", id: "",
            options: WatchOptions(
                bootstrapContents: true, tailEvents: 5,
                labelQuery: [LabelQuery(terms: [LabelTerm(key: "app", op: .in, value: ["a", "b"], invert: true)])],
                idQuery: IDQuery(regexp: "^node-"), aggregated: true, startFromBookmark: [], bootstrapBookmark: true
            ),
            apiVersion: 1
        )
        #expect(try roundTrip(full) == full)
        // An empty id and an empty bookmark are present, not absent.
        #expect(try roundTrip(full).id == "")
        #expect(try roundTrip(full).options?.startFromBookmark == [UInt8]())
        let bare = WatchRequest(namespace: "default", type: "Hostnames")
        #expect(try roundTrip(bare).id == nil)
        #expect(try roundTrip(bare).options == nil)
    }

    @Test func updateRequestOptionalPhase() throws {
        let request = UpdateRequest(
            newResource: Resource(metadata: Metadata(namespace: "n", type: "t", id: "i", version: "2")),
            options: UpdateOptions(owner: "ctrl", expectedPhase: "running")
        )
        #expect(try roundTrip(request) == request)
        #expect(try roundTrip(UpdateRequest(options: UpdateOptions())).options?.expectedPhase == nil)
    }

    @Test func resourceDefinitionWithNestedMessagesAndEnums() throws {
        let spec = Meta.ResourceDefinitionSpec(
            resourceType: "Hostnames.net.talos.dev", displayType: "Hostname", defaultNamespace: "network",
            aliases: ["hostname"], allAliases: ["hostname", "hostnames"],
            printColumns: [.init(name: "Hostname", jsonPath: "{.hostname}"), .init(name: "Domain", jsonPath: "{.domainname}")],
            sensitivity: .sensitive
        )
        #expect(try roundTrip(spec) == spec)
        #expect(try roundTrip(Meta.ResourceDefinitionSpec.PrintColumn(name: "x", jsonPath: "{.x}")).name == "x")
    }

    @Test func controllerRegistration() throws {
        let request = Runtime.RegisterControllerRequest(
            controllerName: "network.HostnameController",
            inputs: [
                .init(kind: .strong, namespace: "network", type: "HostnameSpecs", id: "hostname"),
                .init(kind: .destroyReady, namespace: "config", type: "MachineConfigs", id: nil),
            ],
            outputs: [.init(type: "HostnameStatuses", kind: .shared)]
        )
        let decoded = try roundTrip(request)
        #expect(decoded == request)
        #expect(decoded.inputs[1].id == nil)
        #expect(try roundTrip(Runtime.Options(owner: "")).owner == "")
        #expect(try roundTrip(Runtime.Options()).owner == nil)
    }

    @Test func watchResponsesAssembledFromCachedEventsEqualTheEncoder() throws {
        let cache = EncodingCache(forms: 1)
        var big = Event(resource: Resource(metadata: Metadata(namespace: "n", type: "t", id: String(repeating: "x", count: 300))), type: .updated, bookmark: [1, 2, 3])
        big.encodingCache = cache.slot(0)
        let small = Event(resource: nil, type: .noop, bookmark: [9])
        let events = [big, small, big]
        #expect(encodeWatchResponse(events) == WatchResponse(event: events).serializedBytes())
        #expect(encodeWatchResponse([]) == WatchResponse().serializedBytes())
        // The cached bytes are reused: a second assembly gives the same bytes.
        #expect(encodeWatchResponse([big]) == WatchResponse(event: [big]).serializedBytes())
    }

    @Test func eventTypeAndUnknownEnumValuesSurvive() throws {
        let response = WatchResponse(event: [
            Event(resource: nil, type: .bootstrapped),
            Event(resource: nil, type: EventType(rawValue: 42)),
        ])
        #expect(try roundTrip(response) == response)
    }
}
