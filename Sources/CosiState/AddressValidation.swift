import CosiMessages

/// Checks the parts of an address and names the first empty one.
func validateAddress(namespace: String, type: String, id: String?, field: String = "") throws(StateError) {
    let prefix = field.isEmpty ? "" : field + "."
    guard !namespace.isEmpty else { throw StateError(.invalidArgument, "\(prefix)namespace must not be empty") }
    guard !type.isEmpty else { throw StateError(.invalidArgument, "\(prefix)type must not be empty") }
    if let id, id.isEmpty { throw StateError(.invalidArgument, "\(prefix)id must not be empty") }
}
