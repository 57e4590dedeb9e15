#if canImport(Glibc)
import Glibc
#endif
import Governance
import NIOCore

extension PeerCredentials {
    /// Reads SO_PEERCRED (who connected, as the kernel says: unforgeable by the client) from an accepted Unix
    /// socket channel, on its event loop, before any byte is read.
    static func read(from channel: any Channel) -> EventLoopFuture<PeerCredentials?> {
        #if os(Linux)
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        // `struct ucred { pid_t pid; uid_t uid; gid_t gid; }`: Glibc's Swift module hides it behind _GNU_SOURCE,
        // so it is read as the tuple of its three 32-bit fields, which has the same layout.
        let future: EventLoopFuture<(Int32, UInt32, UInt32)> = provider.unsafeGetSocketOption(
            level: .socket, name: NIOBSDSocket.Option(rawValue: SO_PEERCRED))
        return future.map { Optional(PeerCredentials(uid: $0.1, gid: $0.2, pid: $0.0)) }.recover { _ in nil }
        #else
        return channel.eventLoop.makeSucceededFuture(nil)
        #endif
    }
}
