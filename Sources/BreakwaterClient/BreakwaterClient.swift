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

        public init(socketPath: String, credential: [UInt8]? = nil, clientName: String? = nil) {
            self.socketPath = socketPath
            self.credential = credential
            self.clientName = clientName
        }
    }

    public let configuration: Configuration
    private let connection = Mutex<Connection?>(nil)

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public convenience init(socketPath: String, credential: String? = nil, clientName: String? = nil) {
        self.init(configuration: Configuration(
            socketPath: socketPath, credential: credential.map { Array($0.utf8) }, clientName: clientName))
    }

    deinit {
        connection.withLock { $0?.shutdown() }
    }

    /// Closes the connection; open calls fail with `.connectionLost`. The next call connects again.
    public func close() {
        connection.withLock { c in
            c?.shutdown()
            c = nil
        }
    }

    /// The limits the daemon announced, connecting first if needed.
    public func serverLimits() async throws(BreakwaterError) -> Limits {
        try await currentConnection().serverLimits
    }

    /// Sends one call and waits for the whole answer. `body` is an OpenAI chat-completions JSON object.
    public func send(route: String, body: [UInt8], timeoutMs: UInt32? = nil, requestID: String? = nil,
                     action: String? = nil, tenant: String? = nil) async throws(BreakwaterError) -> BreakwaterResponse {
        let request = CallRequest(route: route, stream: false, timeoutMs: timeoutMs, requestID: requestID,
                                  action: action, tenant: tenant)
        let events = try await open(request, body: body)
        var head: CallResponse?
        var data: [UInt8] = []
        do {
            for try await event in events {
                switch event {
                case .response(let r): head = r
                case .data(let d): data.append(contentsOf: d)
                case .trailers(let t):
                    if let code = t.error {
                        throw BreakwaterError(.call, code: code, t.message ?? code.name)
                    }
                    guard let head else { throw BreakwaterError(.protocolViolation, "TRAILERS before RESPONSE") }
                    return BreakwaterResponse(head: head, body: data, trailers: t)
                case .failed(let e): throw e
                }
            }
        } catch let e as BreakwaterError {
            throw e
        } catch {
            throw BreakwaterError(.cancelled, "call cancelled")
        }
        throw Task.isCancelled ? BreakwaterError(.cancelled, "call cancelled")
            : BreakwaterError(.connectionLost, "call ended without an answer")
    }

    /// Opens a streamed call. Returns once the daemon has sent the answer's head, so errors before the first
    /// byte (unknown route, provider down) are thrown here; the chunks then arrive as the provider sends them.
    public func stream(route: String, body: [UInt8], timeoutMs: UInt32? = nil, requestID: String? = nil,
                       action: String? = nil, tenant: String? = nil) async throws(BreakwaterError) -> BreakwaterStream {
        let request = CallRequest(route: route, stream: true, timeoutMs: timeoutMs, requestID: requestID,
                                  action: action, tenant: tenant)
        let events = try await open(request, body: body)
        var iterator = events.makeAsyncIterator()
        do {
            switch try await iterator.next() {
            case .response(let head): return BreakwaterStream(head: head, iterator: iterator, owner: self)
            case .failed(let e): throw e
            case .none: throw BreakwaterError(.cancelled, "call cancelled")
            default: throw BreakwaterError(.protocolViolation, "answer did not start with RESPONSE")
            }
        } catch let e as BreakwaterError {
            throw e
        } catch {
            throw BreakwaterError(.cancelled, "call cancelled")
        }
    }

    /// Registers the call, writes REQUEST and body, and returns its events. Ending the sequence early (or
    /// cancelling the consuming task) sends CANCEL.
    private func open(_ request: CallRequest,
                      body: [UInt8]) async throws(BreakwaterError) -> AsyncThrowingStream<CallEvent, any Error> {
        let conn = try await currentConnection()
        let (events, continuation) = AsyncThrowingStream<CallEvent, any Error>.makeStream()
        let maxPayload = Int(conn.serverLimits.maxFramePayload)
        let opened = try conn.open(sink: { event in
            continuation.yield(event)
            switch event {
            case .trailers, .failed: continuation.finish()
            default: break
            }
        }, makeFrames: { id in
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
            // This connection is draining or spent its ids: start a fresh one.
            close()
            return try await open(request, body: body)
        }
        continuation.onTermination = { termination in
            if case .cancelled = termination {
                conn.forget(id)
                try? conn.send([.cancel(streamID: id)])
            }
        }
        return events
    }

    private func currentConnection() async throws(BreakwaterError) -> Connection {
        var lastError = BreakwaterError(.daemonUnavailable, "no daemon at \(configuration.socketPath)")
        for attempt in 0..<max(1, configuration.reconnectAttempts) {
            if attempt > 0 {
                try? await Task.sleep(for: .milliseconds(configuration.reconnectBackoffMs << min(attempt - 1, 4)))
            }
            do {
                return try connection.withLock { (c: inout Connection?) throws(BreakwaterError) -> Connection in
                    if let existing = c, existing.isUsable { return existing }
                    let fresh = try Connection(
                        path: configuration.socketPath,
                        hello: .client(credential: configuration.credential, clientName: configuration.clientName),
                        helloTimeoutMs: configuration.helloTimeoutMs
                    )
                    c = fresh
                    return fresh
                }
            } catch {
                lastError = error
                // Refusals the daemon stated (bad version, bad credential) do not get better by retrying.
                if error.kind == .connection { throw error }
            }
        }
        throw lastError
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

    init(head: CallResponse, iterator: AsyncThrowingStream<CallEvent, any Error>.AsyncIterator,
         owner: BreakwaterClient) {
        self.head = head
        self.iterator = iterator
        self.owner = owner
    }

    /// The trailers (token usage), once the sequence has ended.
    public var trailers: CallTrailers? { trailerBox.value.withLock { $0 } }

    public func makeAsyncIterator() -> Iterator {
        Iterator(inner: iterator, box: trailerBox)
    }

    public struct Iterator: AsyncIteratorProtocol {
        var inner: AsyncThrowingStream<CallEvent, any Error>.AsyncIterator
        let box: TrailerBox

        public mutating func next() async throws -> [UInt8]? {
            while true {
                let event: CallEvent?
                do {
                    event = try await inner.next()
                } catch {
                    throw BreakwaterError(.cancelled, "call cancelled")
                }
                switch event {
                case .data(let d): return d
                case .trailers(let t):
                    box.value.withLock { $0 = t }
                    if let code = t.error { throw BreakwaterError(.call, code: code, t.message ?? code.name) }
                    return nil
                case .failed(let e): throw e
                case .response: continue
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
