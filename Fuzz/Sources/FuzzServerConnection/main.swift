@_spi(Fuzzing) import CosiRPC
import NIOCore

// The frame decoder feeding the server's connection state machine, which answers every call
// the frames complete: any bytes a client can send after the handshake.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    RPCFuzzing.serverConnection(ByteBuffer(bytes: UnsafeRawBufferPointer(start: start, count: count)))
    return 0
}
