import BreakwaterWire

/// Every failure the client shim reports. `code` is the daemon's stable protocol code when the daemon said it.
public struct BreakwaterError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// No daemon answered at the socket (after the reconnect attempts).
        case daemonUnavailable
        /// The connection broke while the call was open; the call may or may not have reached the provider.
        case connectionLost
        /// The daemon sent something this client cannot understand.
        case protocolViolation
        /// The daemon ended the call with an error (ERROR frame or error TRAILERS).
        case call
        /// The daemon closed the connection with a connection error.
        case connection
        /// The task was cancelled; CANCEL was sent.
        case cancelled
        /// The daemon stopped or restarted (crash, `systemctl restart`) while the call was in flight upstream. It
        /// may have reached the provider, so the shim does not send it again.
        case daemonRestarted
        /// The call never reached a provider: the daemon was draining or went away first. The shim sends such
        /// calls again by itself (`Configuration.resendAttempts`); a caller sees this only when that ran out.
        case notStarted
        /// The call was not sent: the daemon has not been reading what this client writes (it is stuck or far
        /// behind), and more than `Connection.maxQueuedBytes` (4 MiB) already waits to be written on the
        /// connection. Nothing reached the daemon, so the call may be sent again later.
        case sendQueueFull
    }

    public var kind: Kind
    /// The daemon's error code, for `.call` and `.connection`.
    public var code: ErrorCode?
    public var message: String
    /// For upstream errors: the provider's HTTP status.
    public var upstreamStatus: UInt16?
    /// For upstream errors: the provider that failed.
    public var provider: String?
    public var retryAfterMs: UInt32?
    /// For a call that failed after walking its route: each target tried or skipped, in order — provider, model,
    /// what happened (`outcome`, `failure`, `upstreamStatus`), the wait chosen and what the daemon did next.
    public var attempts: [AttemptReport]

    public init(_ kind: Kind, code: ErrorCode? = nil, _ message: String, upstreamStatus: UInt16? = nil,
                provider: String? = nil, retryAfterMs: UInt32? = nil, attempts: [AttemptReport] = []) {
        self.attempts = attempts
        self.kind = kind
        self.code = code
        self.message = message
        self.upstreamStatus = upstreamStatus
        self.provider = provider
        self.retryAfterMs = retryAfterMs
    }

    init(_ m: ErrorMessage, connection: Bool) {
        self.init(connection ? .connection : .call, code: m.code, m.message, upstreamStatus: m.upstreamStatus,
                  provider: m.provider, retryAfterMs: m.retryAfterMs, attempts: m.attempts)
    }

    /// Safe to send again: the daemon never started the call upstream.
    var isNotStarted: Bool { kind == .notStarted || code == .notAccepted }

    public var description: String {
        if let code { return "\(code.name): \(message)" }
        return "\(kind): \(message)"
    }
}
