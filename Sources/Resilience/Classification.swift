/// How one upstream attempt ended, in terms the resilience engine reasons about.
public enum AttemptOutcome: Sendable, Hashable {
    case success
    /// The provider answered with a non-2xx status; `providerCode` is its error type or code if it sent one
    /// (`insufficient_quota`, `overloaded_error`, `RESOURCE_EXHAUSTED`, ...).
    case status(Int, providerCode: String?)
    /// No usable answer: connect failure, reset, timeout, malformed HTTP.
    case transport(TransportFailure)
    /// An error event inside a 200 stream.
    case streamError(providerCode: String?)
}

public enum TransportFailure: String, Sendable, Hashable {
    case connectFailed = "connect_failed"
    case connectionReset = "connection_reset"
    case timeout
    case malformedResponse = "malformed_response"
    /// The request could not be made on this host (a bad `ca_file`, a header libcurl refuses, a failed
    /// `setopt`): never the provider's fault.
    case localConfiguration = "local_configuration"
}

/// What kind of failure an outcome is. Chains choose which kinds fall back; retries apply to the transient ones.
public enum FailureKind: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// 5xx, timeouts, resets, provider overload signals: worth retrying.
    case transient
    /// 429 rate limiting: worth retrying after the wait the provider asks for.
    case rateLimited = "rate_limited"
    /// Quota or billing exhausted (OpenAI `insufficient_quota`): no retry will fix it.
    case quotaExhausted = "quota_exhausted"
    /// 401/403: the key is wrong or lacks access.
    case auth
    /// 404: the model or endpoint does not exist there.
    case notFound = "not_found"
    /// 400/422 and other 4xx: the request itself is refused.
    case badRequest = "bad_request"
    /// This host's own configuration kept the request from being made (`TransportFailure.localConfiguration`):
    /// never retried, never counted against the provider, reported as a configuration error.
    case configuration

    public var description: String { rawValue }

    /// Whether the failure says the provider is unhealthy (and so counts against its circuit breaker).
    public var countsAgainstBreaker: Bool { self == .transient }
}

/// The per-provider classification table, with the defaults the issue and the providers' docs call for. It is
/// config: `retryable_status_codes` and `non_retryable_error_codes` override the defaults.
public struct ErrorClassifier: Sendable, Hashable {
    /// Statuses worth retrying. 529 is Anthropic's "overloaded".
    public var retryableStatusCodes: Set<Int>
    /// Provider error codes that make an otherwise retryable status permanent (quota and billing errors).
    public var nonRetryableErrorCodes: Set<String>
    /// Provider error codes that are transient whatever the status (overload signals).
    public var transientErrorCodes: Set<String>

    public static let defaultRetryableStatusCodes: Set<Int> = [408, 429, 500, 502, 503, 504, 529]
    public static let defaultNonRetryableErrorCodes: Set<String> = [
        "insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "quota_exceeded",
    ]
    public static let defaultTransientErrorCodes: Set<String> = [
        "overloaded_error", "server_error", "api_error", "UNAVAILABLE", "INTERNAL", "server_is_overloaded",
    ]

    public init(retryableStatusCodes: Set<Int> = defaultRetryableStatusCodes,
                nonRetryableErrorCodes: Set<String> = defaultNonRetryableErrorCodes,
                transientErrorCodes: Set<String> = defaultTransientErrorCodes) {
        self.retryableStatusCodes = retryableStatusCodes
        self.nonRetryableErrorCodes = nonRetryableErrorCodes
        self.transientErrorCodes = transientErrorCodes
    }

    /// Nil for success; otherwise the kind of failure and whether retrying the same target may help.
    public func classify(_ outcome: AttemptOutcome) -> Classification? {
        switch outcome {
        case .success:
            return nil
        case .transport(.localConfiguration):
            return Classification(kind: .configuration, retryable: false)
        case .transport:
            return Classification(kind: .transient, retryable: true)
        case .streamError(let code):
            if let code, nonRetryableErrorCodes.contains(code) {
                return Classification(kind: .quotaExhausted, retryable: false)
            }
            return Classification(kind: .transient, retryable: true)
        case .status(let status, let code):
            if let code, nonRetryableErrorCodes.contains(code) {
                return Classification(kind: .quotaExhausted, retryable: false)
            }
            let listed = retryableStatusCodes.contains(status)
            if let code, transientErrorCodes.contains(code) { return Classification(kind: .transient, retryable: true) }
            switch status {
            case 429: return Classification(kind: .rateLimited, retryable: listed)
            case 401, 403: return Classification(kind: .auth, retryable: listed)
            case 404: return Classification(kind: .notFound, retryable: listed)
            case 408, 500...599: return Classification(kind: .transient, retryable: listed)
            default: return Classification(kind: listed ? .transient : .badRequest, retryable: listed)
            }
        }
    }
}

/// One failure, classified.
public struct Classification: Sendable, Hashable {
    public var kind: FailureKind
    /// Whether another attempt at the same target may succeed.
    public var retryable: Bool

    public init(kind: FailureKind, retryable: Bool) {
        self.kind = kind
        self.retryable = retryable
    }
}
