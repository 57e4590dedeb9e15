/// Receives the events of one transfer.
///
/// Callbacks come one at a time, in order: head once, body zero or more times, complete exactly once (complete may
/// come without head on failure). They run within a turn of the engine: on its thread, or on the thread of a caller
/// of `start`, `cancel` or `resume` that ran the turn itself (and then may be another transfer's), so they must not
/// assume a thread. They must not block, because every other transfer of the engine waits while they run; calling
/// `CurlEngine.start` or `cancel` from them is fine.
public protocol TransferDelegate: AnyObject, Sendable {
    /// The final (non-1xx) response head arrived.
    func transferDidReceiveHead(status: Int, headers: [HTTPHeader])
    /// A chunk of the response body arrived, as libcurl delivered it (already de-chunked, not decompressed).
    func transferDidReceiveBody(_ bytes: [UInt8])
    /// The transfer ended; no further callbacks follow for it.
    func transferDidComplete(_ result: Result<Void, TransportError>)
    /// Asked before each body chunk is handed over: true stops receiving (libcurl's `CURL_WRITEFUNC_PAUSE`; the
    /// chunk is kept and delivered after `TransferEngine.resume`), so a slow reader holds the provider back through
    /// TCP instead of the answer piling up here. While paused, the idle timeout does not run.
    func transferShouldPause() -> Bool
}

extension TransferDelegate {
    /// Never pauses.
    public func transferShouldPause() -> Bool { false }
}

/// Hears where the engine's turns begin and end, so that what delegates hand to other threads during one turn can
/// be handed over together at its end (one wake-up of the receiver instead of one per callback). Turns never
/// overlap; each begins and ends on one thread, the engine's or a caller's.
public protocol EngineTurnObserver: AnyObject, Sendable {
    /// A turn began on the calling thread: every delegate callback until `engineTurnEnded` runs on it.
    func engineTurnBegan()
    /// The turn ended: every delegate callback of it has returned. Called on the thread that began it.
    func engineTurnEnded()
}

/// What the daemon's call path needs from an HTTP engine: start a transfer that reports to a delegate, and cancel
/// it. `CurlEngine` is the real one; tests drive the call path in-process with a scripted one.
public protocol TransferEngine: Sendable {
    /// Queues `request` and returns at once; `delegate` hears about it, in order, from then on.
    @discardableResult
    func start(_ request: HTTPRequest, delegate: any TransferDelegate) -> TransferID
    /// Stops a transfer: its delegate completes with `.cancelled`. Unknown or finished IDs are ignored.
    func cancel(_ id: TransferID)
    /// Goes on receiving a transfer its delegate paused (`transferShouldPause`); the chunk held back comes first.
    /// Unknown, finished or unpaused IDs are ignored.
    func resume(_ id: TransferID)
}

/// Names one transfer of one engine, for `TransferEngine.cancel`.
public struct TransferID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) {
        self.rawValue = rawValue
    }

    public var description: String {
        "transfer-\(rawValue)"
    }
}
