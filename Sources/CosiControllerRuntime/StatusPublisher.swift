import CosiController
import CosiMessages
import CosiState

// Every registered controller is published as a resource `Controllers.meta.cosi.dev` in the `meta`
// namespace (id = its name, owner "controller-runtime"), so `cosictl controllers` and
// `cosictl graph` read, and anyone with read access to `meta` can watch, what the runtime holds.
// Its spec is YAML: name, origin, identity, running, restarts, lastError, inputs, outputs.

extension ControllerRuntime {
    /// Registers the ResourceDefinition of the status type, when missing.
    func registerStatusDefinition() async {
        var spec = Meta.ResourceDefinitionSpec(resourceType: Self.statusType, defaultNamespace: MetaNamespace.namespace)
        spec.printColumns = [
            .init(name: "Origin", jsonPath: "{.origin}"),
            .init(name: "Running", jsonPath: "{.running}"),
            .init(name: "Restarts", jsonPath: "{.restarts}"),
            .init(name: "Identity", jsonPath: "{.identity}"),
        ]
        do {
            _ = try await engine.create(try MetaNamespace.definition(spec), owner: Self.owner)
        } catch let error as StateError where error.code == .alreadyExists {
        } catch {
            logger.error("cannot register the controller status type", metadata: ["error": "\(error)"])
        }
    }

    /// Writes the statuses that changed, coalesced, until cancelled.
    func publishStatuses() async {
        for await _ in statusEvents {
            for (name, status) in takeDirtyStatuses() {
                await publish(name, status)
            }
        }
    }

    private func publish(_ name: String, _ status: ControllerStatus?) async {
        let address = ResourceAddress(namespace: MetaNamespace.namespace, type: Self.statusType, id: name)
        do {
            let current = try? engine.get(address)
            guard let status else {
                if current != nil { try await engine.destroy(address, owner: Self.owner) }
                return
            }
            var resource = Resource(metadata: Metadata(namespace: address.kind.namespace, type: address.kind.type, id: name), spec: Spec(yamlSpec: Self.yaml(status)))
            if let current {
                guard current.spec.yamlSpec != resource.spec.yamlSpec else { return }
                resource.metadata.version = current.metadata.version
                _ = try await engine.update(resource, owner: Self.owner)
            } else {
                _ = try await engine.create(resource, owner: Self.owner)
            }
        } catch {
            logger.warning("cannot publish a controller status", metadata: ["controller": "\(name)", "error": "\(error)"])
        }
    }

    /// A status as YAML (flow style, strings quoted as JSON, which YAML reads the same).
    static func yaml(_ status: ControllerStatus) -> String {
        func quoted(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\t": out += "\\t"
                default:
                    if scalar.value < 0x20 {
                        let hex = String(scalar.value, radix: 16)
                        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
            return out + "\""
        }
        let (origin, identity): (String, String) = switch status.origin {
        case .local: ("local", "")
        case .remote(let identity): ("remote", identity)
        }
        var lines = [
            "name: \(quoted(status.name))",
            "origin: \(origin)",
            "identity: \(quoted(identity))",
            "running: \(status.running)",
            "restarts: \(status.restarts)",
            "lastError: \(quoted(status.lastError ?? ""))",
            "inputs:" + (status.inputs.isEmpty ? " []" : ""),
        ]
        for input in status.inputs {
            lines.append("- {kind: \(input.kind.rawValue), namespace: \(quoted(input.namespace)), type: \(quoted(input.type))\(input.id.map { ", id: \(quoted($0))" } ?? "")}")
        }
        lines.append("outputs:" + (status.outputs.isEmpty ? " []" : ""))
        for output in status.outputs {
            lines.append("- {kind: \(output.kind.rawValue), type: \(quoted(output.type))}")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
