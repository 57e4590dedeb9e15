import CSystemd

#if canImport(Glibc)
import Glibc
#endif

/// The parts of libsystemd's sd-daemon API the daemon uses: socket activation and the notify protocol.
public enum Systemd {
    /// The first fd systemd passes (`SD_LISTEN_FDS_START`).
    public static let listenFDsStart: Int32 = 3

    /// Listening sockets passed by socket activation (`LISTEN_FDS`, checked against `LISTEN_PID`), unsetting
    /// the variables so child processes do not inherit them.
    public static func listenFDs() -> [Int32] {
        let n = sd_listen_fds(1)
        guard n > 0 else { return [] }
        return (0..<n).map { listenFDsStart + $0 }
    }

    /// Listening sockets passed by socket activation with their names (`FileDescriptorName=`, or
    /// `systemd-socket-activate --fdname=`; "unknown" when none was given), unsetting the variables as
    /// `listenFDs()` does.
    public static func namedListenFDs() -> [(fd: Int32, name: String)] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let n = sd_listen_fds_with_names(1, &names)
        guard n > 0 else { return [] }
        defer {
            if let names {
                for i in 0..<Int(n) { free(names[i]) }
                free(names)
            }
        }
        return (0..<n).map { i in
            (listenFDsStart + i, names?[Int(i)].map { String(cString: $0) } ?? "unknown")
        }
    }

    /// True when `fd` is a listening Unix stream socket (what `breakwater.socket` hands over).
    public static func isUnixStreamListener(_ fd: Int32) -> Bool {
        sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0
    }

    /// Returns the heap's free pages to the system (glibc `malloc_trim`): for an idle daemon after a burst.
    public static func releaseFreedMemory() {
        _ = malloc_trim(0)
    }

    /// Sends a notify message (`READY=1`, `STATUS=...`, `STOPPING=1`, `WATCHDOG=1`) to the service manager.
    /// A no-op when not run by systemd. Returns whether a manager was there to hear it.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }

    /// The watchdog interval the manager asked for, if any.
    public static func watchdogInterval() -> Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(usec))
    }

    /// CLOCK_MONOTONIC in microseconds, for `MONOTONIC_USEC=` next to `RELOADING=1` (systemd 253+ matches the
    /// reload to the signal with it; older managers ignore it).
    public static func monotonicMicroseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }
}
