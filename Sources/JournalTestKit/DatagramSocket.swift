#if canImport(Glibc)
import Glibc
#endif

/// A Unix datagram socket bound at a path: a stand-in for journald's socket where a test needs the bytes a
/// sender wrote, or, closed at once, a stale socket file with nobody behind it.
public struct DatagramSocket {
    private var fd: Int32

    /// Binds a new socket at `path`.
    public init(boundAt path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw JournalHarnessError("socket failed: " + String(cString: strerror(errno))) }
        let bound = Self.withAddress(path) { bind(fd, $0, $1) }
        guard bound == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw JournalHarnessError("bind \(path) failed: " + message)
        }
    }

    /// Calls `body` with `path` as a `sockaddr_un` (for bind, connect or sendto).
    public static func withAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    /// The next datagram, or nil when none came within `timeout`.
    public func receive(timeout: Duration) -> [UInt8]? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let (seconds, attoseconds) = timeout.components
        let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
        guard poll(&poller, 1, milliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? Array(buffer[..<n]) : nil
    }

    /// Closes the socket; the file at its path stays.
    public mutating func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}
