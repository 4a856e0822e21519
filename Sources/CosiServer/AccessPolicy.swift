import CosiMessages
import CosiProtobuf
import CosiRPC
import CosiState
import CosiStateService
import Logging
import NIOCore

/// A role, from a client certificate's Organization values.
public struct Role: RawRepresentable, Hashable, Sendable {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    public static let admin = Role(rawValue: "os:admin")
    public static let `operator` = Role(rawValue: "os:operator")
    public static let reader = Role(rawValue: "os:reader")
    public static let controller = Role(rawValue: "os:controller")
}

/// Who may call what (spec: access.md). Checked in one place, before any handler runs: every
/// COSI method is registered through ``AccessPolicy/guarded(_:)``.
///
/// - `os:admin`: everything.
/// - `os:operator`: State reads and writes of non-sensitive types outside `meta`, reads of `meta`.
/// - `os:reader`: State reads of non-sensitive types, `meta` included.
/// - `os:controller`: the controller services only.
/// - anyone authenticated: Info. Unknown roles are ignored; roles add up.
public struct AccessPolicy: Sendable {
    /// What a call does.
    public enum Operation: Sendable, Equatable {
        case info
        case stateRead(namespace: String, type: String)
        /// A State write; `owner` is the owner the request names (its options' owner, or the
        /// owner a Create gives), "" when none.
        case stateWrite(namespace: String, type: String, owner: String = "")
        /// A change (the Changes service's Apply): a State write of each resource, by position.
        case change([ResourceKind], dryRun: Bool)
        /// Confirming or reverting a change: what an operator may do.
        case changeControl
        case controller
    }

    /// Whether a type is sensitive (its ResourceDefinition says SENSITIVE).
    let isSensitive: @Sendable (String) -> Bool
    let audit: Logger

    public init(isSensitive: @escaping @Sendable (String) -> Bool, audit: Logger) {
        self.isSensitive = isSensitive
        self.audit = audit
    }

    /// nil when `roles` may perform `operation`; otherwise why not, naming the role needed.
    public func refusal(_ operation: Operation, roles: Set<Role>) -> String? {
        if roles.contains(.admin) { return nil }
        switch operation {
        case .info:
            return nil
        case .controller:
            return roles.contains(.controller) ? nil : "needs role os:controller or os:admin"
        case .changeControl:
            return roles.contains(.operator) ? nil : "confirming or reverting a change needs role os:operator or os:admin"
        case .change(let kinds, _):
            guard roles.contains(.operator) else { return "changes need role os:operator or os:admin" }
            for (index, kind) in kinds.enumerated() {
                if let reason = refusal(.stateWrite(namespace: kind.namespace, type: kind.type), roles: roles) {
                    return "resource \(index + 1) of \(kinds.count) (\(kind.namespace)/\(kind.type)): \(reason)"
                }
            }
            return nil
        case .stateRead(let namespace, let type), .stateWrite(let namespace, let type, _):
            let write: Bool = if case .stateWrite = operation { true } else { false }
            if isSensitive(type) {
                return "\(type) is a sensitive type: needs role os:admin"
            }
            if write {
                if namespace == MetaNamespace.namespace { return "writes to the meta namespace need role os:admin" }
                // Controller outputs belong to their controller (access.md): a write that names
                // an owner is an admin's override. A write of an owned resource that names none
                // is refused by the engine's owner check, with the owner's name.
                if case .stateWrite(_, _, let owner) = operation, !owner.isEmpty {
                    return "owned by controller \(owner): controllers write their outputs through the controller runtime; only os:admin may write a resource as its owner"
                }
                return roles.contains(.operator) ? nil : "writes need role os:operator or os:admin"
            }
            return roles.contains(.operator) || roles.contains(.reader) ? nil : "reads need role os:reader, os:operator or os:admin"
        }
    }

    /// `method` with the policy in front of it and the audit log behind it. `operation` reads
    /// what the call does from its request; a request that does not decode is left to the
    /// handler (INVALID_ARGUMENT), after a check that the caller has any State role at all.
    ///
    /// The check runs when the call's HEADERS arrive, with what the method does at best (so a
    /// caller whose roles allow no call of it is refused before its request is read), before
    /// the handler, with what the request asks for, and before every message of a streaming
    /// call (a type can become sensitive while a watch of it runs).
    public func guarded(_ method: RPCMethod, operation: @escaping @Sendable (ByteBuffer) -> Operation?, isWrite: Bool) -> RPCMethod {
        let name = method.name
        // What a call of this method does at best: a State call on an ordinary type outside
        // `meta` (an empty request reads as one), or a controller call.
        let least = operation(ByteBuffer()) ?? (isWrite ? .stateWrite(namespace: "", type: "") : .stateRead(namespace: "", type: ""))
        @Sendable func check(_ decided: Operation, _ context: CallContext) throws {
            // An admin may do everything: decided without building the role set.
            if context.peer.organizations.contains(Role.admin.rawValue) { return }
            let roles = Set(context.peer.organizations.map(Role.init(rawValue:)))
            if let reason = refusal(decided, roles: roles) {
                audit.notice("refused", metadata: [
                    "method": "\(name)", "identity": "\(context.peer.commonName)",
                    "roles": "\(context.peer.organizations.joined(separator: ","))", "reason": "\(reason)",
                    "sha256": "\(context.peer.fingerprint.prefix(16))",
                ])
                throw RPCError(code: .permissionDenied, message: "\(name): \(reason)")
            }
        }
        return method.intercepted(by: RPCInterceptor(
            admit: { context in try check(least, context) },
            before: { request, context in
                try check(operation(request) ?? .stateRead(namespace: "", type: ""), context)
            },
            // A type may become sensitive while a watch of it runs: decided again before every
            // message, so nothing the caller may no longer read is sent.
            beforeWrite: { request, context in
                try check(operation(request) ?? .stateRead(namespace: "", type: ""), context)
            },
            after: { request, context, status in
                guard isWrite, status.code == .ok else { return }
                var metadata: Logger.Metadata = [
                    "method": "\(name)", "identity": "\(context.peer.commonName)",
                    "roles": "\(context.peer.organizations.joined(separator: ","))",
                ]
                if context.metadata[StateService.dryRunKey] == "true" { return }
                if case .change(_, dryRun: true)? = operation(request) { return }
                guard case .stateWrite(let namespace, let type, let owner)? = operation(request) else {
                    audit.info("write", metadata: metadata)
                    return
                }
                metadata["kind"] = "\(namespace)/\(type)"
                if owner.isEmpty {
                    audit.info("write", metadata: metadata)
                } else {
                    // An admin writing a controller's output as its owner.
                    metadata["owner"] = "\(owner)"
                    audit.notice("owner override", metadata: metadata)
                }
            }
        ))
    }
}

extension AccessPolicy {
    /// The policy over a state engine: a type is sensitive when its ResourceDefinition says so.
    public static func over(_ engine: StateEngine, audit: Logger) -> AccessPolicy {
        AccessPolicy(isSensitive: { type in
            guard !type.isEmpty, let definition = try? engine.get(ResourceAddress(
                namespace: MetaNamespace.namespace, type: MetaNamespace.resourceDefinitionType, id: type.lowercased()
            )) else { return false }
            let spec = try? Meta.ResourceDefinitionSpec(serializedBytes: definition.spec.protoSpec)
            return spec?.sensitivity == .sensitive
        }, audit: audit)
    }

    /// Every State method, guarded.
    public func guardedStateMethods(_ methods: [RPCMethod]) -> [RPCMethod] {
        methods.map { method in
            let (operation, write) = Self.stateOperation(method.name)
            return guarded(method, operation: operation, isWrite: write)
        }
    }

    /// Every Changes method, guarded: Apply as a State write of each of its resources, Confirm and
    /// Revert as an operator's, History as a State read of the resource's type.
    public func guardedChangeMethods(_ methods: [RPCMethod]) -> [RPCMethod] {
        methods.map { method in
            switch method.name {
            case ChangeService.apply:
                return guarded(method, operation: { bytes in
                    guard let request = try? ApplyChangeRequest(serializedBytes: bytes) else { return nil }
                    return .change(request.resources.map { $0.address.kind }, dryRun: request.dryRun)
                }, isWrite: true)
            case ChangeService.history:
                return guarded(method, operation: Self.stateOperation(StateService.get).0, isWrite: false)
            default:
                return guarded(method, operation: { _ in .changeControl }, isWrite: true)
            }
        }
    }

    /// Every controller-service method, guarded (`os:controller` or `os:admin`); `writes` are
    /// audited.
    public func guardedControllerMethods(_ methods: [RPCMethod], writes: Set<String>) -> [RPCMethod] {
        methods.map { guarded($0, operation: { _ in .controller }, isWrite: writes.contains($0.name)) }
    }

    /// How to read what a State call does from its request: its namespace and type, scanned
    /// from the request's bytes without decoding it (the handler decodes it once). A request
    /// whose bytes are not a protobuf message reads as nothing (the handler answers
    /// INVALID_ARGUMENT).
    static func stateOperation(_ method: String) -> (@Sendable (ByteBuffer) -> Operation?, Bool) {
        /// `namespace` and `type` at these paths; `within`, when set, must be present.
        func scan(_ namespace: [Int], _ type: [Int], within: [Int]? = nil, owner: [Int]? = nil, write: Bool) -> @Sendable (ByteBuffer) -> Operation? {
            { bytes in
                do {
                    if let within, try !WireScan.contains(within, in: bytes) { return nil }
                    let namespace = try WireScan.string(at: namespace, in: bytes) ?? ""
                    let type = try WireScan.string(at: type, in: bytes) ?? ""
                    let named = try owner.flatMap { try WireScan.string(at: $0, in: bytes) } ?? ""
                    return write ? .stateWrite(namespace: namespace, type: type, owner: named) : .stateRead(namespace: namespace, type: type)
                } catch {
                    return nil
                }
            }
        }
        switch method {
        case "/cosi.resource.State/Get", "/cosi.resource.State/List", "/cosi.resource.State/Watch":
            return (scan([1], [2], write: false), false)
        // The owner a write names: CreateOptions.owner (2.1), UpdateOptions.owner (3.1), the
        // other options' owner (4.1).
        case "/cosi.resource.State/Create": return (scan([1, 1, 1], [1, 1, 2], within: [1], owner: [2, 1], write: true), true)
        case "/cosi.resource.State/Update": return (scan([2, 1, 1], [2, 1, 2], within: [2], owner: [3, 1], write: true), true)
        case "/cosi.resource.State/Destroy", "/cosi.resource.State/Teardown", "/cosi.resource.State/TeardownAndDestroy":
            return (scan([1], [2], owner: [4, 1], write: true), true)
        default: return ({ _ in .controller }, true)
        }
    }
}
