#if canImport(Glibc)
import Glibc
#endif
import CMnl
import NIOConcurrencyHelpers

/// One rtnetlink socket (libmnl's `mnl_socket`, owned: closed when this goes). A request socket
/// (no groups) sends requests and reads their answers, one request at a time; an event socket
/// (bound to multicast groups) is read by whoever polls its descriptor.
public final class NetlinkSocket: @unchecked Sendable {
    // The socket is used under `lock` only; `portID` never changes.
    private let socket: OpaquePointer
    private let lock = NIOLock()
    private var sequence: UInt32
    private let portID: UInt32
    private var buffer = [UInt8](repeating: 0, count: 64 << 10)
    private let writeCount = NIOLockedValueBox(0)

    /// The multicast groups (RTMGRP_*) of rtnetlink.
    public struct Groups: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let link = Groups(rawValue: UInt32(RTMGRP_LINK))
        public static let addresses = Groups(rawValue: UInt32(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        public static let routes = Groups(rawValue: UInt32(RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
    }

    /// Opens a socket in `namespace`, bound to `groups` (none: a request socket).
    public init(in namespace: NetworkNamespace, groups: Groups = []) throws(NetlinkError) {
        let opened = try namespace.run { () throws(NetlinkError) -> UInt in
            guard let socket = mnl_socket_open2(NETLINK_ROUTE, Int32(SOCK_CLOEXEC.rawValue)) else {
                throw NetlinkError(.unavailable, "open a netlink socket", errno: errno)
            }
            guard mnl_socket_bind(socket, groups.rawValue, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
                let error = errno
                mnl_socket_close(socket)
                throw NetlinkError(.unavailable, "bind a netlink socket", errno: error)
            }
            return UInt(bitPattern: socket)
        }
        socket = OpaquePointer(bitPattern: opened)!
        portID = mnl_socket_get_portid(socket)
        sequence = UInt32(truncatingIfNeeded: time(nil))
        let descriptor = mnl_socket_get_fd(socket)
        var on: Int32 = 1
        // The kernel's reasons in its answers, without a copy of the request.
        _ = setsockopt(descriptor, SOL_NETLINK, NETLINK_EXT_ACK, &on, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(descriptor, SOL_NETLINK, NETLINK_CAP_ACK, &on, socklen_t(MemoryLayout<Int32>.size))
        if !groups.isEmpty {
            // Room for a burst of events (100,000 routes added at once); past it, ENOBUFS says
            // events were lost, and the reader looks at everything again.
            var size: Int32 = 8 << 20
            if setsockopt(descriptor, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
                _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
        } else {
            // A request is answered at once; a kernel that does not answer is an error, not a hang.
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    deinit { mnl_socket_close(socket) }

    /// The descriptor, for poll(2) on an event socket.
    public var descriptor: Int32 { mnl_socket_get_fd(socket) }

    /// How many requests that change the kernel this socket has sent.
    public var writes: Int { writeCount.withLockedValue { $0 } }

    /// Reads every pending event of an event socket without waiting; returns whether any came
    /// (or some were lost, ENOBUFS: the reader must look at everything again).
    public func drain() -> Bool {
        lock.withLock {
            var any = false
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(mnl_socket_get_fd(socket), $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if count > 0 {
                    any = true
                    continue
                }
                if count < 0 && errno == EINTR { continue }
                if count < 0 && errno == ENOBUFS {
                    any = true
                    continue
                }
                return any
            }
        }
    }

    /// Sends one request that changes the kernel and waits for its acknowledgement.
    ///
    /// - Parameters:
    ///   - operation: what it does, for the error (`add address 10.0.0.1/24 to veth0`).
    ///   - build: writes the request's family header and attributes after the netlink header.
    public func change(_ type: Int32, flags: Int32, _ operation: @autoclosure () -> String, build: (UnsafeMutablePointer<nlmsghdr>) -> Void) throws(NetlinkError) {
        lock.lock()
        defer { lock.unlock() }
        writeCount.withLockedValue { $0 += 1 }
        _ = try exchange(type, flags: flags | NLM_F_ACK, operation, build: build) { _ in }
    }

    /// Sends a dump request and hands every answer message to `each`. A dump the kernel says was
    /// interrupted by a change is taken again from the start (`restart` first forgets what the
    /// interrupted one gave), up to 8 times; under changes that never stop, the last one is
    /// kept: the changes that interrupted it come as events, and the reader looks again.
    public func dump(
        _ type: Int32, _ operation: @autoclosure () -> String, build: (UnsafeMutablePointer<nlmsghdr>) -> Void, restart: () -> Void, each: (UnsafePointer<nlmsghdr>) -> Void
    ) throws(NetlinkError) {
        lock.lock()
        defer { lock.unlock() }
        for _ in 0..<8 {
            restart()
            guard try exchange(type, flags: NLM_F_DUMP, operation, build: build, each: each) else { return }
        }
    }

    /// A message's netlink header, read from its bytes.
    static func fields(_ header: UnsafePointer<nlmsghdr>) -> nlmsghdr {
        UnsafeRawPointer(header).loadUnaligned(as: nlmsghdr.self)
    }

    /// A message's family header (`ifinfomsg`, `rtmsg`...), when the message is long enough.
    public static func payload<T>(_ header: UnsafePointer<nlmsghdr>, as type: T.Type) -> T? {
        guard Int(fields(header).nlmsg_len) >= MemoryLayout<nlmsghdr>.size + MemoryLayout<T>.size, let payload = mnl_nlmsg_get_payload(header) else { return nil }
        return UnsafeRawPointer(payload).loadUnaligned(as: T.self)
    }

    /// Appends a family header to a request being built.
    public static func put<T>(_ header: UnsafeMutablePointer<nlmsghdr>, _ value: T) {
        guard let space = mnl_nlmsg_put_extra_header(header, MemoryLayout<T>.size) else { return }
        space.storeBytes(of: value, as: T.self)
    }

    /// One request and its answers; returns whether a dump was interrupted. Called under `lock`.
    private func exchange(
        _ type: Int32, flags: Int32, _ operation: () -> String, build: (UnsafeMutablePointer<nlmsghdr>) -> Void, each: (UnsafePointer<nlmsghdr>) -> Void
    ) throws(NetlinkError) -> Bool {
        sequence &+= 1
        let sequence = self.sequence
        var request = [UInt8](repeating: 0, count: 8192)
        let sent = request.withUnsafeMutableBytes { raw -> Int in
            guard let header = mnl_nlmsg_put_header(raw.baseAddress) else { return -1 }
            UnsafeMutableRawPointer(header).storeBytes(
                of: nlmsghdr(nlmsg_len: UInt32(MemoryLayout<nlmsghdr>.size), nlmsg_type: UInt16(type), nlmsg_flags: UInt16(NLM_F_REQUEST | flags), nlmsg_seq: sequence, nlmsg_pid: 0),
                as: nlmsghdr.self
            )
            build(header)
            return mnl_socket_sendto(socket, header, Int(Self.fields(header).nlmsg_len))
        }
        guard sent >= 0 else { throw NetlinkError(.unavailable, operation(), errno: errno) }
        var interrupted = false
        while true {
            let count = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(socket, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw NetlinkError(.unavailable, operation(), detail: "the kernel did not answer within 5 s") }
                throw NetlinkError(.unavailable, operation(), errno: errno)
            }
            var done = false
            var failure: NetlinkError?
            buffer.withUnsafeBytes { raw in
                var remaining = Int32(count)
                var header = raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
                while mnl_nlmsg_ok(header, remaining) {
                    defer { header = UnsafePointer(mnl_nlmsg_next(header, &remaining)) }
                    let fields = Self.fields(header)
                    guard fields.nlmsg_seq == sequence, fields.nlmsg_pid == 0 || fields.nlmsg_pid == portID else { continue }
                    if Int32(fields.nlmsg_flags) & NLM_F_DUMP_INTR != 0 { interrupted = true }
                    switch Int32(fields.nlmsg_type) {
                    case NLMSG_DONE:
                        done = true
                        // A dump that failed part way says so in its DONE message.
                        if let error = Self.payload(header, as: Int32.self), error < 0 {
                            failure = NetlinkError(.refused, operation(), errno: -error, detail: Self.extendedMessage(header, offset: MemoryLayout<Int32>.size))
                        }
                    case NLMSG_ERROR:
                        done = true
                        guard let payload = Self.payload(header, as: nlmsgerr.self) else {
                            failure = NetlinkError(.unavailable, operation(), detail: "a short error message from the kernel")
                            break
                        }
                        if payload.error != 0 { failure = NetlinkError(.refused, operation(), errno: -payload.error, detail: Self.extendedMessage(header)) }
                    default:
                        each(header)
                    }
                }
            }
            if let failure { throw failure }
            if done { return interrupted }
        }
    }

    /// The kernel's text in an error answer with extended acknowledgement attributes.
    private static func extendedMessage(_ header: UnsafePointer<nlmsghdr>, offset given: Int? = nil) -> String? {
        let flags = Int32(fields(header).nlmsg_flags)
        guard flags & NLM_F_ACK_TLVS != 0 else { return nil }
        // Capped (NETLINK_CAP_ACK): the error header is followed by the original header only.
        var offset = given ?? MemoryLayout<nlmsgerr>.size
        if given == nil, flags & NLM_F_CAPPED == 0 {
            guard let payload = Self.payload(header, as: nlmsgerr.self) else { return nil }
            offset += max(0, Int(payload.msg.nlmsg_len) - MemoryLayout<nlmsghdr>.size)
        }
        guard offset <= Int(fields(header).nlmsg_len) - MemoryLayout<nlmsghdr>.size else { return nil }
        var message: String?
        Attributes.each(header, offset: offset) { attribute in
            if Int32(mnl_attr_get_type(attribute)) == Int32(NLMSGERR_ATTR_MSG.rawValue) { message = Attributes.string(attribute) }
        }
        return message
    }
}

/// Reading a message's attributes (libmnl's `mnl_attr_for_each`, which is a C macro).
enum Attributes {
    static func each(_ header: UnsafePointer<nlmsghdr>, offset: Int, _ body: (UnsafePointer<nlattr>) -> Void) {
        guard let start = mnl_nlmsg_get_payload_offset(header, offset), let tail = mnl_nlmsg_get_payload_tail(header) else { return }
        walk(UnsafeRawPointer(start), UnsafeRawPointer(tail), body)
    }

    static func nested(_ attribute: UnsafePointer<nlattr>, _ body: (UnsafePointer<nlattr>) -> Void) {
        guard let start = mnl_attr_get_payload(attribute) else { return }
        walk(UnsafeRawPointer(start), UnsafeRawPointer(start) + Int(mnl_attr_get_payload_len(attribute)), body)
    }

    private static func walk(_ start: UnsafeRawPointer, _ end: UnsafeRawPointer, _ body: (UnsafePointer<nlattr>) -> Void) {
        var attribute = start.assumingMemoryBound(to: nlattr.self)
        while mnl_attr_ok(attribute, Int32(end - UnsafeRawPointer(attribute))) {
            body(attribute)
            attribute = UnsafePointer(mnl_attr_next(attribute))
        }
    }

    /// A 32-bit attribute, nil when its payload is shorter.
    static func u32(_ attribute: UnsafePointer<nlattr>) -> UInt32? {
        guard mnl_attr_get_payload_len(attribute) >= 4, let payload = mnl_attr_get_payload(attribute) else { return nil }
        return UnsafeRawPointer(payload).loadUnaligned(as: UInt32.self)
    }

    static func u8(_ attribute: UnsafePointer<nlattr>) -> UInt8? {
        guard mnl_attr_get_payload_len(attribute) >= 1, let payload = mnl_attr_get_payload(attribute) else { return nil }
        return UnsafeRawPointer(payload).load(as: UInt8.self)
    }

    static func string(_ attribute: UnsafePointer<nlattr>) -> String {
        let length = Int(mnl_attr_get_payload_len(attribute))
        guard let payload = mnl_attr_get_payload(attribute), length > 0 else { return "" }
        let bytes = UnsafeRawBufferPointer(start: payload, count: length)
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    static func bytes(_ attribute: UnsafePointer<nlattr>) -> [UInt8] {
        let length = Int(mnl_attr_get_payload_len(attribute))
        guard let payload = mnl_attr_get_payload(attribute), length > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: payload, count: length))
    }
}
