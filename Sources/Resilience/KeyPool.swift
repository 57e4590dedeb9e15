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
        /// Seconds of each rate let through at once (`burst_seconds`); nil: a whole minute's worth.
        public var burstSeconds: Double?
        /// Whether the limits are this daemon's alone or shared by every daemon through the cluster store.
        public var scope: Scope = .host

        public enum Scope: String, Sendable, Hashable, CaseIterable {
            case host
            case cluster
        }

        public init(rpm: Int? = nil, tpm: Int? = nil, burstSeconds: Double? = nil, scope: Scope = .host) {
            self.rpm = rpm
            self.tpm = tpm
            self.burstSeconds = burstSeconds
            self.scope = scope
        }

        /// The units of `rate` (per minute) let through at once.
        public func burst(of rate: Int) -> Int {
            guard let burstSeconds else { return rate }
            return max(1, min(rate, Int((Double(rate) / 60 * burstSeconds).rounded(.down))))
        }

        func limiter(_ rate: Int?) -> GCRALimiter? {
            rate.map { GCRALimiter(rate: $0, per: .seconds(60), burst: burst(of: $0)) }
        }

        /// Lease size for cluster limits: a tenth of a second of the request rate, at least one.
        public var leaseRequests: Int { max(1, (rpm ?? 600) / 600) }
    }

    /// A limit the provider told us about, with the limiter that keeps to it.
    struct Learned: Sendable {
        var perMinute: Int
        var limiter: GCRALimiter
    }

    struct Key: Sendable {
        var rpm: GCRALimiter?
        var tpm: GCRALimiter?
        /// For cluster limits (then `rpm`/`tpm` are nil): the lease this daemon holds.
        var cluster: ClusterShare?
        var learnedRequests: Learned?
        var learnedTokens: Learned?
        var restingUntil: Instant?

        /// The earliest time this key can take a call of `tokens`, from `now` on, and whether that time is certain
        /// (false: only when to look at a cluster lease again). (On every call's path: no allocation.)
        func earliest(tokens: Int, now: Instant) -> (at: Instant, firm: Bool) {
            var at = max(now, restingUntil ?? now)
            // A lease that covers the call is taken when the call is (even for a later time), so only a lease
            // that does not makes the time uncertain.
            let lease = cluster?.earliest(tokens: tokens, now: now)
            if let lease { at = max(at, lease.at) }
            if let rpm { at = max(at, rpm.earliest(cost: 1, now: now)) }
            if let tpm { at = max(at, tpm.earliest(cost: tokens, now: now)) }
            if let l = learnedRequests { at = max(at, l.limiter.earliest(cost: 1, now: now)) }
            if let l = learnedTokens { at = max(at, l.limiter.earliest(cost: tokens, now: now)) }
            return (at, lease?.firm ?? true)
        }

        /// Takes the call at `at` (`now` or later), which `earliest` said is allowed.
        mutating func take(tokens: Int, at: Instant, now: Instant) {
            if let until = restingUntil, until <= at { restingUntil = nil }
            rpm.take(cost: 1, at: at)
            tpm.take(cost: tokens, at: at)
            cluster?.take(tokens: tokens, at: at, now: now)
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
        isCluster = limits.scope == .cluster && (limits.rpm != nil || limits.tpm != nil)
        keys = (0..<max(1, keyCount)).map { _ in
            switch limits.scope {
            case .host: Key(rpm: limits.limiter(limits.rpm), tpm: limits.limiter(limits.tpm))
            case .cluster where limits.rpm == nil && limits.tpm == nil: Key()
            case .cluster: Key(cluster: ClusterShare(limits: limits))
            }
        }
    }

    public var keyCount: Int { keys.count }

    /// Picks the next key, round robin, that is not resting and whose limits admit a call of `tokens` now.
    public mutating func acquire(tokens: Int, now: Instant) -> Grant {
        guard let (index, at, _) = soonest(tokens: tokens, now: now) else { return .wait(until: now) }
        guard at <= now else {
            noteShort(tokens: tokens, until: nil)
            return .wait(until: at)
        }
        take(index, tokens: tokens, at: now, now: now)
        return .key(index: index, tokens: tokens)
    }

    /// A call's place in the queue for a key.
    public enum Place: Sendable, Hashable {
        /// Key `index` is the call's at `at`: it must go out then, and its tokens be settled as with `acquire`.
        case held(index: Int, at: Instant)
        /// Nothing is held: the soonest key's cluster lease is short and its answer from the cluster store is
        /// awaited (or the store named a time another daemon may take first). Look again at `at`.
        case lookAgain(at: Instant)
    }

    /// Reserves the key that is free soonest, at the earliest time its limits allow, if that is no later than
    /// `notAfter`: a place in the queue, so callers waiting for a key do not all wake at once and race for it.
    public mutating func reserve(tokens: Int, now: Instant, notAfter: Instant) -> Place? {
        guard let (index, at, firm) = soonest(tokens: tokens, now: now), at <= notAfter else { return nil }
        guard firm else {
            noteShort(tokens: tokens, until: notAfter)
            return .lookAgain(at: at)
        }
        take(index, tokens: tokens, at: at, now: now)
        return .held(index: index, at: at)
    }

    /// When the soonest key could take a call of `tokens`; `now` if one can at once. Reserves nothing.
    public func earliest(tokens: Int, now: Instant) -> Instant {
        soonest(tokens: tokens, now: now)?.1 ?? now
    }

    /// The key free soonest, round robin among those free at the same time, and whether that time is certain.
    private func soonest(tokens: Int, now: Instant) -> (Int, Instant, Bool)? {
        var best: (Int, Instant, Bool)?
        for step in 0..<keys.count {
            let i = (nextIndex + step) % keys.count
            let (at, firm) = keys[i].earliest(tokens: tokens, now: now)
            if at <= now { return (i, now, true) }
            if best == nil || at < best!.1 || (at == best!.1 && firm && !best!.2) { best = (i, at, firm) }
        }
        return best
    }

    private mutating func noteShort(tokens: Int, until: Instant?) {
        for i in keys.indices { keys[i].cluster?.noteShort(tokens: tokens, until: until) }
    }

    // MARK: Cluster leases (`scope: cluster`)

    /// Whether the keys' limits are leased from the cluster store (on every call's path: kept, not searched for).
    public let isCluster: Bool

    /// The lease requests due now, one per key at most; each is marked out until answered.
    public mutating func dueRefills(now: Instant) -> [(index: Int, refill: ClusterShare.Refill)] {
        var due: [(Int, ClusterShare.Refill)] = []
        for i in keys.indices {
            guard let limits = keys[i].cluster?.limits,
                  let r = keys[i].cluster?.refill(leaseRequests: limits.leaseRequests, now: now) else { continue }
            due.append((i, r))
        }
        return due
    }

    /// The store's answer to key `index`'s lease request.
    public mutating func leaseGranted(index: Int, requests: Int, tokens: Int, wait: Duration, now: Instant) {
        guard keys.indices.contains(index) else { return }
        keys[index].cluster?.granted(requests: requests, tokens: tokens, wait: wait, now: now)
    }

    /// Key `index`'s lease request got no answer.
    public mutating func leaseFailed(index: Int, debtTokens: Int) {
        guard keys.indices.contains(index) else { return }
        keys[index].cluster?.refillFailed(debtTokens: debtTokens)
    }

    /// Leases unused since `idleSince`, emptied here, to give back to the store.
    public mutating func takeIdleLeases(idleSince: Instant) -> [(index: Int, requests: Int, tokens: Int)] {
        var idle: [(Int, Int, Int)] = []
        for i in keys.indices {
            if let (r, t) = keys[i].cluster?.takeIdle(idleSince: idleSince) { idle.append((i, r, t)) }
        }
        return idle
    }

    /// The store cannot be reached: every key paces locally at `share` of its cluster limits (counting what it
    /// still holds from the store).
    public mutating func fallBack(share: Double, now: Instant) {
        for i in keys.indices { keys[i].cluster?.fallBack(share: share, now: now) }
    }

    /// The store answers again.
    public mutating func rejoin() {
        for i in keys.indices { keys[i].cluster?.rejoin() }
    }

    /// What each key holds of its cluster lease (for `breakwater status`).
    public var leases: [(requests: Int, tokens: Int, fallingBack: Bool)] {
        keys.compactMap { k in k.cluster.map { ($0.requests, $0.tokens, $0.isFallingBack) } }
    }

    private mutating func take(_ index: Int, tokens: Int, at: Instant, now: Instant) {
        keys[index].take(tokens: tokens, at: at, now: now)
        nextIndex = (index + 1) % keys.count
    }

    /// The call on `index` used `actualTokens` where `reservedTokens` were taken up front: correct the TPM limiters.
    public mutating func settle(index: Int, reservedTokens: Int, actualTokens: Int, now: Instant) {
        guard keys.indices.contains(index) else { return }
        keys[index].tpm?.adjust(by: actualTokens - reservedTokens, now: now)
        keys[index].learnedTokens?.limiter.adjust(by: actualTokens - reservedTokens, now: now)
        keys[index].cluster?.settle(reservedTokens: reservedTokens, actualTokens: actualTokens, now: now)
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
