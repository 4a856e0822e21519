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
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        "FuzzServerConnection", "FuzzRequests", "FuzzQueries", "FuzzBookmarks", "FuzzResourceYAML",
    ].map { .executableTarget(name: $0, dependencies: cosi) } + [
        // cosid's Settings.swift, through a symbolic link (the settings live in the executable).
        .executableTarget(
            name: "FuzzSettings",
            dependencies: cosi + [
                .product(name: "CosiOSControllers", package: "swift-cosi"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ],
            // Settings.swift conforms CosiState's SyncMode to ArgumentParser's protocol, which
            // is not retroactive inside swift-cosi but is from here.
            swiftSettings: [.unsafeFlags(["-suppress-warnings"])]
        ),
    ],
    swiftLanguageModes: [.v6]
)
