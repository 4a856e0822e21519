import CosiController
import CosiMessages

/// The built-in operating-system controllers, by the names `cosid --controllers` takes.
public enum BuiltInControllers {
    /// The settings kept in files, procfs, the UTS and mount namespaces, in the order of
    /// `--controllers all`.
    public static let settings: [any MachineSetting] = [
        HostnameSetting(), ResolverSetting(), StaticHostSetting(), KernelParamSetting(), TimeServerSetting(), MountSetting(),
    ]

    /// The network settings, kept over rtnetlink (after ``settings`` in `--controllers all`).
    public static let network: [any NetworkSetting] = [LinkSetting(), AddressSetting(), RouteSetting()]

    /// Every setting.
    public static var all: [any BuiltInSetting] { settings.map { $0 as any BuiltInSetting } + network.map { $0 as any BuiltInSetting } }

    /// Every name (`hostname`, `resolvers`, `hosts`, `kernel-params`, `time-servers`, `mounts`,
    /// `links`, `addresses`, `routes`).
    public static var names: [String] { all.map(\.name) }

    /// The settings a `--controllers` list chooses: names separated by commas, `all` or `none`.
    ///
    /// - Throws: ``ControllerError`` (invalid argument) naming an unknown controller.
    public static func select(_ list: String) throws(ControllerError) -> [any BuiltInSetting] {
        let wanted = list.split(separator: ",").map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
        if wanted == ["none"] || wanted.isEmpty { return [] }
        if wanted == ["all"] { return all }
        for name in wanted where !names.contains(name) {
            throw ControllerError(.invalidArgument, "unknown controller \"\(name)\": choose from \(names.joined(separator: ", ")), all or none")
        }
        return all.filter { wanted.contains($0.name) }
    }

    /// The ResourceDefinitions of a setting's spec and status types, with their print columns
    /// and short names.
    public static func definitions(_ setting: any BuiltInSetting) -> [Meta.ResourceDefinitionSpec] {
        // Every status counts its drift corrections: a column before the error.
        var statusColumns = setting.statusColumns
        statusColumns.insert(("Drift", "{.driftCorrections}"), at: statusColumns.firstIndex { $0.0 == "Error" } ?? statusColumns.endIndex)
        return [(setting.specType, setting.specColumns, setting.aliases.spec), (setting.statusType, statusColumns, setting.aliases.status)].map { type, columns, aliases in
            Meta.ResourceDefinitionSpec(
                resourceType: type, defaultNamespace: setting.namespace, aliases: aliases,
                printColumns: columns.map { Meta.ResourceDefinitionSpec.PrintColumn(name: $0.0, jsonPath: $0.1) }
            )
        }
    }

    /// The namespaces the built-in controllers use, with their descriptions.
    public static let namespaces: [(String, String)] = [
        ("default", "resources written without a namespace"),
        ("network", "network settings: hostname, resolvers, static hosts, time servers, links, addresses, routes"),
        ("runtime", "runtime settings: kernel parameters, mounts"),
    ]

    /// The spec checks of every built-in spec type, by type.
    public static var specSchemas: [String: SpecSchema] {
        Dictionary(uniqueKeysWithValues: all.map { ($0.specType, $0.specSchema) })
    }

    /// A few kernel parameter files for a sandbox root, so kernel-parameter specs have something
    /// to act on outside a real `/proc/sys`: created only where missing.
    public static let sandboxKernelParameters: [(String, String)] = [
        ("net/ipv4/ip_forward", "0"), ("net/ipv6/conf/all/forwarding", "0"), ("vm/swappiness", "60"),
        ("kernel/pid_max", "4194304"), ("fs/file-max", "9223372036854775807"), ("net/core/somaxconn", "4096"),
    ]

    /// Seeds a sandbox root's `proc/sys` with ``sandboxKernelParameters`` (existing files are kept).
    public static func seedSandbox(_ root: MachineRoot) throws(MachineError) {
        for (path, value) in sandboxKernelParameters where try root.read("proc/sys/" + path) == nil {
            try root.replace("proc/sys/" + path, with: value + "\n")
        }
        try root.makeDirectories(root.resolve("etc"))
    }
}
