/// Provider rate limits per API key (`rate_limits: {rpm, tpm}`), and rotation across several keys: each key has
/// its own RPM and TPM GCRA limiters; a key the provider rate-limited rests while the others serve; and what the
/// provider's headers say paces the daemon before the provider has to say 429: an answer with
/// `x-ratelimit-limit-*` teaches the key a limiter at that rate, kept in step with `x-ratelimit-remaining-*`.
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

    /// A limit the provider told us about, with the limiter that keeps to it.
    struct Learned: Sendable {
        var perMinute: Int
        var limiter: GCRALimiter
    }

    struct Key: Sendable {
        var rpm: GCRALimiter?
        var tpm: GCRALimiter?
        var learnedRequests: Learned?
        var learnedTokens: Learned?
        var restingUntil: Instant?

        /// The earliest time this key can take a call of `tokens`, from `now` on. (On every call's path: no
        /// allocation.)
        func earliest(tokens: Int, now: Instant) -> Instant {
            var at = max(now, restingUntil ?? now)
            if let rpm { at = max(at, rpm.earliest(cost: 1, now: now)) }
            if let tpm { at = max(at, tpm.earliest(cost: tokens, now: now)) }
            if let l = learnedRequests { at = max(at, l.limiter.earliest(cost: 1, now: now)) }
            if let l = learnedTokens { at = max(at, l.limiter.earliest(cost: tokens, now: now)) }
            return at
        }

        /// Takes the call at `at`, which `earliest` said is allowed.
        mutating func take(tokens: Int, at: Instant) {
            if let until = restingUntil, until <= at { restingUntil = nil }
            rpm.take(cost: 1, at: at)
            tpm.take(cost: tokens, at: at)
            learnedRequests?.limiter.take(cost: 1, at: at)
            learnedTokens?.limiter.take(cost: tokens, at: at)
        }

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
        guard let (index, at) = soonest(tokens: tokens, now: now) else { return .wait(until: now) }
        guard at <= now else { return .wait(until: at) }
        take(index, tokens: tokens, at: now)
        return .key(index: index, tokens: tokens)
    }

    /// Reserves the key that is free soonest, at the earliest time its limits allow, if that is no later than
    /// `notAfter`: a place in the queue, so callers waiting for a key do not all wake at once and race for it.
    /// The call must go out at the returned time, and its tokens be settled as with `acquire`.
    public mutating func reserve(tokens: Int, now: Instant, notAfter: Instant) -> (index: Int, at: Instant)? {
        guard let (index, at) = soonest(tokens: tokens, now: now), at <= notAfter else { return nil }
        take(index, tokens: tokens, at: at)
        return (index, at)
    }

    /// When the soonest key could take a call of `tokens`; `now` if one can at once. Reserves nothing.
    public func earliest(tokens: Int, now: Instant) -> Instant {
        soonest(tokens: tokens, now: now)?.1 ?? now
    }

    /// The key free soonest, round robin among those free at the same time.
    private func soonest(tokens: Int, now: Instant) -> (Int, Instant)? {
        var best: (Int, Instant)?
        for step in 0..<keys.count {
            let i = (nextIndex + step) % keys.count
            let at = keys[i].earliest(tokens: tokens, now: now)
            if at <= now { return (i, now) }
            if best == nil || at < best!.1 { best = (i, at) }
        }
        return best
    }

    private mutating func take(_ index: Int, tokens: Int, at: Instant) {
        keys[index].take(tokens: tokens, at: at)
        nextIndex = (index + 1) % keys.count
    }

    /// The call on `index` used `actualTokens` where `reservedTokens` were taken up front: correct the TPM limiters.
    public mutating func settle(index: Int, reservedTokens: Int, actualTokens: Int, now: Instant) {
        guard keys.indices.contains(index) else { return }
        keys[index].tpm?.adjust(by: actualTokens - reservedTokens, now: now)
        keys[index].learnedTokens?.limiter.adjust(by: actualTokens - reservedTokens, now: now)
    }

    /// The provider rate-limited this key: it rests until `until` while the others serve.
    public mutating func rest(index: Int, until: Instant) {
        guard keys.indices.contains(index) else { return }
        keys[index].restingUntil = max(keys[index].restingUntil ?? until, until)
    }

    /// Learns from an answer's headers. With `x-ratelimit-limit-*` the key gets (or keeps) a limiter at that rate,
    /// whose burst is what the provider's bucket holds (remaining + reset × rate), held to `remaining`: the
    /// daemon then spaces its calls as the provider refills. Without a limit, a spent quota (remaining 0) rests
    /// the key until its reset.
    public mutating func learn(index: Int, from info: RateLimitInfo, now: Instant) {
        guard keys.indices.contains(index) else { return }
        var until: Instant?
        if let limit = info.limitRequests, limit > 0 {
            keys[index].learnedRequests = Self.learned(keys[index].learnedRequests, limit: limit,
                                                       remaining: info.remainingRequests, reset: info.resetRequests,
                                                       now: now)
        } else if info.remainingRequests == 0, let reset = info.resetRequests {
            until = now + reset
        }
        if let limit = info.limitTokens, limit > 0 {
            keys[index].learnedTokens = Self.learned(keys[index].learnedTokens, limit: limit,
                                                     remaining: info.remainingTokens, reset: info.resetTokens,
                                                     now: now)
        } else if info.remainingTokens == 0, let reset = info.resetTokens {
            until = max(until ?? now, now + reset)
        }
        if let until, until > now { rest(index: index, until: until) }
    }

    /// After a 429 on `index`: whether the key should rest for the provider's wait. A 429 whose headers give a
    /// limit has already been learned (the limiter knows when the next call fits); one whose headers show quota
    /// left is an overload signal for that call alone. Only a bare 429 rests the whole key.
    public static func shouldRest(after info: RateLimitInfo) -> Bool {
        if info.limitRequests != nil || info.limitTokens != nil { return false }
        if let r = info.remainingRequests, r > 0, (info.remainingTokens ?? 1) > 0 { return false }
        return true
    }

    private static func learned(_ existing: Learned?, limit: Int, remaining: Int?, reset: Duration?,
                                now: Instant) -> Learned {
        var learned: Learned
        if let existing, existing.perMinute == limit {
            learned = existing
        } else {
            // The bucket's size: what is left plus what refills until it is full.
            var burst = limit
            if let remaining, let reset {
                let refill = Int((reset.seconds * Double(limit) / 60).rounded())
                burst = min(limit, max(1, remaining + refill))
            }
            learned = Learned(perMinute: limit, limiter: GCRALimiter(rate: limit, per: .seconds(60), burst: burst))
        }
        if let remaining { learned.limiter.limitRemaining(to: remaining, now: now) }
        return learned
    }
}

extension Optional where Wrapped == GCRALimiter {
    /// Takes `cost` at `at` from the limiter, if there is one.
    fileprivate mutating func take(cost: Int, at: Instant) {
        guard var limiter = self else { return }
        _ = limiter.reserve(cost: cost, now: at)
        self = limiter
    }
}

extension GCRALimiter {
    /// Takes `cost` at `at` (which `earliest` allowed).
    fileprivate mutating func take(cost: Int, at: Instant) {
        _ = reserve(cost: cost, now: at)
    }
}
