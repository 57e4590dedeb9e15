import CCurl
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Owns the easy handles and every `Transfer`, and drives the multi handle, one turn at a time under `turnLock`.
///
/// The engine thread (`run`) waits for libcurl's sockets and runs a turn when they are ready. A thread that submits
/// work while the engine thread waits with no transfer at all runs the turn itself (`runTurnHere`): the engine
/// thread is not woken to start the transfer, so a lone call costs one wake-up of it (its answer) instead of two.
/// With transfers running the engine thread takes submissions itself, a batch per wake-up: a caller's turn would
/// then often hold the lock when an answer woke the engine thread, and at 4 and 16 calls in flight that cost more
/// than the wake-ups it saved (BENCHMARKS.md). libcurl's multi interface is not thread-safe but needs no particular
/// thread: one thread at a time is what the lock gives it.
final class EngineLoop: @unchecked Sendable {
    // Unchecked because it holds non-Sendable state, which only the holder of `turnLock` touches.
    private let shared: EngineShared
    private var multi: UnsafeMutableRawPointer { shared.multi }
    /// Held for a whole turn: libcurl's calls, every `Transfer`, and each delegate callback happen under it.
    private let turnLock = Mutex(())
    /// The thread running a turn (its `pthread_self`), 0 between turns; so `shutdown` can tell it is called from a
    /// delegate, whichever thread ran the turn.
    private let turnThread = Atomic<UInt>(0)
    /// Set (under `turnLock`) once the engine thread has cleaned up: no turn may run after it.
    private var isFinished = false
    /// When the engine thread's present wait ends on its own (monotonic ns); 0 while it is not waiting. A turn run
    /// by another thread wakes it only if libcurl's timer or a transfer's limit falls due before then.
    private var waitingUntil: UInt64 = 0
    /// True while the engine thread waits with no transfer running or waiting: then a submitter runs the turn.
    private let idle = Atomic<Bool>(false)
    private var transfers: [TransferID: Transfer] = [:]
    /// Transfers with a first-byte, idle or pool-wait limit, which the loop watches.
    private var watchedCount = 0
    /// No watched transfer's limit runs out before this, so the loop need not look at them until then. A deadline
    /// only moves later (a byte arrives) except when a transfer starts, waits, is admitted, resumes or gets its first
    /// byte (its idle limit then applies), and those lower this to theirs (`updateWatched`, `drainSubmissions`,
    /// `Transfer.byteArrived`).
    private let scan = ScanMark()
    private var nextScan: UInt64 {
        get { scan.at }
        set { scan.at = newValue }
    }
    private var freeHandles: [EasyHandle] = [] {
        didSet { shared.idleHandles.store(freeHandles.count, ordering: .relaxed) }
    }
    private var drained: [EngineCommand] = []
    private var expired: [Transfer] = []
    /// The pools transfers were started under, with their queues.
    private var pools: [ObjectIdentifier: PoolQueue] = [:]

    /// How many idle easy handles to keep for reuse; each one saves libcurl's allocation and set-up of a handle
    /// (and its free at the end), and holds ~5 KB while idle. Sized for a busy host's calls in flight: with 16,
    /// 64 calls in flight made and freed a handle for most calls (`curl_easy_init` + `curl_easy_cleanup` and the
    /// allocator's consolidation under them were ~6% of the daemon's samples; BENCHMARKS.md). 256 hold ~1.4 MB.
    private static let freeHandleLimit = 256
    /// Idle handles kept once the engine has had no transfer for `idleHandleTrimDelay`: a burst's handles go back
    /// to the allocator, and a few stay for the next calls.
    private static let idleHandlesKept = 8
    private static let idleHandleTrimDelay: UInt64 = 2_000_000_000
    /// When the last transfer ended (monotonic ns), for trimming the idle handles.
    private var lastTransferEndedAt: UInt64 = 0
    /// The longest the loop sleeps without looking at the submission queue and the clock.
    private static let maximumPollMilliseconds = 1000
    /// With this many transfers open (streams, mostly), the engine thread runs a turn at most once per
    /// `coalescingWindow`: it sleeps out the rest of the window before looking at its sockets, so one wake-up (its
    /// own, and the event loop's for the turn's hand-off) carries every chunk that arrived meanwhile instead of one
    /// or two each. A chunk then waits up to that long; below this count (a host's ordinary calls in flight) nothing
    /// waits. Over HTTP/2 the window matters more: each time a connection's socket is readable, libcurl runs every
    /// transfer on that connection (up to `max_concurrent_streams`; each polls the socket), so a chunk costs about
    /// (interval between a stream's chunks ÷ window) transfer runs. At 1,000 slow streams, a chunk every 100 ms:
    /// HTTP/1.1 34 µs per chunk without a window, 24 µs at 1 ms, 20 µs at 5 ms; HTTP/2 65 → 46 µs from 1 to 5 ms
    /// (BENCHMARKS.md).
    private static let coalescingTransfers = 256
    /// `limits.stream_coalescing_window` in ns; 0: never wait.
    private let coalescingWindow: UInt64

    private let turnObserver: (any EngineTurnObserver)?
    /// The sockets libcurl has the loop watch, and the wake-up eventfd.
    let sockets: SocketWatch
    /// When libcurl next wants `curl_multi_socket_action(CURL_SOCKET_TIMEOUT)` (`CURLMOPT_TIMERFUNCTION`).
    private var timerDeadline: UInt64?

    init(shared: EngineShared, sockets: SocketWatch, coalescingWindow: Duration,
         turnObserver: (any EngineTurnObserver)?) {
        self.shared = shared
        let (seconds, attoseconds) = max(coalescingWindow, .zero).components
        self.coalescingWindow = UInt64(clamping: seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
        self.sockets = sockets
        self.turnObserver = turnObserver
    }

    /// `CURLMOPT_TIMERFUNCTION`: -1 clears the timer.
    func setTimer(milliseconds: Int) {
        timerDeadline = milliseconds < 0 ? nil : MonotonicClock.now() &+ UInt64(milliseconds) * 1_000_000
    }

    /// Hands libcurl its callbacks, with this loop as their userdata. Called on the engine thread before its first
    /// turn: from then on libcurl tells the loop which sockets to watch and when its next timeout is.
    private func installCallbacks() {
        let me = Unmanaged.passUnretained(self).toOpaque()
        _ = bw_curl_multi_setopt_socket_callback(multi, curlSocketCallback)
        _ = bw_curl_multi_setopt_pointer(multi, CURLMOPT_SOCKETDATA, me)
        _ = bw_curl_multi_setopt_timer_callback(multi, curlTimerCallback)
        _ = bw_curl_multi_setopt_pointer(multi, CURLMOPT_TIMERDATA, me)
    }

    /// The engine thread's loop: a turn for what is ready, then a wait for libcurl's sockets, its timer, a limit
    /// falling due or a wake-up, until the engine shuts down.
    func run() {
        turnLock.withLock { _ in installCallbacks() }
        var readyCount = 0
        // Set by each turn, read before the wait that follows it: sleep until then first (0: do not).
        var coalesceUntil: UInt64 = 0
        while true {
            let timeout: Int? = turnLock.withLock { _ in
                waitingUntil = 0
                let turnBegan = MonotonicClock.now()
                beginTurn()
                defer { endTurn() }
                var running: Int32 = 0
                sockets.forEachReady(readyCount) { socket, flags in
                    _ = curl_multi_socket_action(multi, socket, flags, &running)
                }
                guard case .running(let nearestDeadline) = turn() else { return nil }
                let now = MonotonicClock.now()
                let trimDue = trimIdleHandles(now: now)
                var timeout = Self.maximumPollMilliseconds
                for deadline in [timerDeadline, nearestDeadline, trimDue] {
                    guard let deadline else { continue }
                    let milliseconds = deadline > now ? (deadline - now + 999_999) / 1_000_000 : 0
                    timeout = min(timeout, Int(clamping: milliseconds))
                }
                waitingUntil = now &+ UInt64(timeout) * 1_000_000
                idle.store(transfers.isEmpty, ordering: .relaxed)
                let coalesce = coalescingWindow > 0 && transfers.count >= Self.coalescingTransfers && timeout > 0
                coalesceUntil = coalesce ? turnBegan &+ coalescingWindow : 0
                return timeout
            }
            guard var timeout else { break }
            if coalesceUntil != 0 {
                // Many transfers open: let this window's chunks gather (see `coalescingTransfers`); the wait that
                // follows is shorter by the time slept, so libcurl's timer and the limits keep their time (to the ms).
                let now = MonotonicClock.now()
                if coalesceUntil > now {
                    usleep(useconds_t(clamping: (coalesceUntil - now) / 1_000))
                    timeout = max(0, timeout - Int((MonotonicClock.now() - now) / 1_000_000))
                }
            }
            readyCount = sockets.wait(timeout: Int32(timeout))
            idle.store(false, ordering: .relaxed)
        }
        turnLock.withLock { _ in
            beginTurn()
            for transfer in Array(transfers.values) {
                finish(transfer, .failure(TransportError(kind: .cancelled, detail: "the engine was shut down")))
            }
            pools.removeAll()
            endTurn()
            freeHandles.removeAll()
            // Closes the cached connections (telling the socket callback, so the epoll set is still open), then the
            // descriptors. Safe: callers only wake the loop while the queue is not shut down, and run turns only
            // while `isFinished` is false.
            curl_multi_cleanup(multi)
            sockets.close()
            isFinished = true
        }
    }

    /// With no transfer for `idleHandleTrimDelay`, frees the idle handles past `idleHandlesKept` and has the
    /// allocator give its free pages back to the system (`malloc_trim`: glibc keeps freed heap mapped otherwise);
    /// returns when to look again if that is still to come. After 250 streams nobody read, on 10 connections, the
    /// daemon stayed 4.0–4.9 MB above its idle RSS without this, 0.9–1.4 MB with it (`NeverReadingClientTests`).
    private func trimIdleHandles(now: UInt64) -> UInt64? {
        guard transfers.isEmpty, freeHandles.count > Self.idleHandlesKept else { return nil }
        let due = lastTransferEndedAt &+ Self.idleHandleTrimDelay
        guard now >= due else { return due }
        freeHandles.removeFirst(freeHandles.count - Self.idleHandlesKept)
        _ = malloc_trim(0)
        return nil
    }

    /// Whether a caller should run the turn for what it submits: the engine thread waits with no transfer (so
    /// nothing competes for the turn), and the caller is not within a turn already (a delegate starting a transfer:
    /// the lock is its own, and trying it again costs a futex syscall to fail; some versions of the standard
    /// library's `Mutex` even trap on it).
    var mayRunTurnHere: Bool {
        idle.load(ordering: .relaxed) && !isTurnRunningOnCurrentThread
    }

    /// Runs a turn on the calling thread, which just queued a command (`mayRunTurnHere` said so), or wakes the
    /// engine thread if it or another caller holds the turn by now.
    func runTurnHere() {
        let ran: Bool? = turnLock.withLockIfAvailable { _ in
            guard !isFinished else { return true }
            beginTurn()
            defer { endTurn() }
            guard case .running(let nearestDeadline) = turn() else {
                // Shutting down: `submitShutdown` woke the engine thread, which cleans up.
                return true
            }
            idle.store(transfers.isEmpty, ordering: .relaxed)
            // The engine thread's wait was sized before this turn: it must end sooner if libcurl's timer (a new
            // connection's, say) or a transfer's limit now falls due first.
            let due = min(timerDeadline ?? .max, nearestDeadline ?? .max)
            if due < waitingUntil {
                waitingUntil = due
                shared.wakeLoop()
            }
            return true
        }
        if ran == nil {
            // The engine thread (or another caller) is mid-turn: it drains the queue on its next one.
            shared.wakeLoopIfPending()
        }
    }

    /// Whether the calling thread is running a turn (so is inside a delegate callback or libcurl call).
    var isTurnRunningOnCurrentThread: Bool {
        turnThread.load(ordering: .relaxed) == UInt(pthread_self())
    }

    private func beginTurn() {
        turnThread.store(UInt(pthread_self()), ordering: .relaxed)
        turnObserver?.engineTurnBegan()
    }

    private func endTurn() {
        turnObserver?.engineTurnEnded()
        turnThread.store(0, ordering: .relaxed)
    }

    /// What every turn does after libcurl's ready sockets: start, cancel and resume what was queued, run libcurl's
    /// timer if due, finish completed transfers, end those whose limits ran out and admit waiting ones.
    private func turn() -> TurnEnd {
        if drainSubmissions() {
            return .shuttingDown
        }
        // libcurl's timer: due now, run it (new handles get one of 0, so they start within this turn).
        if let due = timerDeadline, due <= MonotonicClock.now() {
            timerDeadline = nil
            var running: Int32 = 0
            // CURL_SOCKET_TIMEOUT is CURL_SOCKET_BAD, -1 (a macro of a macro, which Swift does not import).
            _ = curl_multi_socket_action(multi, -1, 0, &running)
        }
        readCompletions()
        let nearestDeadline = enforceDeadlines(now: MonotonicClock.now())
        admitWaiting()
        return .running(nearestLimit: nearestDeadline)
    }

    private enum TurnEnd {
        case shuttingDown
        /// The nearest first-byte, idle or pool-wait limit still running, if any.
        case running(nearestLimit: UInt64?)
    }

    // MARK: Submissions

    /// Takes everything callers queued and acts on it in order. Returns true when the engine is shutting down.
    private func drainSubmissions() -> Bool {
        let isShutdown = shared.queue.withLock { queue in
            swap(&queue.commands, &drained)
            queue.wakeupPending = false
            return queue.isShutdown
        }
        defer { drained.removeAll(keepingCapacity: true) }
        for command in drained {
            switch command {
            case .start(let id, let request, let delegate):
                if isShutdown {
                    shared.activeTransfers.subtract(1, ordering: .relaxed)
                    delegate.transferDidComplete(
                        .failure(TransportError(kind: .cancelled, detail: "the engine was shut down"))
                    )
                } else {
                    begin(id: id, request: request, delegate: delegate)
                }
            case .cancel(let id):
                if let transfer = transfers[id] {
                    finish(transfer, .failure(TransportError(kind: .cancelled, detail: "cancelled by the caller")))
                }
            case .resume(let id):
                if let transfer = transfers[id], transfer.paused, let easy = transfer.easy {
                    transfer.paused = false
                    // The time paused was the reader's, not the provider's silence: the idle clock starts again.
                    transfer.lastByteAt = MonotonicClock.now()
                    if let deadline = transfer.loopDeadline { nextScan = min(nextScan, deadline) }
                    // CURLPAUSE_CONT is 0 (curl.h). The chunk held back may be delivered from inside this call,
                    // on this thread, and the delegate may pause again there.
                    _ = curl_easy_pause(easy.raw, 0)
                }
            }
        }
        return isShutdown
    }

    private func begin(id: TransferID, request: HTTPRequest, delegate: any TransferDelegate) {
        let transfer = Transfer(id: id, delegate: delegate, timeouts: request.timeouts, scan: scan)
        transfers[id] = transfer
        guard let pool = request.pool else {
            attach(transfer, request)
            return
        }
        let queue = poolQueue(pool)
        transfer.pool = queue
        // In order: a newcomer does not overtake transfers already waiting, even if a slot just freed.
        if pool.running >= pool.limit || !queue.waiting.isEmpty {
            transfer.waitingRequest = request
            transfer.startedAt = MonotonicClock.now()
            queue.waiting.append(transfer)
            pool.didStartWaiting()
            updateWatched(transfer)
            return
        }
        pool.didStartRunning()
        attach(transfer, request)
    }

    private func poolQueue(_ pool: ConnectionPool) -> PoolQueue {
        let key = ObjectIdentifier(pool)
        if let queue = pools[key] { return queue }
        let queue = PoolQueue(pool)
        pools[key] = queue
        return queue
    }

    /// Starts waiting transfers while their pools have room (a transfer finished, or a limit was raised).
    private func admitWaiting() {
        for queue in pools.values where !queue.waiting.isEmpty {
            let room = queue.pool.limit - queue.pool.running
            guard room > 0 else { continue }
            let admitted = queue.waiting.prefix(room)
            queue.waiting.removeFirst(admitted.count)
            for transfer in admitted {
                queue.pool.didStopWaiting()
                guard var request = transfer.waitingRequest else { continue }
                transfer.waitingRequest = nil
                updateWatched(transfer)
                // libcurl's own total limit starts when the handle is added: it gets what is left of it.
                let waited = Duration.nanoseconds(Int64(clamping: MonotonicClock.now() &- transfer.startedAt))
                if let total = request.timeouts.total {
                    let left = max(total - waited, .milliseconds(1))
                    request.timeouts.total = left
                    request.timeouts.connect = request.timeouts.connect.map { min($0, left) }
                }
                queue.pool.didStartRunning()
                attach(transfer, request)
            }
        }
    }

    /// Counts the transfer among those whose clock the loop watches if, in its present state, it has one.
    private func updateWatched(_ transfer: Transfer) {
        let watch = transfer.easy != nil || transfer.isWaiting ? transfer.hasLoopDeadlines : false
        if watch, let deadline = transfer.loopDeadline { nextScan = min(nextScan, deadline) }
        guard watch != transfer.watched else { return }
        transfer.watched = watch
        watchedCount += watch ? 1 : -1
    }

    /// Gives the transfer an easy handle and hands it to libcurl.
    private func attach(_ transfer: Transfer, _ request: HTTPRequest) {
        guard let easy = takeHandle(receiveBufferBytes: request.effectiveReceiveBufferBytes) else {
            finish(transfer, .failure(TransportError(kind: .localConfiguration, detail: "curl_easy_init failed")),
                   attached: false)
            return
        }
        transfer.easy = easy
        transfer.startedAt = MonotonicClock.now()
        let context = Unmanaged.passRetained(transfer).toOpaque()
        updateWatched(transfer)
        do {
            try RequestConfiguration.apply(request, to: easy, transfer: transfer, context: context)
            let added = curl_multi_add_handle(multi, easy.raw)
            guard added == CURLM_OK else {
                // A CURLMcode, not a CURLcode, so it goes in the text rather than `curlCode`.
                throw TransportError(
                    kind: .localConfiguration,
                    detail: "curl_multi_add_handle failed: " + String(cString: curl_multi_strerror(added))
                        + " (CURLM code \(added.rawValue))"
                )
            }
        } catch let error as TransportError {
            finish(transfer, .failure(error), attached: false)
        } catch {
            finish(transfer, .failure(TransportError(kind: .other, detail: "\(error)")), attached: false)
        }
    }

    /// An idle handle, or a fresh one, with its receive buffer sized; idle handles libcurl will not size are
    /// dropped (see `EasyHandle.sizeReceiveBuffer`). Nil only when libcurl cannot make a handle.
    private func takeHandle(receiveBufferBytes: Int) -> EasyHandle? {
        while let easy = freeHandles.popLast() {
            if easy.sizeReceiveBuffer(receiveBufferBytes) { return easy }
        }
        guard let easy = EasyHandle(), easy.sizeReceiveBuffer(receiveBufferBytes) else { return nil }
        return easy
    }

    // MARK: Completion

    private func readCompletions() {
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle else {
                continue
            }
            let code = message.pointee.data.result
            var context: UnsafeMutableRawPointer?
            guard bw_curl_easy_getinfo_pointer(handle, CURLINFO_PRIVATE, &context) == CURLE_OK, let context else {
                continue
            }
            let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
            if code == CURLE_OK {
                finish(transfer, .success(()))
            } else {
                finish(transfer, .failure(error(for: code, transfer: transfer)))
            }
        }
    }

    /// Ends transfers whose first-byte or idle limit has run out and returns the nearest remaining deadline.
    private func enforceDeadlines(now: UInt64) -> UInt64? {
        guard watchedCount > 0 else {
            return nil
        }
        guard now >= nextScan else {
            return nextScan
        }
        var nearest: UInt64?
        for transfer in transfers.values {
            guard let deadline = transfer.loopDeadline else {
                continue
            }
            if deadline <= now {
                expired.append(transfer)
            } else {
                nearest = min(nearest ?? deadline, deadline)
            }
        }
        for transfer in expired {
            let phase = transfer.loopDeadlinePhase
            let detail: String
            switch phase {
            case .connectionWait:
                let pool = transfer.pool.map { $0.pool.snapshot }
                detail = "no connection free within \((transfer.totalTimeout ?? 0) / 1_000_000) ms: "
                    + "\(pool?.running ?? 0) calls running (the limit), \(pool?.waiting ?? 0) waiting"
            case .firstByte:
                detail = "no response byte within \((transfer.firstByteTimeout ?? 0) / 1_000_000) ms"
            default:
                detail = "no further response byte within \((transfer.idleTimeout ?? 0) / 1_000_000) ms"
            }
            finish(transfer, .failure(TransportError(kind: .timedOut(phase), detail: detail)))
        }
        expired.removeAll(keepingCapacity: true)
        nextScan = nearest ?? UInt64.max
        return nearest
    }

    /// Detaches the transfer from libcurl (or takes it out of its pool's queue), returns its handle to the free
    /// list, releases the userdata reference, and tells the delegate. Every transfer passes through here exactly once.
    private func finish(_ transfer: Transfer, _ result: Result<Void, TransportError>, attached: Bool = true) {
        if transfer.isWaiting {
            transfer.waitingRequest = nil
            if let queue = transfer.pool, let index = queue.waiting.firstIndex(where: { $0 === transfer }) {
                queue.waiting.remove(at: index)
                queue.pool.didStopWaiting()
            }
            conclude(transfer, result)
            return
        }
        guard let easy = transfer.easy else {
            return
        }
        if case .success = result {
            transfer.deliverHead()
        }
        if attached {
            _ = curl_multi_remove_handle(multi, easy.raw)
        }
        transfer.easy = nil
        if let list = transfer.headerList {
            curl_slist_free_all(list)
            transfer.headerList = nil
        }
        transfer.pool?.pool.didStopRunning()
        if freeHandles.count < Self.freeHandleLimit {
            curl_easy_reset(easy.raw)
            freeHandles.append(easy)
        }
        // The reference `attach` passed to libcurl as userdata.
        Unmanaged.passUnretained(transfer).release()
        conclude(transfer, result)
    }

    /// What every ending shares: the transfer is forgotten, and its delegate told.
    private func conclude(_ transfer: Transfer, _ result: Result<Void, TransportError>) {
        transfers[transfer.id] = nil
        lastTransferEndedAt = MonotonicClock.now()
        updateWatched(transfer)
        shared.activeTransfers.subtract(1, ordering: .relaxed)
        transfer.delegate.transferDidComplete(result)
    }

    private func error(for code: CURLcode, transfer: Transfer) -> TransportError {
        let detail = transfer.easy?.errorText(for: code) ?? String(cString: curl_easy_strerror(code))
        let curlCode = Int32(truncatingIfNeeded: code.rawValue)
        let kind: TransportError.Kind
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY,
            CURLE_SSL_CONNECT_ERROR:
            kind = .connectFailed
        case CURLE_OPERATION_TIMEDOUT:
            kind = .timedOut(timeoutPhase(of: transfer))
        case CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_GOT_NOTHING, CURLE_HTTP2_STREAM:
            kind = .connectionReset
        case CURLE_WEIRD_SERVER_REPLY, CURLE_BAD_CONTENT_ENCODING:
            kind = .malformedResponse
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_OUT_OF_MEMORY:
            // Before the request goes out these are this host's: a scheme libcurl will not speak, or no memory.
            // libcurl 7.88 also uses them for a reply it will not read (HTTP/0.9 or an unknown HTTP version is
            // UNSUPPORTED_PROTOCOL, a header line over 100 KiB is OUT_OF_MEMORY), which is the provider's.
            kind = requestWasSent(transfer) ? .malformedResponse : .localConfiguration
        case CURLE_FAILED_INIT, CURLE_URL_MALFORMAT, CURLE_NOT_BUILT_IN, CURLE_BAD_FUNCTION_ARGUMENT,
            CURLE_UNKNOWN_OPTION, CURLE_SETOPT_OPTION_SYNTAX, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED,
            CURLE_SSL_ENGINE_INITFAILED, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER, CURLE_SSL_CACERT_BADFILE,
            CURLE_SSL_CRL_BADFILE:
            // What this host asked for (URL, options, its own CA file, CRL file, client certificate, cipher
            // list or crypto engine), never the provider's answer.
            kind = .localConfiguration
        default:
            kind = .other
        }
        return TransportError(kind: kind, curlCode: curlCode, detail: detail)
    }

    /// Whether any of the request's bytes went out (`CURLINFO_REQUEST_SIZE`), so a failure may be the reply's.
    private func requestWasSent(_ transfer: Transfer) -> Bool {
        var sent = 0
        guard let easy = transfer.easy,
            bw_curl_easy_getinfo_long(easy.raw, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK
        else {
            return false
        }
        return sent > 0
    }

    /// Which of libcurl's two limits (connect, total) ended the transfer.
    ///
    /// The total limit wins once it has elapsed, so a stalled transfer on a reused connection (where
    /// libcurl may report a connect time of 0) is not mistaken for a connect timeout.
    private func timeoutPhase(of transfer: Transfer) -> TransportError.TimeoutPhase {
        let elapsed = MonotonicClock.now() &- transfer.startedAt
        if let total = transfer.totalTimeout, elapsed &+ 5_000_000 >= total {
            return .total
        }
        var connectTime = 0.0
        if let easy = transfer.easy {
            _ = bw_curl_easy_getinfo_double(easy.raw, CURLINFO_CONNECT_TIME, &connectTime)
        }
        return connectTime == 0 && transfer.lastByteAt == 0 ? .connect : .total
    }
}

/// One pool's side on the engine thread: its transfers waiting, oldest first. (How many run is the pool's own
/// count, which only this thread changes.)
final class PoolQueue {
    let pool: ConnectionPool
    var waiting: [Transfer] = []

    init(_ pool: ConnectionPool) {
        self.pool = pool
    }
}
