/// Stable error codes carried by ERROR frames and error TRAILERS. Values are fixed by `protocol/PROTOCOL.md`.
///
/// Codes below 0x0100 are connection errors: they arrive on stream 0 and the connection closes after them.
/// Codes from 0x0100 end one call only.
public struct ErrorCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    // Connection errors.
    public static let protocolError = ErrorCode(rawValue: 0x0001)
    public static let frameTooLarge = ErrorCode(rawValue: 0x0002)
    public static let unknownFrameType = ErrorCode(rawValue: 0x0003)
    public static let helloRequired = ErrorCode(rawValue: 0x0004)
    public static let unsupportedVersion = ErrorCode(rawValue: 0x0005)
    public static let bodyTooLarge = ErrorCode(rawValue: 0x0006)
    public static let invalidStreamID = ErrorCode(rawValue: 0x0007)
    public static let unauthenticated = ErrorCode(rawValue: 0x0008)
    public static let shuttingDown = ErrorCode(rawValue: 0x0009)
    public static let internalError = ErrorCode(rawValue: 0x000A)
    /// The peer stopped part-way: no HELLO within `hello_timeout` of connecting, or a frame's payload not whole
    /// within `frame_timeout` of its first byte.
    public static let stalled = ErrorCode(rawValue: 0x000B)
    /// The daemon already has `max_connections` connections, or the peer's uid has `max_connections_per_uid`.
    public static let tooManyConnections = ErrorCode(rawValue: 0x000C)

    // Call errors.
    public static let badRequest = ErrorCode(rawValue: 0x0101)
    public static let unknownRoute = ErrorCode(rawValue: 0x0102)
    public static let cancelled = ErrorCode(rawValue: 0x0103)
    public static let upstreamError = ErrorCode(rawValue: 0x0104)
    public static let upstreamUnavailable = ErrorCode(rawValue: 0x0105)
    public static let timeout = ErrorCode(rawValue: 0x0106)
    public static let tooManyCalls = ErrorCode(rawValue: 0x0107)
    public static let upstreamMalformed = ErrorCode(rawValue: 0x0108)
    public static let noCredential = ErrorCode(rawValue: 0x0109)
    public static let streamInterrupted = ErrorCode(rawValue: 0x010A)
    public static let notAccepted = ErrorCode(rawValue: 0x010B)
    public static let forbidden = ErrorCode(rawValue: 0x010C)
    public static let approvalDenied = ErrorCode(rawValue: 0x010D)
    public static let approvalExpired = ErrorCode(rawValue: 0x010E)
    public static let stepUpRequired = ErrorCode(rawValue: 0x010F)
    public static let rateLimited = ErrorCode(rawValue: 0x0110)
    public static let budgetExceeded = ErrorCode(rawValue: 0x0111)
    public static let concurrencyLimit = ErrorCode(rawValue: 0x0112)
    /// The daemon could not make the upstream request because of its own configuration (a bad `ca_file`, a
    /// header libcurl refuses, ...). Not the provider's fault and not retried: sending the call again fails the
    /// same way until the daemon's configuration is fixed, and the daemon's log says what to fix.
    public static let configurationError = ErrorCode(rawValue: 0x0113)
    /// One event of a streamed answer was larger than `max_frame_payload`, so it cannot travel as one DATA frame:
    /// the stream ends there (error TRAILERS, or ERROR if nothing reached the app yet). Not retried.
    public static let eventTooLarge = ErrorCode(rawValue: 0x0114)
    /// The model's answer calls a tool (function) whose action is outside the agent's scopes: the call fails
    /// (error TRAILERS if a stream already reached the app, else ERROR), the tool named. Not retried.
    public static let toolCallBlocked = ErrorCode(rawValue: 0x0115)

    public var isConnectionError: Bool { rawValue < 0x0100 }

    /// The name used in the spec, e.g. `FRAME_TOO_LARGE`.
    public var name: String {
        switch self {
        case .protocolError: "PROTOCOL_ERROR"
        case .frameTooLarge: "FRAME_TOO_LARGE"
        case .unknownFrameType: "UNKNOWN_FRAME_TYPE"
        case .helloRequired: "HELLO_REQUIRED"
        case .unsupportedVersion: "UNSUPPORTED_VERSION"
        case .bodyTooLarge: "BODY_TOO_LARGE"
        case .invalidStreamID: "INVALID_STREAM_ID"
        case .unauthenticated: "UNAUTHENTICATED"
        case .shuttingDown: "SHUTTING_DOWN"
        case .internalError: "INTERNAL_ERROR"
        case .stalled: "STALLED"
        case .tooManyConnections: "TOO_MANY_CONNECTIONS"
        case .badRequest: "BAD_REQUEST"
        case .unknownRoute: "UNKNOWN_ROUTE"
        case .cancelled: "CANCELLED"
        case .upstreamError: "UPSTREAM_ERROR"
        case .upstreamUnavailable: "UPSTREAM_UNAVAILABLE"
        case .timeout: "TIMEOUT"
        case .tooManyCalls: "TOO_MANY_CALLS"
        case .upstreamMalformed: "UPSTREAM_MALFORMED"
        case .noCredential: "NO_CREDENTIAL"
        case .streamInterrupted: "STREAM_INTERRUPTED"
        case .notAccepted: "NOT_ACCEPTED"
        case .forbidden: "FORBIDDEN"
        case .approvalDenied: "APPROVAL_DENIED"
        case .approvalExpired: "APPROVAL_EXPIRED"
        case .stepUpRequired: "STEP_UP_REQUIRED"
        case .rateLimited: "RATE_LIMITED"
        case .budgetExceeded: "BUDGET_EXCEEDED"
        case .concurrencyLimit: "CONCURRENCY_LIMIT"
        case .configurationError: "CONFIGURATION_ERROR"
        case .eventTooLarge: "EVENT_TOO_LARGE"
        case .toolCallBlocked: "TOOL_CALL_BLOCKED"
        default: "UNKNOWN_0x" + String(rawValue, radix: 16)
        }
    }

    public var description: String { name }
}
