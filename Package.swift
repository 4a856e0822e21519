// swift-tools-version:6.1
import PackageDescription

// Layers: every module, top to bottom, and every project module it imports. Arrows point down
// only; scripts/check-layers (run by scripts/test) fails when an import or a dependency below
// disagrees with this list.
//
//   cosid            -> CosiDaemon, CosiOSControllers, CosiState, CosiMessages
//   CosiDaemon       -> CosiServer, CosiOSControllers, CosiNetlink, CosiState, CosiRPC, CosiMessages, CosiTLS
//   cosi-bench       -> CosiServer, CosiClient, CosiController, CosiOSControllers, CosiNetlink, CosiState, CosiRPC, CosiMessages, CosiProtobuf, CosiTLS
//   cosictl          -> CosiCLI
//   cosi-controller-example -> CosiClient, CosiController, CosiMessages, CosiTLS
//   CosiCLI          -> CosiClient, CosiRPC, CosiMessages, CosiTLS
//   CosiTesting      -> CosiServer, CosiClient, CosiStateService, CosiState, CosiRPC, CosiWire, CosiMessages, CosiTLS
//   CosiServer       -> CosiStateService, CosiControllerService, CosiControllerRuntime, CosiState, CosiRPC, CosiMessages, CosiProtobuf, CosiTLS
//   CosiClient       -> CosiRPC, CosiController, CosiMessages, CosiProtobuf, CosiTLS
//   CosiStateService -> CosiState, CosiRPC, CosiMessages
//   CosiControllerService -> CosiControllerRuntime, CosiController, CosiRPC, CosiMessages
//   CosiControllerRuntime -> CosiController, CosiState, CosiMessages
//   CosiState        -> CosiMessages, CSQLite, CRE2
//   CosiOSControllers -> CosiController, CosiMessages, CosiNetlink
//   CosiNetlink      -> CMnl
//   CosiController   -> CosiMessages
//   CosiRPC          -> CosiWire, CosiTLS, CosiProtobuf, CCosiRPCProto, CProtobufC
//   CosiMessages     -> CosiProtobuf, CCosiProto, CProtobufC
//   CosiProtobuf     -> CProtobufC
//   CosiTLS          -> COpenSSLShims, COpenSSL
//   CosiWire         -> none
//   COpenSSLShims    -> COpenSSL
//   CCosiProto       -> CProtobufC
//   CCosiRPCProto    -> CProtobufC
//   COpenSSL, CProtobufC, CSQLite, CRE2, CMnl -> none
// End of layers.
//
// The RPC core (CosiRPC) knows methods by name and bytes: no COSI module is below it. The state
// engine (CosiState) knows no networking. The CLI links the client side only.
let package = Package(
    name: "swift-cosi",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "cosid", targets: ["cosid"]),
        .executable(name: "cosi-bench", targets: ["cosi-bench"]),
        .executable(name: "cosictl", targets: ["cosictl"]),
        .executable(name: "cosi-controller-example", targets: ["cosi-controller-example"]),
        .library(name: "CosiClient", targets: ["CosiClient"]),
        .library(name: "CosiRPC", targets: ["CosiRPC"]),
        .library(name: "CosiMessages", targets: ["CosiMessages"]),
        // For the allocation benchmarks (Benchmarks/) and the fuzz harnesses (Fuzz/), packages
        // of their own.
        .library(name: "CosiWire", targets: ["CosiWire"]),
        .library(name: "CosiState", targets: ["CosiState"]),
        .library(name: "CosiStateService", targets: ["CosiStateService"]),
        .library(name: "CosiTLS", targets: ["CosiTLS"]),
        .library(name: "CosiProtobuf", targets: ["CosiProtobuf"]),
        .library(name: "CosiCLI", targets: ["CosiCLI"]),
        .library(name: "CosiOSControllers", targets: ["CosiOSControllers"]),
        .library(name: "CosiDaemon", targets: ["CosiDaemon"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // MARK: C libraries, each behind one thin Swift module.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .target(name: "COpenSSLShims", dependencies: ["COpenSSL"]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // rtnetlink for the network controllers: libmnl's sockets and attribute helpers.
        .systemLibrary(name: "CMnl", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        // RE2 is C++: a small C face over it (the id regexps of List and Watch).
        .target(name: "CRE2", linkerSettings: [.linkedLibrary("re2")]),
        // protoc-c output, regenerated by scripts/gen-protos: the RPC envelope, and COSI's messages.
        .target(name: "CCosiRPCProto", dependencies: ["CProtobufC"]),
        .target(name: "CCosiProto", dependencies: ["CProtobufC"]),

        // MARK: Transport building blocks.
        .target(
            name: "CosiTLS",
            dependencies: [
                "COpenSSLShims", "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "CosiWire", dependencies: [.product(name: "NIOCore", package: "swift-nio")]),
        // Swift values <-> protobuf-c: the bridge the generated message types use.
        .target(name: "CosiProtobuf", dependencies: ["CProtobufC", .product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "CosiMessages",
            dependencies: [
                "CosiProtobuf", "CCosiProto", "CProtobufC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),

        // MARK: The generic RPC core (no COSI in here).
        .target(
            name: "CosiRPC",
            dependencies: [
                "CosiWire", "CosiTLS", "CosiProtobuf", "CCosiRPCProto", "CProtobufC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: The state engine (no networking in it).
        .target(
            name: "CosiState",
            dependencies: [
                "CosiMessages", "CSQLite", "CRE2",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HashTreeCollections", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),

        // MARK: Controllers: the API a controller is written against (no engine, no network), and
        // the runtime that runs them on the state engine (no network).
        .target(
            name: "CosiController",
            dependencies: ["CosiMessages", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")]
        ),
        // rtnetlink requests and events (links, addresses, routes) in a chosen network namespace.
        .target(
            name: "CosiNetlink",
            dependencies: ["CMnl", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")]
        ),
        // The built-in operating-system controllers: specs in, the machine kept as they say.
        .target(
            name: "CosiOSControllers",
            dependencies: [
                "CosiController", "CosiMessages", "CosiNetlink",
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "CosiControllerRuntime",
            dependencies: [
                "CosiController", "CosiState", "CosiMessages",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),

        // MARK: COSI on top of the RPC core.
        .target(
            name: "CosiStateService",
            dependencies: [
                "CosiState", "CosiRPC", "CosiMessages",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(
            name: "CosiControllerService",
            dependencies: [
                "CosiControllerRuntime", "CosiController", "CosiRPC", "CosiMessages",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(
            name: "CosiClient",
            dependencies: [
                "CosiRPC", "CosiController", "CosiMessages", "CosiProtobuf", "CosiTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "CosiServer",
            dependencies: [
                "CosiStateService", "CosiControllerService", "CosiControllerRuntime", "CosiState", "CosiRPC", "CosiMessages", "CosiProtobuf", "CosiTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // MARK: The command-line client: its logic is a library, so it can be tested.
        .target(
            name: "CosiCLI",
            dependencies: [
                "CosiClient", "CosiRPC", "CosiMessages", "CosiTLS",
                .product(name: "Yams", package: "Yams"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),

        // MARK: Executables.
        .executableTarget(
            name: "cosictl",
            dependencies: ["CosiCLI"]
        ),
        // The daemon as a library: its settings and their config file, and its assembly
        // (engine, server, built-in controllers, certificate watcher, metrics, signals).
        .target(
            name: "CosiDaemon",
            dependencies: [
                "CosiServer", "CosiOSControllers", "CosiNetlink", "CosiState", "CosiRPC", "CosiMessages", "CosiTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The executable: flags and main only.
        .executableTarget(
            name: "cosid",
            dependencies: [
                "CosiDaemon", "CosiOSControllers", "CosiState", "CosiMessages",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "cosi-controller-example",
            dependencies: [
                "CosiClient", "CosiController", "CosiMessages", "CosiTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "cosi-bench",
            dependencies: [
                "CosiServer", "CosiClient", "CosiController", "CosiOSControllers", "CosiNetlink", "CosiState", "CosiRPC", "CosiMessages", "CosiProtobuf", "CosiTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),

        // MARK: Test support and tests.
        .target(
            name: "CosiTesting",
            dependencies: [
                "CosiServer", "CosiClient", "CosiStateService", "CosiState", "CosiRPC", "CosiWire", "CosiMessages", "CosiTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "CosiWireTests", dependencies: ["CosiWire", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(
            name: "CosiMessagesTests",
            dependencies: ["CosiMessages", "CosiProtobuf", "CosiTesting", .product(name: "NIOCore", package: "swift-nio")],
            resources: [.copy("Golden")]
        ),
        .testTarget(
            name: "CosiTLSTests",
            dependencies: [
                "CosiTLS", "COpenSSL", "CosiTesting", "CosiRPC", "CosiClient", "CosiMessages",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "CosiRPCTests",
            dependencies: [
                "CosiRPC", "CosiWire", "CosiTLS", "CosiTesting", "CosiMessages", "CosiProtobuf",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "CosiStateTests",
            dependencies: [
                "CosiState", "CosiStateService", "CosiTesting", "CosiRPC", "CosiMessages", "CosiProtobuf",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "CosiCLITests", dependencies: ["CosiCLI", "CosiMessages"]),
        .testTarget(
            name: "CosiClientTests",
            dependencies: [
                "CosiClient", "CosiTesting", "CosiServer", "CosiState", "CosiRPC", "CosiMessages",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "CosiStateServiceTests",
            dependencies: ["CosiStateService", "CosiClient", "CosiTesting", "CosiState", "CosiRPC", "CosiMessages"]
        ),
        .testTarget(
            name: "CosiOSControllersTests",
            dependencies: [
                "CosiOSControllers", "CosiNetlink", "CosiControllerRuntime", "CosiController", "CosiState", "CosiTesting", "CosiMessages",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "CosiControllerRuntimeTests",
            dependencies: [
                "CosiController", "CosiControllerRuntime", "CosiState", "CosiTesting", "CosiMessages",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "CosiServerTests",
            dependencies: [
                "CosiServer", "CosiClient", "CosiTesting", "CosiState", "CosiStateService", "CosiControllerRuntime", "CosiRPC", "CosiMessages", "CosiController", "CosiControllerService",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "CosidTests",
            dependencies: [
                "CosiClient", "CosiTesting", "CosiState", "CosiServer", "CosiTLS", "CosiRPC", "CosiMessages", "CosiController",
                "CosiDaemon", "cosid", "cosictl", "cosi-controller-example", "CosiWire",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ],
            // Golden files are read from the source tree (and rewritten by COSI_UPDATE_GOLDEN=1).
            exclude: ["Golden"]
        ),
    ]
)
