// swift-tools-version:6.1
// Allocation and time benchmarks of swift-cosi's hot paths (ordo-one/benchmark), in a package
// of their own so that the daemon's build and tests do not build the benchmark framework.
//
//     cd Benchmarks && swift package benchmark
//
// See docs/PERFORMANCE.md ("Allocations on the hot paths").
import PackageDescription

let package = Package(
    name: "swift-cosi-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-cosi", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "HotPaths",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "CosiWire", package: "swift-cosi"),
                .product(name: "CosiMessages", package: "swift-cosi"),
                .product(name: "CosiRPC", package: "swift-cosi"),
                .product(name: "CosiState", package: "swift-cosi"),
                .product(name: "CosiStateService", package: "swift-cosi"),
                .product(name: "CosiTLS", package: "swift-cosi"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/HotPaths",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
