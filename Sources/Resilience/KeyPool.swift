/// Provider rate limits per API key (`rate_limits: {rpm, tpm}`), and rotation across several keys: each key has
/// its own RPM and TPM GCRA limiters; a key the provider rate-limited rests while the others serve; what the
/// provider's headers say (remaining = 0 until a reset) slows the daemon down before the provider says 429.
public struct KeyPool: Sendable {
    public struct Limits: Sendable, Hashable {
        /// Requests per minute per key; nil: unlimited.
        public var rpm: Int?
        /// Tokens per minute per key; nil: unlimited.
        public var tpm: Int?

        public init(rpm: Int? = nil, tpm: Int? = nil) {
            self.rpm = rpm
            self.tpm = tpm
        }
    }

    struct Key: Sendable {
        var rpm: GCRALimiter?
        var tpm: GCRALimiter?
        var restingUntil: Instant?
    }

    public enum Grant: Sendable, Hashable {
        /// Use key `index`; `tokens` were reserved and must be settled when the call ends.
        case key(index: Int, tokens: Int)
        /// Every key is resting or at its limit; the earliest one is free at `until`.
        case wait(until: Instant)
    }

    private var keys: [Key]
    private var nextIndex = 0

    public init(keyCount: Int, limits: Limits) {
        keys = (0..<max(1, keyCount)).map { _ in
            Key(rpm: limits.rpm.map { GCRALimiter(rate: $0, per: .seconds(60)) },
                tpm: limits.tpm.map { GCRALimiter(rate: $0, per: .seconds(60)) })
        }
    }

    public var keyCount: Int { keys.count }

    /// Picks the next key, round robin, that is not resting and whose limits admit a call of `tokens` now.
    public mutating func acquire(tokens: Int, now: Instant) -> Grant {
        var earliest: Instant?
        for step in 0..<keys.count {
            let i = (nextIndex + step) % keys.count
            if let rest = keys[i].restingUntil {
                if rest > now {
                    earliest = min(earliest ?? rest, rest)
                    continue
                }
                keys[i].restingUntil = nil
            }
            if let rpm = keys[i].rpm {
                var trial = rpm
                if case .wait(let until) = trial.reserve(cost: 1, now: now) {
                    earliest = min(earliest ?? until, until)
                    continue
                }
                if let tpm = keys[i].tpm {
                    var tokenTrial = tpm
                    if case .wait(let until) = tokenTrial.reserve(cost: tokens, now: now) {
                        earliest = min(earliest ?? until, until)
                        continue
                    }
                    keys[i].tpm = tokenTrial
                }
                keys[i].rpm = trial
            } else if let tpm = keys[i].tpm {
                var tokenTrial = tpm
                if case .wait(let until) = tokenTrial.reserve(cost: tokens, now: now) {
                    earliest = min(earliest ?? until, until)
                    continue
                }
                keys[i].tpm = tokenTrial
            }
            nextIndex = (i + 1) % keys.count
            return .key(index: i, tokens: tokens)
        }
        return .wait(until: earliest ?? now)
    }

    /// The call on `index` used `actualTokens` where `reservedTokens` were taken up front: correct the TPM limiter.
    public mutating func settle(index: Int, reservedTokens: Int, actualTokens: Int, now: Instant) {
        guard keys.indices.contains(index) else { return }
        keys[index].tpm?.adjust(by: actualTokens - reservedTokens, now: now)
    }

    /// The provider rate-limited this key: it rests until `until` while the others serve.
    public mutating func rest(index: Int, until: Instant) {
        guard keys.indices.contains(index) else { return }
        keys[index].restingUntil = max(keys[index].restingUntil ?? until, until)
    }

    /// Learns from an answer's headers: a spent request or token quota rests the key until its reset, before the
    /// provider has to say 429.
    public mutating func learn(index: Int, from info: RateLimitInfo, now: Instant) {
        guard keys.indices.contains(index) else { return }
        var until: Instant?
        if info.remainingRequests == 0, let reset = info.resetRequests { until = now + reset }
        if info.remainingTokens == 0, let reset = info.resetTokens { until = max(until ?? now, now + reset) }
        if let until, until > now { rest(index: index, until: until) }
    }
}
