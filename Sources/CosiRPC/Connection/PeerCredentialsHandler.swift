import CosiTLS
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// On a Unix domain socket, stands in for the TLS handshake: reads the peer's process
/// credentials (SO_PEERCRED) and announces the identity they give, so the connection handler
/// treats the connection like an authenticated one. uid 0 is `root` with role `os:admin`;
/// any other uid is `uid:N` with no role.
final class PeerCredentialsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// `struct ucred` (pid, uid, gid), which Swift's Glibc module does not export.
    struct Credentials: Sendable {
        var pid: Int32 = 0
        var uid: UInt32 = .max
        var gid: UInt32 = .max
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        #if os(Linux)
        if let provider = context.channel as? any SocketOptionProvider {
            let future: EventLoopFuture<Credentials> = provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(17 /* SO_PEERCRED */))
            future.assumeIsolated().whenComplete { result in
                let identity = (try? result.get()).map(Self.identity(uid:)) ?? Self.identity(uid: .max)
                context.fireUserInboundEventTriggered(TLSHandshakeCompleted(peer: identity, alpn: nil))
            }
            return
        }
        #endif
        context.fireUserInboundEventTriggered(TLSHandshakeCompleted(peer: Self.identity(uid: .max), alpn: nil))
    }

    static func identity(uid credentials: Credentials) -> PeerIdentity { identity(uid: credentials.uid) }

    static func identity(uid: UInt32) -> PeerIdentity {
        uid == 0
            ? PeerIdentity(commonName: "root", organizations: ["os:admin"], fingerprint: "unix-uid-0")
            : PeerIdentity(commonName: "uid:\(uid)", organizations: [], fingerprint: "unix-uid-\(uid)")
    }
}
