import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What systemd's manager sees: a datagram socket for NOTIFY_SOCKET collecting every sd_notify message.
final class NotifyListener {
    let path: String
    private let fd: Int32
    private(set) var messages: [String] = []

    init(directory: String) throws {
        path = directory + "/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard withUnixAddress(path, { bind(fd, $0, $1) }) == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
    }

    deinit { close(fd) }

    /// Reads every message already waiting, without waiting for more (callers poll with `waitUntil`).
    func drain() {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { return }
            messages.append(String(decoding: buf[0..<n], as: UTF8.self))
        }
    }
}
