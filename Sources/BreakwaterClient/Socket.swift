import PosixThread

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The only place the client calls libc: retries EINTR and turns errno into a message with the call's name.
/// Hand-written because the shim must not pull in NIO; it needs a handful of blocking socket calls.
enum Socket {
    struct Failure: Error {
        let call: String
        let errno: Int32
        var message: String { "\(call) failed: \(String(cString: strerror(errno)))" }
    }

    static func connectUnix(path: String) throws(Failure) -> Int32 {
        #if canImport(Darwin)
        let fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #else
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #endif
        guard fd >= 0 else { throw Failure(call: "socket", errno: errno) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else {
            close(fd)
            throw Failure(call: "connect (path too long)", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                retryingEINTR { connect(fd, address, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw Failure(call: "connect", errno: e)
        }
        return fd
    }

    /// Writes all bytes from `offset` on, blocking.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], from offset: Int = 0) throws(Failure) {
        var offset = offset
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                retryingEINTR { send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL)) }
            }
            guard n > 0 else { throw Failure(call: "send", errno: n == 0 ? EPIPE : errno) }
            offset += n
        }
    }

    /// Writes as many bytes as the socket takes without waiting; returns how many that was (all, or fewer when
    /// its send buffer is full).
    static func writeAvailable(_ fd: Int32, _ bytes: [UInt8]) throws(Failure) -> Int {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                retryingEINTR {
                    send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                }
            }
            if n < 0, errno == EAGAIN || errno == EWOULDBLOCK { break }
            guard n > 0 else { throw Failure(call: "send", errno: n == 0 ? EPIPE : errno) }
            offset += n
        }
        return offset
    }

    /// Reads what is available (blocking until something is); 0 means the peer closed.
    static func read(_ fd: Int32, into buffer: inout [UInt8]) throws(Failure) -> Int {
        let n = buffer.withUnsafeMutableBytes { raw in retryingEINTR { recv(fd, raw.baseAddress!, raw.count, 0) } }
        guard n >= 0 else { throw Failure(call: "recv", errno: errno) }
        return n
    }

    static func setReceiveTimeout(_ fd: Int32, milliseconds: Int) {
        var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: .init((milliseconds % 1000) * 1000))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    static func shutdownBoth(_ fd: Int32) {
        _ = shutdown(fd, Int32(SHUT_RDWR))
    }

    static func closeFD(_ fd: Int32) {
        _ = close(fd)
    }

    /// Runs `body` on a new detached thread (a connection's reader, a connect-and-HELLO). Foundation's Thread is
    /// avoided so the shim does not pull in Foundation.
    static func spawnThread(_ body: @escaping @Sendable () -> Void) {
        do {
            try PosixThread.detached(body)
        } catch {
            preconditionFailure("\(error)")
        }
    }

    /// Runs `body` on a new joinable thread (the connection's writer, which its reader joins).
    static func spawnJoinableThread(_ body: @escaping @Sendable () -> Void) -> PosixThread {
        do {
            return try PosixThread.spawn(body)
        } catch {
            preconditionFailure("\(error)")
        }
    }

    private static func retryingEINTR<T: FixedWidthInteger>(_ body: () -> T) -> T {
        while true {
            let r = body()
            if r == -1 && errno == EINTR { continue }
            return r
        }
    }
}
