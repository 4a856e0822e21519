import CosiMessages
import CosiNetlink
import CosiOSControllers
import CosiServer
import CosiState
import Foundation
import Logging
import NIOCore

/// Defines what cosid uses whichever controllers run: the namespaces of the built-in types and
/// the types themselves (brought up to date when an older cosid defined them differently).
func defineBuiltIns(server: CosiServer, logger: Logger) async {
    var wanted: [Resource] = BuiltInControllers.namespaces.map { name, description in
        Resource(
            metadata: Metadata(namespace: MetaNamespace.namespace, type: MetaNamespace.namespaceType, id: name),
            spec: Spec(protoSpec: Array(buffer: Meta.NamespaceSpec(description: description).serializedBytes()))
        )
    }
    for setting in BuiltInControllers.all {
        for spec in BuiltInControllers.definitions(setting) {
            do { wanted.append(try MetaNamespace.definition(spec)) } catch { logger.warning("cannot define \(spec.resourceType): \(error)") }
        }
    }
    for resource in wanted {
        do {
            if var current = try? server.engine.get(resource.address) {
                // A namespace someone described differently is left as it is.
                guard current.spec != resource.spec, resource.metadata.type == MetaNamespace.resourceDefinitionType else { continue }
                current.spec = resource.spec
                _ = try await server.engine.update(current, owner: current.metadata.owner)
            } else {
                _ = try await server.engine.create(resource, owner: "cosid")
            }
        } catch {
            logger.warning("cannot define \(resource.metadata.id): \(error)")
        }
    }
}

/// Registers the chosen built-in controllers on `server`, acting under `settings.root`. A root
/// other than `/` is a sandbox: created, and seeded with a few kernel parameter files so
/// kernel-parameter specs have something to act on.
func startBuiltInControllers(_ settings: CosidSettings, server: CosiServer, logger: Logger) async throws {
    await defineBuiltIns(server: server, logger: logger)
    let chosen = try BuiltInControllers.select(settings.controllers)
    guard !chosen.isEmpty else { return }
    let given = settings.root.hasPrefix("/") ? settings.root : FileManager.default.currentDirectoryPath + "/" + settings.root
    // `/.` or `/etc/..` is the machine itself, not a sandbox: judged by the real path.
    let path = URL(fileURLWithPath: given).standardizedFileURL.resolvingSymlinksInPath().path
    let root = MachineRoot(path)
    if !root.isSystemRoot {
        try root.makeDirectories(root.path)
        try BuiltInControllers.seedSandbox(root)
    }
    // A sandbox never touches the host: the kernel's hostname only in a UTS namespace of cosid's
    // own, mounts only in a mount namespace of its own.
    let liveHostname = root.isSystemRoot || Namespaces.isOwn("uts")
    let mounts = root.isSystemRoot || Namespaces.isOwn("mnt")
    // The network controllers: in --netns's namespace or cosid's own; in a sandbox only when that
    // is not the host's.
    let network = try settings.netns.map { path throws(NetlinkError) in try NetworkNamespace(path: path) } ?? .own
    let networkOn = root.isSystemRoot || !network.isHosts
    var off: [String] = []
    var started: [String] = []
    for var setting in chosen {
        if setting is HostnameSetting {
            setting = HostnameSetting(live: liveHostname)
            if !liveHostname { off.append("the live hostname") }
        }
        if setting is MountSetting, !mounts {
            off.append("the mounts controller")
            continue
        }
        if let networkSetting = setting as? any NetworkSetting {
            guard networkOn else {
                if !off.contains("the network controllers") { off.append("the network controllers") }
                continue
            }
            do {
                try server.controllers.register(NetworkController(networkSetting, namespace: network, resyncInterval: .seconds(settings.resyncInterval), logger: logger))
            } catch let error as NetlinkError {
                throw SettingsError("the \(setting.name) controller: \(error)")
            }
        } else if let machineSetting = setting as? any MachineSetting {
            try server.controllers.register(MachineController(machineSetting, root: root, resyncInterval: .seconds(settings.resyncInterval), logger: logger))
        }
        started.append(setting.name)
    }
    logger.notice("built-in controllers acting on \(root.isSystemRoot ? "this machine (/)" : "the sandbox \(root.path)")", metadata: [
        "controllers": "\(started.joined(separator: ","))",
        "live-hostname": "\(chosen.contains { $0 is HostnameSetting } && liveHostname ? "on" : "off")",
        "netns": "\(settings.netns ?? "cosid's own")",
    ])
    if !off.isEmpty {
        var command = CommandLine.arguments
        if off.contains("the network controllers"), settings.netns == nil { command += ["--netns", "/run/netns/NAME"] }
        logger.notice(
            "\(off.joined(separator: " and ")) off: cosid shares the host's namespaces and --root is a sandbox; to keep them in namespaces of its own, start it as root with: \(Namespaces.unshareCommand(command))\(off.contains("the network controllers") ? " (after ip netns add NAME)" : "")"
        )
    }
}
