@_exported import BreakwaterWire
import Synchronization

/// A complete answer: who answered, the body (the provider's chat-completion JSON), and the trailers.
public struct BreakwaterResponse: Sendable {
    public var head: CallResponse
    public var body: [UInt8]
    public var trailers: CallTrailers
}

/// The shim apps link to talk to `breakwaterd`. One connection per client, many concurrent calls on it.
///
/// Connects lazily, and again after the daemon restarts (up to `reconnectAttempts` tries with a short backoff).
/// Cancelling the Swift task that awaits a call sends CANCEL, which stops the call and its upstream request.
///
/// Across a daemon restart (crash, `systemctl restart`, drain): the shim asks the daemon for STARTED before each
/// call's first upstream request, and sends again, on a new connection, every call that never got one — so a
/// restart fails no call that had not reached a provider. A call that had fails with `.daemonRestarted` at once
/// rather than hanging. Each call carries a request id (the app's, or one the shim makes), kept when it is sent
/// again, so the audit trail shows one call.
public final class BreakwaterClient: Sendable {
    public struct Configuration: Sendable {
        public var socketPath: String
        /// The agent token presented in HELLO. Secret.
        public var credential: [UInt8]?
        public var clientName: String?
        public var helloTimeoutMs: Int = 5000
        /// Connection attempts before giving up with `.daemonUnavailable` (covers a daemon restart).
        public var reconnectAttempts: Int = 5
        public var reconnectBackoffMs: Int = 100
        /// How many times one call is sent again after the daemon went away before starting it upstream.
        public var resendAttempts: Int = 3
        /// Ask the daemon for STARTED before each call's first upstream request, so calls it never started are
        /// sent again across a restart and the others fail with `.daemonRestarted`. Off: one frame fewer per call;
        /// a restart fails every open call with `.connectionLost`.
        public var resendUnstartedCalls = true

        public init(socketPath: String, credential: [UInt8]? = nil, clientName: String? = nil) {
            self.socketPath = socketPath
            self.credential = credential
            self.clientName = clientName
        }
    }

    public let configuration: Configuration
    /// The connection calls share, or the one being made: tasks that need it meanwhile wait for that one.
    private let slot = Mutex(Slot.idle)

    private enum Slot {
        case idle
        case ready(Connection)
        case connecting([CheckedContinuation<Result<Connection, BreakwaterError>, Never>])
    }

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public convenience init(socketPath: String, credential: String? = nil, clientName: String? = nil) {
        self.init(configuration: Configuration(
            socketPath: socketPath, credential: credential.map { Array($0.utf8) }, clientName: clientName))
    }

    deinit {
        slot.withLock { s in if case .ready(let c) = s { c.shutdown() } }
    }

    /// Closes the connection; open calls fail with `.connectionLost`. The next call connects again.
    public func close() {
        slot.withLock { s in
            if case .ready(let c) = s {
                c.shutdown()
                s = .idle
            }
        }
    }

    /// Returns once the daemon answers HELLO (connecting if needed); `.daemonUnavailable` when it has not within
    /// `timeout` — for an app that starts beside the daemon and must not send its first call into the void.
    /// A refusal the daemon states (bad credential, too many connections) is thrown at once.
    public func waitReady(timeout: Duration) async throws(BreakwaterError) {
        let deadline = ContinuousClock.now + timeout
        var last = BreakwaterError(.daemonUnavailable, "no daemon at \(configuration.socketPath)")
        while true {
            switch await sharedConnection() {
            case .success:
                return
            case .failure(let error) where error.kind == .connection:
                throw error
            case .failure(let error):
                last = error
            }
            guard ContinuousClock.now < deadline, !Task.isCancelled else {
                throw BreakwaterError(.daemonUnavailable, "the daemon at \(configuration.socketPath) was not ready "
                    + "within \(timeout): \(last.message)")
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// The limits the daemon announced, connecting first if needed.
    public func serverLimits() async throws(BreakwaterError) -> Limits {
        try await currentConnection().serverLimits
    }

    /// Sends one call and waits for the whole answer. `body` is an OpenAI chat-completions JSON object.
    ///
    /// `action` and `tenant` are what policy checks; `stepUpToken` is the second credential sensitive actions need;
    /// `onNotice` hears that the call is waiting (e.g. `pending_approval`, with the id an approver uses).
    public func send(route: String, body: [UInt8], timeoutMs: UInt32? = nil, requestID: String? = nil,
                     action: String? = nil, tenant: String? = nil, stepUpToken: String? = nil,
                     onNotice: (@Sendable (CallNotice) -> Void)? = nil) async throws(BreakwaterError)
        -> BreakwaterResponse {
        let request = CallRequest(route: route, stream: false, timeoutMs: timeoutMs,
                                  requestID: requestID ?? RequestID.make(), action: action, tenant: tenant,
                                  stepUpToken: stepUpToken.map { Array($0.utf8) })
        return try await resendingUnstarted { () async throws(BreakwaterError) -> BreakwaterResponse in
            let call = UnaryCall(onNotice: onNotice)
            let (conn, id) = try await open(request, body: body) { call.receive($0) }
            return try await withTaskCancellationHandler {
                await call.result()
            } onCancel: {
                if call.cancel() { conn.cancel(id) }
            }.get()
        }
    }

    /// Opens a streamed call. Returns once the daemon has sent the answer's head, so errors before the first
    /// byte (unknown route, provider down) are thrown here; the chunks then arrive as the provider sends them.
    public func stream(route: String, body: [UInt8], timeoutMs: UInt32? = nil, requestID: String? = nil,
                       action: String? = nil, tenant: String? = nil, stepUpToken: String? = nil,
                       onNotice: (@Sendable (CallNotice) -> Void)? = nil) async throws(BreakwaterError)
        -> BreakwaterStream {
        let request = CallRequest(route: route, stream: true, timeoutMs: timeoutMs,
                                  requestID: requestID ?? RequestID.make(), action: action, tenant: tenant,
                                  stepUpToken: stepUpToken.map { Array($0.utf8) })
        return try await resendingUnstarted { () async throws(BreakwaterError) -> BreakwaterStream in
            try await openStream(request, body: body, onNotice: onNotice)
        }
    }

    /// Runs `attempt` again, up to `resendAttempts` times, while it fails because the daemon never started the
    /// call (it went away or was draining first): the one place the shim decides that a call is sent again.
    private func resendingUnstarted<T>(_ attempt: () async throws(BreakwaterError) -> T)
        async throws(BreakwaterError) -> T {
        var resends = 0
        while true {
            do {
                return try await attempt()
            } catch where error.isNotStarted && resends < configuration.resendAttempts && !Task.isCancelled {
                resends += 1
            }
        }
    }

    private func openStream(_ request: CallRequest, body: [UInt8],
                            onNotice: (@Sendable (CallNotice) -> Void)?) async throws(BreakwaterError)
        -> BreakwaterStream {
        let (events, continuation) = AsyncThrowingStream<CallEvent, any Error>.makeStream()
        let (conn, id) = try await open(request, body: body) { event in
            continuation.yield(event)
            switch event {
            case .trailers, .failed: continuation.finish()
            default: break
            }
        }
        continuation.onTermination = { termination in
            if case .cancelled = termination { conn.cancel(id) }
        }
        var iterator = events.makeAsyncIterator()
        do {
            while true {
                switch try await iterator.next() {
                case .notice(let n): onNotice?(n)
                case .response(let head):
                    return BreakwaterStream(head: head, iterator: iterator, owner: self) { conn.consumed(id, bytes: $0) }
                case .failed(let e): throw e
                case .none: throw BreakwaterError(.cancelled, "call cancelled")
                default: throw BreakwaterError(.protocolViolation, "answer did not start with RESPONSE")
                }
            }
        } catch let e as BreakwaterError {
            throw e
        } catch {
            throw BreakwaterError(.cancelled, "call cancelled")
        }
    }

    /// Asks, before the app executes an action, whether its agent may (AUTHORIZE): through the daemon's policy —
    /// identity, scopes, tenant, step-up, rate limits, concurrency — and, when a control says so, a person's
    /// approval, bound to exactly these `arguments` (a JSON object). Returns the decision when allowed; a refusal is
    /// thrown as a `.call` error whose `code` says why (`FORBIDDEN`, `STEP_UP_REQUIRED`, `RATE_LIMITED`,
    /// `CONCURRENCY_LIMIT`, `APPROVAL_DENIED`, `APPROVAL_EXPIRED`, `BAD_REQUEST` for arguments that are not a JSON
    /// object).
    /// `onNotice` hears that the action waits for an approval, with the id an approver uses.
    public func authorize(action: String, tenant: String? = nil, arguments: [UInt8] = Array("{}".utf8),
                          stepUpToken: String? = nil, timeoutMs: UInt32? = nil, requestID: String? = nil,
                          onNotice: (@Sendable (CallNotice) -> Void)? = nil) async throws(BreakwaterError)
        -> ActionDecision {
        let request = AuthorizeRequest(action: action, tenant: tenant, requestID: requestID ?? RequestID.make(),
                                       stepUpToken: stepUpToken.map { Array($0.utf8) }, timeoutMs: timeoutMs)
        let call = UnaryCall(onNotice: onNotice)
        let conn = try await currentConnection()
        let opened = try conn.open(grantsOnDelivery: true, sink: { call.receive($0) }, makeFrames: { id in
            [request.frame(streamID: id), .data(streamID: id, arguments, endStream: true)]
        })
        guard let id = opened else { throw BreakwaterError(.connectionLost, "connection is draining") }
        let answer = try await withTaskCancellationHandler {
            await call.result()
        } onCancel: {
            if call.cancel() { conn.cancel(id) }
        }.get()
        do {
            return try ActionDecision(payload: answer.body)
        } catch {
            throw BreakwaterError(.protocolViolation, error.message)
        }
    }

    /// Runs an admin command (`status`, ...) and returns its JSON answer. Needs a uid or gid the daemon's config
    /// names in `admins`; otherwise `FORBIDDEN`.
    public func admin(_ command: String, arguments: [UInt8] = Array("{}".utf8)) async throws(BreakwaterError)
        -> [UInt8] {
        let call = UnaryCall()
        let conn = try await currentConnection()
        let opened = try conn.open(grantsOnDelivery: true, sink: { call.receive($0) }, makeFrames: { id in
            [AdminRequest(command: command).frame(streamID: id), .data(streamID: id, arguments, endStream: true)]
        })
        guard opened != nil else { throw BreakwaterError(.connectionLost, "connection is draining") }
        return try await call.result().get().body
    }

    /// Registers the call with `sink` and queues REQUEST and body for the connection's writer; returns where the
    /// call lives so it can be cancelled. Never waits for the socket: a failed write reaches `sink` (as
    /// `.notStarted` when the REQUEST was not all written, which `resendingUnstarted` sends again).
    private func open(_ request: CallRequest, body: [UInt8],
                      sink: @escaping Connection.Sink) async throws(BreakwaterError) -> (Connection, StreamID) {
        let conn = try await currentConnection()
        let maxPayload = Int(conn.serverLimits.maxFramePayload)
        // A streamed call's credit goes back as the app takes each chunk (BreakwaterStream); a whole answer's as
        // it arrives.
        let opened = try conn.open(grantsOnDelivery: !request.stream, sink: sink, makeFrames: { id in
            var frames = [request.frame(streamID: id, endStream: body.isEmpty)]
            var offset = 0
            while offset < body.count {
                let end = min(offset + maxPayload, body.count)
                frames.append(.data(streamID: id, Array(body[offset..<end]), endStream: end == body.count))
                offset = end
            }
            return frames
        })
        guard let id = opened else {
            // This connection is closed, draining or out of ids (so no longer "usable"): the next try makes a fresh
            // one. It is not shut down: calls still running on a draining connection finish there.
            return try await open(request, body: body, sink: sink)
        }
        return (conn, id)
    }

    private func currentConnection() async throws(BreakwaterError) -> Connection {
        var lastError = BreakwaterError(.daemonUnavailable, "no daemon at \(configuration.socketPath)")
        for attempt in 0..<max(1, configuration.reconnectAttempts) {
            if attempt > 0 {
                try? await Task.sleep(for: .milliseconds(configuration.reconnectBackoffMs << min(attempt - 1, 4)))
            }
            switch await sharedConnection() {
            case .success(let c):
                return c
            case .failure(let error):
                lastError = error
                // Refusals the daemon stated (bad version, bad credential) do not get better by retrying.
                if error.kind == .connection { throw error }
            }
        }
        throw lastError
    }

    /// The usable connection, or a new one. Connecting (connect + HELLO, which blocks up to `helloTimeoutMs` while
    /// a restarting daemon comes back) runs on a thread of its own, once for all the tasks that need it meanwhile,
    /// so no task of the app's cooperative pool is blocked by it.
    private func sharedConnection() async -> Result<Connection, BreakwaterError> {
        // The common case, without suspending: the connection is there.
        let ready = slot.withLock { s -> Connection? in
            if case .ready(let c) = s, c.isUsable { return c }
            return nil
        }
        if let ready { return .success(ready) }
        return await withCheckedContinuation { (waiter: CheckedContinuation<Result<Connection, BreakwaterError>, Never>) in
            enum Next { case use(Connection), wait, connect }
            let next = slot.withLock { s -> Next in
                switch s {
                case .ready(let c) where c.isUsable:
                    return .use(c)
                case .connecting(var waiters):
                    waiters.append(waiter)
                    s = .connecting(waiters)
                    return .wait
                case .idle, .ready:
                    s = .connecting([waiter])
                    return .connect
                }
            }
            switch next {
            case .use(let c): waiter.resume(returning: .success(c))
            case .wait: break
            case .connect:
                let hello = Hello.client(credential: configuration.credential, clientName: configuration.clientName,
                                         startedNotices: configuration.resendUnstartedCalls,
                                         streamWindow: Connection.streamWindow)
                let (path, timeout) = (configuration.socketPath, configuration.helloTimeoutMs)
                Socket.spawnThread { [self] in
                    let result = Result { () throws(BreakwaterError) -> Connection in
                        try Connection(path: path, hello: hello, helloTimeoutMs: timeout)
                    }
                    let waiters = slot.withLock { s -> [CheckedContinuation<Result<Connection, BreakwaterError>,
                                                                            Never>] in
                        guard case .connecting(let waiting) = s else { return [] }
                        if case .success(let c) = result { s = .ready(c) } else { s = .idle }
                        return waiting
                    }
                    for w in waiters { w.resume(returning: result) }
                }
            }
        }
    }
}

/// A streamed answer: each element is one chunk as the provider sent it (an OpenAI `chat.completion.chunk` JSON
/// object). The sequence ends after the trailers; a stream the provider cut throws `STREAM_INTERRUPTED`.
public struct BreakwaterStream: AsyncSequence {
    public typealias Element = [UInt8]

    public let head: CallResponse
    private let iterator: AsyncThrowingStream<CallEvent, any Error>.AsyncIterator
    private let trailerBox = TrailerBox()
    /// Keeps the client (and so its connection) alive while the stream is being read.
    private let owner: BreakwaterClient
    /// Gives credit back to the daemon for a chunk the app took.
    private let consumed: @Sendable (Int) -> Void

    init(head: CallResponse, iterator: AsyncThrowingStream<CallEvent, any Error>.AsyncIterator,
         owner: BreakwaterClient, consumed: @escaping @Sendable (Int) -> Void) {
        self.head = head
        self.iterator = iterator
        self.owner = owner
        self.consumed = consumed
    }

    /// The trailers (token usage), once the sequence has ended.
    public var trailers: CallTrailers? { trailerBox.value.withLock { $0 } }

    public func makeAsyncIterator() -> Iterator {
        Iterator(inner: iterator, box: trailerBox, consumed: consumed)
    }

    public struct Iterator: AsyncIteratorProtocol {
        var inner: AsyncThrowingStream<CallEvent, any Error>.AsyncIterator
        let box: TrailerBox
        let consumed: @Sendable (Int) -> Void

        public mutating func next() async throws -> [UInt8]? {
            while true {
                let event: CallEvent?
                do {
                    event = try await inner.next()
                } catch {
                    throw BreakwaterError(.cancelled, "call cancelled")
                }
                switch event {
                case .data(let d):
                    consumed(d.count)
                    return d
                case .trailers(let t):
                    box.value.withLock { $0 = t }
                    if let code = t.error { throw BreakwaterError(.call, code: code, t.message ?? code.name) }
                    return nil
                case .failed(let e): throw e
                case .response, .notice: continue
                case .none:
                    if Task.isCancelled { throw BreakwaterError(.cancelled, "call cancelled") }
                    return nil
                }
            }
        }
    }
}

final class TrailerBox: Sendable {
    let value = Mutex<CallTrailers?>(nil)
}

/// A non-streamed call: the answer is gathered on the connection's reader thread and handed to the waiting task
/// once, when it is complete (one task wake-up per call instead of one per frame).
final class UnaryCall: Sendable {
    private struct State {
        var head: CallResponse?
        var body: [UInt8] = []
        var outcome: Result<BreakwaterResponse, BreakwaterError>?
        var waiter: CheckedContinuation<Result<BreakwaterResponse, BreakwaterError>, Never>?
    }

    private let state = Mutex(State())
    private let onNotice: (@Sendable (CallNotice) -> Void)?

    init(onNotice: (@Sendable (CallNotice) -> Void)? = nil) {
        self.onNotice = onNotice
    }

    func receive(_ event: CallEvent) {
        if case .notice(let n) = event {
            onNotice?(n)
            return
        }
        let (waiter, outcome) = state.withLock { s -> (CheckedContinuation<Result<BreakwaterResponse, BreakwaterError>,
                                                                           Never>?, Result<BreakwaterResponse,
                                                                                           BreakwaterError>?) in
            guard s.outcome == nil else { return (nil, nil) }
            switch event {
            case .notice:
                return (nil, nil)
            case .response(let r):
                s.head = r
                return (nil, nil)
            case .data(let d):
                s.body.append(contentsOf: d)
                return (nil, nil)
            case .trailers(let t):
                if let code = t.error {
                    s.outcome = .failure(BreakwaterError(.call, code: code, t.message ?? code.name))
                } else if let head = s.head {
                    s.outcome = .success(BreakwaterResponse(head: head, body: s.body, trailers: t))
                } else {
                    s.outcome = .failure(BreakwaterError(.protocolViolation, "TRAILERS before RESPONSE"))
                }
            case .failed(let e):
                s.outcome = .failure(e)
            }
            defer { s.waiter = nil }
            return (s.waiter, s.outcome)
        }
        if let waiter, let outcome { waiter.resume(returning: outcome) }
    }

    /// Ends the call as cancelled; false when it had already ended.
    func cancel() -> Bool {
        let waiter = state.withLock { s -> CheckedContinuation<Result<BreakwaterResponse, BreakwaterError>, Never>?? in
            guard s.outcome == nil else { return .none }
            s.outcome = .failure(BreakwaterError(.cancelled, "call cancelled"))
            defer { s.waiter = nil }
            return .some(s.waiter)
        }
        guard let waiter else { return false }
        waiter?.resume(returning: .failure(BreakwaterError(.cancelled, "call cancelled")))
        return true
    }

    func result() async -> Result<BreakwaterResponse, BreakwaterError> {
        await withCheckedContinuation { c in
            let ready = state.withLock { s -> Result<BreakwaterResponse, BreakwaterError>? in
                if let outcome = s.outcome { return outcome }
                s.waiter = c
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }
}
