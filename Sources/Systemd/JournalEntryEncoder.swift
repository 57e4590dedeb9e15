#if canImport(Glibc)
import Glibc
#endif

/// Turns an audit event into one journal entry and sends it to journald's socket, one datagram per entry.
///
/// Written by hand, not with libsystemd's `sd_journal_sendv`, for two things libsystemd does not offer:
/// - **A connected socket.** `sd_journal_sendv` sends every entry to the socket's path, so the kernel looks the
///   path up for each one (`unix_find_other` and the path walk were 2.2% of the daemon's CPU with a policy at 64
///   calls in flight, `perf record`); this socket is connected once, and again only when journald went away.
/// - **Errors that say what happened.** libsystemd returns success when the socket is missing (the entry
///   vanishes); here a missing socket is `-ENOENT` and a journald that is gone `-ECONNREFUSED`, so the writer
///   counts the entry unwritten.
///
/// The format is journald's native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL, stable since systemd 38, what
/// `sd_journal_sendv` writes): `NAME=value\n` per field, or `NAME\n`, the value's length as 64-bit little endian,
/// the value and `\n` for a value holding a newline. Sanitised values never hold one; the second form is there so
/// that no value could ever start a field of its own. The buffer is reused from entry to entry: the writer
/// thread owns one encoder.
struct JournalEntryEncoder {
    private let identifier: String
    private let socketPath: String
    private var socket: Int32 = -1
    /// Why connecting failed in this batch: the batch's other entries fail the same way without trying again.
    private var connectError: Int32?
    private var bytes: [UInt8] = []

    /// libsystemd's send buffer for the journal socket (`SNDBUF_SIZE`, 8 MiB): entries in flight to a busy
    /// journald queue in the kernel rather than block the writer early. The kernel caps it at `wmem_max` unless
    /// the process may force it (root).
    private static let sendBufferBytes: Int32 = 8 * 1024 * 1024

    init(syslogIdentifier: String, socketPath: String = "/run/systemd/journal/socket") {
        identifier = AuditEvent.sanitised(syslogIdentifier)
        self.socketPath = socketPath
        bytes.reserveCapacity(2048)
    }

    /// Calls `body` with each of `event`'s items in order: MESSAGE, MESSAGE_ID, PRIORITY, SYSLOG_IDENTIFIER,
    /// AUDIT_KIND, then the event's own fields.
    static func forEachItem(of event: AuditEvent, syslogIdentifier: String,
                            _ body: (AuditField, String) -> Void) {
        body(.message, AuditEvent.sanitised(event.summary))
        body(.messageID, event.kind.messageID)
        body(.priority, String(event.priority.rawValue))
        body(.syslogIdentifier, syslogIdentifier)
        body(.auditKind, event.kind.rawValue)
        for field in event.fields { body(field.field, field.value) }
    }

    /// The items of `event`'s entry, in the order they are sent.
    static func items(of event: AuditEvent, syslogIdentifier: String) -> [(AuditField, String)] {
        var items: [(AuditField, String)] = []
        forEachItem(of: event, syslogIdentifier: syslogIdentifier) { items.append(($0, $1)) }
        return items
    }

    /// `event`'s entry as journald reads it (one datagram).
    static func datagram(of event: AuditEvent, syslogIdentifier: String) -> [UInt8] {
        var bytes: [UInt8] = []
        append(event, syslogIdentifier: syslogIdentifier, to: &bytes)
        return bytes
    }

    private static func append(_ event: AuditEvent, syslogIdentifier: String, to bytes: inout [UInt8]) {
        forEachItem(of: event, syslogIdentifier: syslogIdentifier) { field, value in
            bytes.append(contentsOf: field.name.utf8)
            var value = value
            value.withUTF8 { utf8 in
                if let start = utf8.baseAddress, memchr(start, 0x0A, utf8.count) != nil {
                    bytes.append(UInt8(ascii: "\n"))
                    withUnsafeBytes(of: UInt64(utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
                } else {
                    bytes.append(UInt8(ascii: "="))
                }
                bytes.append(contentsOf: utf8)
            }
            bytes.append(UInt8(ascii: "\n"))
        }
    }

    /// A new batch of entries: connecting is tried again (once) if it failed in the last one.
    mutating func beginBatch() {
        connectError = nil
    }

    /// Sends `event` to journald; returns 0, or a negative errno (`-ENOENT`: no socket at the path,
    /// `-ECONNREFUSED`: nobody listens on it).
    mutating func send(_ event: AuditEvent) -> Int32 {
        // Connecting failed earlier in this batch: fail the same way, without encoding what cannot be sent.
        if socket < 0, let connectError { return connectError }
        bytes.removeAll(keepingCapacity: true)
        Self.append(event, syslogIdentifier: identifier, to: &bytes)
        // Once more after a reconnect: journald restarted (its new socket is another one) or was not there yet.
        var reconnected = false
        while true {
            if socket < 0 {
                let opened = connect()
                guard opened >= 0 else {
                    connectError = opened
                    return opened
                }
                reconnected = true
            }
            let sent = bytes.withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent >= 0 { return 0 }
            let error = errno
            if error == EINTR { continue }
            guard error == ECONNREFUSED || error == ENOTCONN || error == ECONNRESET else { return -error }
            closeSocket()
            if reconnected { return -error }
        }
    }

    /// Closes the socket (the next send connects again).
    mutating func closeSocket() {
        if socket >= 0 { Glibc.close(socket) }
        socket = -1
    }

    /// Connects to journald's socket; returns 0 or a negative errno.
    private mutating func connect() -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8)
        guard path.count < MemoryLayout.size(ofValue: address.sun_path) else { return -ENAMETOOLONG }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
            raw[path.count] = 0
        }
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return -errno }
        // As libsystemd's fd_inc_sndbuf: the plain option first, the forced one (root) only if the cap cut it.
        var size = Self.sendBufferBytes
        var granted: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, length)
        if getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &granted, &length) != 0 || granted < size {
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let error = errno
            Glibc.close(fd)
            return -error
        }
        socket = fd
        return 0
    }
}
