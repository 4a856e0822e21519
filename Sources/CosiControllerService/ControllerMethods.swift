import CosiController
import CosiMessages
import CosiRPC

extension ControllerService {
    /// Every ControllerRuntime and ControllerAdapter method, ready to register on an RPC server
    /// (behind the access policy: `os:controller` or `os:admin`).
    public var methods: [RPCMethod] {
        [
            .unary(Self.register, Runtime.RegisterControllerRequest.self, Runtime.RegisterControllerResponse.self) { request, context in
                try mapped { () throws(ControllerError) in
                    Runtime.RegisterControllerResponse(controllerToken: try self.register(request, identity: context.peer.commonName))
                }
            },
            .unary(Self.start, Runtime.StartRequest.self, Runtime.StartResponse.self) { _, _ in
                try mapped { () throws(ControllerError) in
                    try self.runtime.startDelivery()
                    return Runtime.StartResponse()
                }
            },
            .unary(Self.stop, Runtime.StopRequest.self, Runtime.StopResponse.self) { _, _ in
                try mapped { () throws(ControllerError) in
                    try self.runtime.stopDelivery()
                    return Runtime.StopResponse()
                }
            },
            .serverStreaming(Self.reconcileEvents, Runtime.ReconcileEventsRequest.self, Runtime.ReconcileEventsResponse.self, waitsOnOthers: true) { request, context, writer in
                do {
                    try await self.streamEvents(request.controllerToken, context, writer)
                } catch let error as ControllerError {
                    throw Self.rpcError(error)
                }
            },
            .unary(Self.queueReconcile, Runtime.QueueReconcileRequest.self, Runtime.QueueReconcileResponse.self) { request, context in
                try await mappedAsync { try await self.handle(request.controllerToken, context).queueReconcile() }
                return Runtime.QueueReconcileResponse()
            },
            .unary(Self.updateInputs, Runtime.UpdateInputsRequest.self, Runtime.UpdateInputsResponse.self) { request, context in
                try await mappedAsync {
                    let inputs = try request.inputs.map { input throws(ControllerError) in try Self.input(input) }
                    try await self.handle(request.controllerToken, context).updateInputs(inputs)
                }
                return Runtime.UpdateInputsResponse()
            },
            .unary(Self.get, Runtime.RuntimeGetRequest.self, Runtime.RuntimeGetResponse.self) { request, context in
                try await mappedAsync {
                    Runtime.RuntimeGetResponse(resource: try await self.handle(request.controllerToken, context).get(namespace: request.namespace, type: request.type, id: request.id))
                }
            },
            .serverStreaming(Self.list, Runtime.RuntimeListRequest.self, Runtime.RuntimeListResponse.self) { request, context, writer in
                let resources = try await mappedAsync {
                    try await self.handle(request.controllerToken, context).list(namespace: request.namespace, type: request.type, labelQueries: request.options?.labelQuery ?? [])
                }
                var start = 0
                while start < resources.count {
                    let end = min(start + 256, resources.count)
                    try await writer.write(contentsOf: resources[start..<end].map { Runtime.RuntimeListResponse(resource: $0) })
                    start = end
                }
            },
            RPCMethod.unary(Self.watchFor, Runtime.RuntimeWatchForRequest.self, Runtime.RuntimeWatchForResponse.self) { request, context in
                let found = try await mappedAsync {
                    try await self.handle(request.controllerToken, context).watchFor(
                        namespace: request.namespace, type: request.type, id: request.id, finalizersEmpty: request.finalizersEmpty != nil
                    )
                }
                // A resource that does not exist comes back as a tombstone (version "undefined").
                return Runtime.RuntimeWatchForResponse(resource: found ?? .tombstone(namespace: request.namespace, type: request.type, id: request.id))
            }.waitingOnOthers(),
            .unary(Self.create, Runtime.RuntimeCreateRequest.self, Runtime.RuntimeCreateResponse.self) { request, context in
                guard let resource = request.resource else { throw RPCError(code: .invalidArgument, message: "resource is missing") }
                return Runtime.RuntimeCreateResponse(resource: try await mappedAsync { try await self.handle(request.controllerToken, context).create(resource) })
            },
            .unary(Self.update, Runtime.RuntimeUpdateRequest.self, Runtime.RuntimeUpdateResponse.self) { request, context in
                guard let resource = request.newResource else { throw RPCError(code: .invalidArgument, message: "new_resource is missing") }
                return Runtime.RuntimeUpdateResponse(resource: try await mappedAsync { try await self.handle(request.controllerToken, context).update(resource) })
            },
            // An owner in the options is ignored: the controller's name is the owner, always.
            .unary(Self.teardown, Runtime.RuntimeTeardownRequest.self, Runtime.RuntimeTeardownResponse.self) { request, context in
                Runtime.RuntimeTeardownResponse(ready: try await mappedAsync {
                    try await self.handle(request.controllerToken, context).teardown(namespace: request.namespace, type: request.type, id: request.id)
                })
            },
            .unary(Self.destroy, Runtime.RuntimeDestroyRequest.self, Runtime.RuntimeDestroyResponse.self) { request, context in
                try await mappedAsync { try await self.handle(request.controllerToken, context).destroy(namespace: request.namespace, type: request.type, id: request.id) }
                return Runtime.RuntimeDestroyResponse()
            },
            .unary(Self.addFinalizer, Runtime.RuntimeAddFinalizerRequest.self, Runtime.RuntimeAddFinalizerResponse.self) { request, context in
                try await mappedAsync {
                    try await self.handle(request.controllerToken, context).addFinalizers(namespace: request.namespace, type: request.type, id: request.id, request.finalizers)
                }
                return Runtime.RuntimeAddFinalizerResponse()
            },
            .unary(Self.removeFinalizer, Runtime.RuntimeRemoveFinalizerRequest.self, Runtime.RuntimeRemoveFinalizerResponse.self) { request, context in
                try await mappedAsync {
                    try await self.handle(request.controllerToken, context).removeFinalizers(namespace: request.namespace, type: request.type, id: request.id, request.finalizers)
                }
                return Runtime.RuntimeRemoveFinalizerResponse()
            },
        ]
    }
}

private func mapped<T>(_ body: () throws(ControllerError) -> T) throws -> T {
    do { return try body() } catch { throw ControllerService.rpcError(error) }
}

private func mappedAsync<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let error as ControllerError { throw ControllerService.rpcError(error) }
}
