import CosiWire
import NIOCore

/// Entry points for the fuzz harnesses (`Fuzz/`), behind an SPI so they are not part of the
/// library's API: `@_spi(Fuzzing) import CosiRPC`.
@_spi(Fuzzing)
public enum RPCFuzzing {
    /// Feeds `bytes`, as a client would send them after the TLS handshake, through the frame
    /// decoder into the server's connection state machine, and plays the server's part: every
    /// call that completes is answered (the request echoed, then a second message and TRAILERS
    /// for odd stream ids), PINGs advance the clock. Must never crash or hang, whatever the bytes.
    public static func serverConnection(_ bytes: ByteBuffer) {
        var decoder = FrameDecoder(maxFrameSize: RPCSettings.defaults.maxFrameSize, requireSettingsFirst: true)
        var machine = ServerConnectionStateMachine<Int>(localSettings: .defaults)
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var pending = machine.start()
        _ = machine.allowOutput(1 << 20)
        // Cut the input in two reads, as the network might.
        let split = bytes.readableBytes / 2
        for part in [bytes.getSlice(at: bytes.readerIndex, length: split), bytes.getSlice(at: bytes.readerIndex + split, length: bytes.readableBytes - split)] {
            guard let part else { continue }
            decoder.append(part)
            while !machine.isClosed {
                let next = decoder.nextFrameOrError()
                switch next {
                case .success(let frame?):
                    now = now + .milliseconds(7)
                    pending += machine.receive(frame, now: now)
                case .success(nil):
                    break
                case .failure(let error):
                    pending += machine.connectionError(error)
                }
                // Play the server's side of what the frames started.
                var index = 0
                while index < pending.count {
                    switch pending[index] {
                    case .startCall(let id, _, let request):
                        if id % 4 == 1 {
                            pending += machine.sendMessage(id, request, completion: Int(id))
                            pending += machine.finishCall(id, status: .ok)
                        } else {
                            pending += machine.finishCall(id, response: request, status: RPCStatus(code: .unknown, message: "fuzz"))
                        }
                    case .admitCall(let id, _) where id % 8 == 7:
                        pending += machine.refuseCall(id, status: RPCStatus(code: .permissionDenied, message: "fuzz"))
                    default:
                        break
                    }
                    index += 1
                }
                pending.removeAll(keepingCapacity: true)
                if case .success(nil) = next { break }
            }
        }
        _ = machine.channelClosed()
    }
}
