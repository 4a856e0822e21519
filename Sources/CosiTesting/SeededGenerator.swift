import Foundation

/// A random number generator with a seed (SplitMix64), for tests that try many inputs: a failure
/// names its seed, and `COSI_TEST_SEED=N` replays it.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public let seed: UInt64
    private var state: UInt64

    /// The seed of `COSI_TEST_SEED` when set, else a fresh one.
    public init(seed: UInt64? = nil) {
        let chosen = seed ?? ProcessInfo.processInfo.environment["COSI_TEST_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 0 ... .max)
        self.seed = chosen
        state = chosen
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
