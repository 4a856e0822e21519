// swift-tools-version:6.1
// libFuzzer harnesses for what a peer or a user can hand cosid and cosictl, in a package of
// their own (they are built with the fuzzer and address sanitizers, which the daemon's build
// must not be).
//
//     scripts/fuzz TARGET SECONDS      (targets: scripts/fuzz --list)
//
// Seed corpora: Fuzz/corpus/TARGET. See docs/RELIABILITY.md ("Fuzzing").
import PackageDescription

let cosi: [Target.Dependency] = [
    .product(name: "CosiRPC", package: "swift-cosi"),
    .product(name: "CosiMessages", package: "swift-cosi"),
    .product(name: "CosiProtobuf", package: "swift-cosi"),
    .product(name: "CosiState", package: "swift-cosi"),
    .product(name: "CosiCLI", package: "swift-cosi"),
    .product(name: "NIOCore", package: "swift-nio"),
]

let package = Package(
    name: "swift-cosi-fuzz",
    dependencies: [
        .package(name: "swift-cosi", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        "FuzzServerConnection", "FuzzRequests", "FuzzQueries", "FuzzBookmarks", "FuzzResourceYAML",
    ].map { .executableTarget(name: $0, dependencies: cosi) } + [
        // cosid's settings, from the daemon's library.
        .executableTarget(
            name: "FuzzSettings",
            dependencies: cosi + [.product(name: "CosiDaemon", package: "swift-cosi")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
