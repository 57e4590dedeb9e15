import CCurl
import PosixThread
import Synchronization

/// Runs HTTP transfers on one libcurl multi handle driven by one dedicated thread, through libcurl's socket
/// interface (`curl_multi_socket_action` over an epoll set; see `SocketWatch`).
///
/// The multi handle keeps a connection cache, so sequential transfers to a host reuse connections and
/// HTTP/2 transfers multiplex over one. `start`, `cancel` and `resume` queue the command and run it at once on
/// the caller's thread when the engine thread is waiting (sending a request on a kept connection, say, without
/// waking that thread), or else wake it; so they are cheap enough to call from event-loop threads. Delegates are
/// called within a turn of the engine: on its thread, or on a caller's that ran the turn (see `EngineLoop`).
public final class CurlEngine: TransferEngine, Sendable {
    private let shared: EngineShared
    private let loop: EngineLoop
    private let thread: PosixThread
    private let threadState = Mutex(ThreadState.running)

    private enum ThreadState {
        case running
        case joining
        case finished
    }

    /// Creates the multi handle and starts the engine thread.
    ///
    /// - Parameters:
    ///   - maxHostConnections: The most connections open to one host at a time, 0 for no limit; further transfers
    ///     wait inside libcurl, uncounted. A `ConnectionPool` per upstream is the visible way to cap them.
    ///   - maxTotalConnections: The most connections open at a time overall, and the size of the idle
    ///     connection cache.
    ///   - maxConcurrentStreams: The most HTTP/2 streams libcurl runs on one connection (fewer if the server says
    ///     so) before it opens another; one figure for every host (`CURLMOPT_MAX_CONCURRENT_STREAMS`).
    ///   - coalescingWindow: With 256 or more transfers open, the engine thread looks at its sockets at most once
    ///     per this long, so one wake-up carries many chunks (`limits.stream_coalescing_window`); zero: never wait.
    ///   - turnObserver: Told where each of the engine's turns begins and ends, on the thread running it.
    public init(maxHostConnections: Int = 64, maxTotalConnections: Int = 256, maxConcurrentStreams: Int = 100,
                coalescingWindow: Duration = .milliseconds(5),
                turnObserver: (any EngineTurnObserver)? = nil) throws {
        try CurlGlobal.ensureInitialized()
        guard let multi = curl_multi_init() else {
            throw TransportError(kind: .localConfiguration, detail: "curl_multi_init failed")
        }
        let settings: [(CURLMoption, Int, String)] = [
            (CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX), "PIPELINING"),
            (CURLMOPT_MAX_HOST_CONNECTIONS, maxHostConnections, "MAX_HOST_CONNECTIONS"),
            (CURLMOPT_MAX_TOTAL_CONNECTIONS, maxTotalConnections, "MAX_TOTAL_CONNECTIONS"),
            (CURLMOPT_MAXCONNECTS, maxTotalConnections, "MAXCONNECTS"),
            (CURLMOPT_MAX_CONCURRENT_STREAMS, maxConcurrentStreams, "MAX_CONCURRENT_STREAMS"),
        ]
        for (option, value, name) in settings {
            let code = bw_curl_multi_setopt_long(multi, option, value)
            guard code == CURLM_OK else {
                curl_multi_cleanup(multi)
                // A CURLMcode, not a CURLcode, so it goes in the text rather than `curlCode`.
                throw TransportError(
                    kind: .localConfiguration,
                    detail: "setting CURLMOPT_\(name) failed: " + String(cString: curl_multi_strerror(code))
                        + " (CURLM code \(code.rawValue))"
                )
            }
        }
        let sockets: SocketWatch
        do {
            sockets = try SocketWatch()
        } catch {
            curl_multi_cleanup(multi)
            throw error
        }
        let shared = EngineShared(multi: multi, wakeFD: sockets.wake)
        let loop = EngineLoop(shared: shared, sockets: sockets, coalescingWindow: coalescingWindow,
                              turnObserver: turnObserver)
        self.shared = shared
        self.loop = loop
        do {
            self.thread = try PosixThread.spawn {
                loop.run()
            }
        } catch {
            curl_multi_cleanup(multi)
            sockets.close()
            throw TransportError(kind: .other, detail: "could not start the transfer thread (error \(error.code))")
        }
    }

    deinit {
        shutdown()
    }

    /// Starts `request` (or queues it for the engine thread) and returns without waiting for the network.
    ///
    /// After `shutdown` the delegate is completed with `.cancelled` immediately, on the caller's thread.
    @discardableResult
    public func start(_ request: HTTPRequest, delegate: any TransferDelegate) -> TransferID {
        let here = loop.mayRunTurnHere
        if let id = shared.submitStart(request, delegate: delegate, wake: !here) {
            if here { loop.runTurnHere() }
            return id
        }
        delegate.transferDidComplete(.failure(TransportError(kind: .cancelled, detail: "the engine was shut down")))
        return TransferID(rawValue: 0)
    }

    /// Stops a transfer: its delegate completes with `.cancelled` (within the engine's next turn), its
    /// handle is freed and an HTTP/1.1 connection it was using is closed. Unknown or finished IDs are ignored.
    public func cancel(_ id: TransferID) {
        submit(.cancel(id))
    }

    /// Goes on receiving a transfer whose delegate paused it (`TransferDelegate.transferShouldPause`).
    public func resume(_ id: TransferID) {
        submit(.resume(id))
    }

    /// Queues `command`, then runs the turn that takes it here or leaves it to the engine thread, woken.
    private func submit(_ command: EngineCommand) {
        let here = loop.mayRunTurnHere
        if shared.submit(command, wake: !here), here { loop.runTurnHere() }
    }

    /// Cancels every transfer, closes all connections (idle ones too) and waits for the engine thread to end.
    ///
    /// Idempotent, and called by `deinit`. Only the first caller waits. When called from a delegate callback
    /// (within a turn, whichever thread runs it) it cannot wait, so the thread winds down after the callback returns.
    public func shutdown() {
        shared.submitShutdown()
        let onEngineThread = thread.isCurrent || loop.isTurnRunningOnCurrentThread
        let mustWait = threadState.withLock { state in
            guard case .running = state else {
                return false
            }
            state = onEngineThread ? .finished : .joining
            return true
        }
        guard mustWait else {
            return
        }
        if onEngineThread {
            thread.detach()
        } else {
            thread.join()
            threadState.withLock { $0 = .finished }
        }
    }

    /// Transfers started and not yet completed, including those still queued.
    public var activeTransfers: Int {
        shared.activeTransfers.load(ordering: .relaxed)
    }

    /// libcurl handles kept for reuse: up to 256 while transfers come and go, a few once none has run for 2 s.
    public var idleHandles: Int {
        shared.idleHandles.load(ordering: .relaxed)
    }
}
