/// Retry settings for one provider, with the keys admins know from other gateways.
public struct RetryPolicy: Sendable, Hashable {
    public enum BackoffStrategy: String, Sendable, Hashable, CaseIterable {
        /// base · 2^n, capped at `backoffMax`.
        case exponential
        /// base every time.
        case constant
    }

    /// Retries after the first attempt, per target (`retry_count`).
    public var retryCount: Int
    public var backoffStrategy: BackoffStrategy
    public var backoffBase: Duration
    public var backoffMax: Duration
    /// Full jitter: each wait is uniform in [0, the computed backoff] (`jitter`).
    public var jitter: Bool
    /// Honour Retry-After and the providers' rate-limit reset headers (`respect_rate_limits`).
    public var respectRateLimits: Bool
    /// While the chain has another target that can take the call now, the longest a call waits before retrying
    /// here (`max_retry_wait`): a longer backoff is cut to it, and a longer wait that the provider asks for
    /// (Retry-After, a resting key) moves the call on instead. Default 0: with somewhere else to go, never nap —
    /// retry at once or move on. With nowhere else to go, waits are only bounded by the call's deadline.
    public var maxRetryWait: Duration

    public init(retryCount: Int = 2, backoffStrategy: BackoffStrategy = .exponential,
                backoffBase: Duration = .milliseconds(250), backoffMax: Duration = .seconds(30), jitter: Bool = true,
                respectRateLimits: Bool = true, maxRetryWait: Duration = .zero) {
        self.retryCount = retryCount
        self.backoffStrategy = backoffStrategy
        self.backoffBase = backoffBase
        self.backoffMax = backoffMax
        self.jitter = jitter
        self.respectRateLimits = respectRateLimits
        self.maxRetryWait = maxRetryWait
    }

    /// The ceiling of the `retry`-th wait (0-based): min(max, base · 2^retry) for exponential.
    public func backoffCeiling(retry: Int) -> Duration {
        switch backoffStrategy {
        case .constant:
            return min(backoffBase, backoffMax)
        case .exponential:
            let factor = Int64(1) << Int64(min(retry, 40))
            let (ns, overflow) = backoffBase.nanoseconds.multipliedReportingOverflow(by: factor)
            return overflow ? backoffMax : min(.nanoseconds(ns), backoffMax)
        }
    }

    /// The `retry`-th wait. `unit` is a uniform random number in [0, 1), passed in so tests are exact.
    public func backoff(retry: Int, unit: Double) -> Duration {
        let ceiling = backoffCeiling(retry: retry)
        guard jitter else { return ceiling }
        return .nanoseconds(Int64(Double(ceiling.nanoseconds) * min(max(unit, 0), 1)))
    }
}

/// Which failures move a call on to the chain's next target (`fallback_on`). Auth failures do not, by default:
/// a wrong key is a configuration error that a fallback would hide.
public struct FallbackPolicy: Sendable, Hashable {
    public var fallbackOn: Set<FailureKind>

    public static let defaultKinds: Set<FailureKind> = [
        .transient, .rateLimited, .quotaExhausted, .notFound, .configuration,
    ]

    public init(fallbackOn: Set<FailureKind> = defaultKinds) {
        self.fallbackOn = fallbackOn
    }
}

/// What to do after a failed attempt.
public enum NextStep: Sendable, Hashable {
    /// Try the same target again after `after`.
    case retry(after: Duration)
    /// Move on to the chain's next target now.
    case nextTarget(reason: String)
    /// Give up: the call fails with `reason`.
    case fail(reason: String)
}

/// The retry and fallback decision for one failed attempt: pure, so every rule is tested in virtual time.
public enum RetryPlanner {
    public struct Input: Sendable {
        public var classification: Classification
        /// Retries already made on this target (waits the provider asked for on a 429 are not counted).
        public var retriesDone: Int
        /// Whether the chain has a later target to fall back to.
        public var hasNextTarget: Bool
        /// Whether a later target can take the call now (its breaker lets it through and a key is free): only then
        /// is moving on better than waiting here.
        public var nextTargetReady: Bool
        public var now: Instant
        public var deadline: Instant
        /// The provider's own wait (Retry-After and friends), if it gave one.
        public var providerWait: Duration?
        /// Whether the host-wide retry budget has room for one more retry.
        public var budgetAllows: Bool
        /// A uniform random number in [0, 1) for the jitter.
        public var unit: Double

        public init(classification: Classification, retriesDone: Int, hasNextTarget: Bool,
                    nextTargetReady: Bool? = nil, now: Instant, deadline: Instant, providerWait: Duration?,
                    budgetAllows: Bool, unit: Double) {
            self.classification = classification
            self.retriesDone = retriesDone
            self.hasNextTarget = hasNextTarget
            self.nextTargetReady = hasNextTarget && (nextTargetReady ?? true)
            self.now = now
            self.deadline = deadline
            self.providerWait = providerWait
            self.budgetAllows = budgetAllows
            self.unit = unit
        }
    }

    /// Whether a failure is a rate limit the provider said how long to wait out: the call is paced, not retried,
    /// so `retry_count` does not bound it (the deadline and the retry budget do).
    public static func isPaced(_ input: Input, retry: RetryPolicy) -> Bool {
        input.classification.kind == .rateLimited && retry.respectRateLimits && input.providerWait != nil
    }

    public static func decide(_ input: Input, retry: RetryPolicy, fallback: FallbackPolicy) -> NextStep {
        let kind = input.classification.kind
        let canFallBack = input.hasNextTarget && fallback.fallbackOn.contains(kind)
        let elsewhereNow = canFallBack && input.nextTargetReady
        func moveOn(_ why: String) -> NextStep {
            canFallBack ? .nextTarget(reason: why) : .fail(reason: why)
        }
        guard input.classification.retryable else {
            return moveOn("\(kind) failure is not retried")
        }
        let paced = isPaced(input, retry: retry)
        guard paced || input.retriesDone < retry.retryCount else {
            return moveOn("retries exhausted (\(retry.retryCount))")
        }
        let providerWait = retry.respectRateLimits ? input.providerWait : nil
        if elsewhereNow, let providerWait, providerWait > retry.maxRetryWait {
            return .nextTarget(reason: "the provider asked to wait \(format(providerWait)), longer than "
                                   + "max_retry_wait")
        }
        guard input.budgetAllows else {
            return moveOn("retry budget exhausted")
        }
        var wait = paced ? .zero : retry.backoff(retry: input.retriesDone, unit: input.unit)
        if let providerWait { wait = max(wait, providerWait) }
        if elsewhereNow { wait = min(wait, retry.maxRetryWait) }
        if input.now + wait >= input.deadline {
            return moveOn("a wait of \(format(wait)) would pass the call's deadline")
        }
        return .retry(after: wait)
    }

    public static func format(_ d: Duration) -> String {
        let ms = d.nanoseconds / 1_000_000
        return ms >= 1000 ? "\(Double(ms) / 1000) s" : "\(ms) ms"
    }
}
