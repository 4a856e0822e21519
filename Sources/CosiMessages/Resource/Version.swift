/// The version of swift-cosi: what `cosid` reports through Info and `cosictl version` prints.
/// Defined once, here, for both.
public let cosiVersion = "0.2.0"
