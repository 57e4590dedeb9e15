import CCurl

#if canImport(Glibc)
import Glibc
#endif

/// The engine's epoll set: the sockets libcurl asks it to watch (`CURLMOPT_SOCKETFUNCTION`, from whichever thread
/// runs a turn) and an eventfd other threads write to wake the engine thread, which waits on it.
///
/// Why the engine drives libcurl this way (`curl_multi_socket_action`, the interface libcurl documents for event
/// loops) rather than with `curl_multi_perform` + `curl_multi_poll`: those look at every transfer and poll every
/// socket on each turn, so with 1,000 slow streams open each chunk paid for the other 999 (`perf`: `sock_poll`,
/// `do_sys_poll`, `tcp_poll` and libcurl's own walk of its handles were most of the daemon's time). Here a turn
/// costs what its ready sockets cost. Written by hand: the few epoll(7) calls libcurl's socket interface needs;
/// NIO's selector is internal to NIO and cannot watch sockets libcurl owns.
final class SocketWatch {
    let epoll: Int32
    /// Written by `EngineShared` (from any thread) to wake the loop; read empty by the loop.
    let wake: Int32
    /// Sockets in the epoll set, so a change is a modify and a new one an add.
    private var watched: Set<Int32> = []
    private var readyFDs = [Int32](repeating: 0, count: 256)
    private var readyFlags = [Int32](repeating: 0, count: 256)

    init() throws {
        let epoll = bw_epoll_create()
        guard epoll >= 0 else {
            throw TransportError(kind: .localConfiguration, detail: "epoll_create1 failed (errno \(errno))")
        }
        let wake = bw_eventfd()
        guard wake >= 0 else {
            Glibc.close(epoll)
            throw TransportError(kind: .localConfiguration, detail: "eventfd failed (errno \(errno))")
        }
        guard bw_epoll_watch(epoll, wake, 1, 1, 0) == 0 else {
            Glibc.close(epoll)
            Glibc.close(wake)
            throw TransportError(kind: .localConfiguration, detail: "epoll_ctl on the wake-up eventfd failed")
        }
        self.epoll = epoll
        self.wake = wake
    }

    /// Closes both descriptors; only once nothing can write `wake` any more (the engine is shut down).
    func close() {
        Glibc.close(epoll)
        Glibc.close(wake)
    }

    /// What libcurl asked for a socket: `CURL_POLL_IN`, `_OUT`, `_INOUT`, or `_REMOVE`.
    func watch(_ socket: Int32, what: Int32) {
        if what == CURL_POLL_REMOVE {
            if watched.remove(socket) != nil {
                // Fails harmlessly if libcurl closed the socket first (close leaves the epoll set by itself).
                _ = bw_epoll_remove(epoll, socket)
            }
            return
        }
        let readable: Int32 = what & CURL_POLL_IN != 0 ? 1 : 0
        let writable: Int32 = what & CURL_POLL_OUT != 0 ? 1 : 0
        let known = watched.contains(socket)
        if bw_epoll_watch(epoll, socket, known ? 0 : 1, readable, writable) != 0 {
            // A number libcurl reused after closing a socket unannounced (ENOENT), or one still in the set (EEXIST).
            _ = bw_epoll_watch(epoll, socket, known ? 1 : 0, readable, writable)
        }
        watched.insert(socket)
    }

    /// Waits up to `timeout` ms and returns how many sockets are ready, for `forEachReady`; empties the wake-up
    /// eventfd if it fired. Engine thread only (it needs no turn: it touches only what `forEachReady` reads).
    func wait(timeout: Int32) -> Int {
        let count = readyFDs.withUnsafeMutableBufferPointer { fds in
            readyFlags.withUnsafeMutableBufferPointer { flags in
                bw_epoll_wait(epoll, fds.baseAddress, flags.baseAddress, Int32(fds.count), timeout)
            }
        }
        return max(0, Int(count))
    }

    /// Calls `ready` with each of the first `count` sockets the last `wait` found ready and its `CURL_CSELECT_*`
    /// bits, skipping (and emptying) the wake-up eventfd. Engine thread only, within a turn.
    func forEachReady(_ count: Int, _ ready: (Int32, Int32) -> Void) {
        for index in 0..<count {
            let fd = readyFDs[index]
            if fd == wake {
                bw_eventfd_drain(wake)
            } else {
                ready(fd, readyFlags[index])
            }
        }
    }
}

/// `CURLMOPT_SOCKETFUNCTION`: userp is the unretained `EngineLoop`.
func curlSocketCallback(_ easy: UnsafeMutableRawPointer?, _ socket: curl_socket_t, _ what: Int32,
                        _ userp: UnsafeMutableRawPointer?, _ socketp: UnsafeMutableRawPointer?) -> Int32 {
    guard let userp else { return -1 }
    Unmanaged<EngineLoop>.fromOpaque(userp).takeUnretainedValue().sockets.watch(socket, what: what)
    return 0
}

/// `CURLMOPT_TIMERFUNCTION`: userp is the unretained `EngineLoop`.
func curlTimerCallback(_ multi: UnsafeMutableRawPointer?, _ timeoutMs: Int, _ userp: UnsafeMutableRawPointer?)
    -> Int32 {
    guard let userp else { return -1 }
    Unmanaged<EngineLoop>.fromOpaque(userp).takeUnretainedValue().setTimer(milliseconds: timeoutMs)
    return 0
}
