/// What one daemon holds of a provider key's cluster-wide limits (`rate_limits: {scope: cluster}`): requests and
/// tokens leased from the cluster store and not yet used. A call takes from the lease without asking the store;
/// when it runs short, the daemon asks the store for more (one request at a time per key, off the call's path)
/// and the calls that found it short look again once the answer is in. The store grants only what its limit
/// allows across every daemon, so what all daemons send together never passes the limit; a lease left unused
/// goes back.
///
/// When the store cannot be reached the key is paced locally at `fallbackShare` of the cluster limit (a
/// conservative share: the limit over the daemons last seen alive, or the configured share), and a lease in
/// hand is still used first. Pure: the daemon feeds it the store's answers and the time.
public struct ClusterShare: Sendable {
    /// The cluster limits; also what the local fallback is a share of.
    public let limits: KeyPool.Limits
    /// Leased and not yet used.
    public private(set) var requests = 0
    public private(set) var tokens = 0
    /// A lease request is out to the store.
    public private(set) var refilling = false
    /// The store said what was needed does not fit before this: nobody asks again sooner.
    public private(set) var notBefore: Instant?
    /// Tokens answers used beyond their reservations, to be charged with the next lease request.
    public private(set) var debtTokens = 0
    /// The largest call (in tokens) that found the lease short since the last grant.
    private var shortBy: Int?
    /// The latest a call that found it short could still go (its place in the queue may be granted for up to
    /// then); nil: a call that cannot wait.
    private var shortUntil: Instant?
    /// A lease granted for a later slot may be used from this time on.
    public private(set) var validFrom: Instant?
    /// Last time a call took from the lease (or it was granted): an idle lease goes back.
    public private(set) var lastActive: Instant = .zero
    /// Set while the store cannot be reached: local limiters at a share of the cluster limits.
    private var fallback: (rpm: GCRALimiter?, tpm: GCRALimiter?)?
    /// Calls that took from the lease for a later time (a slot the store granted ahead) and have not gone yet:
    /// if the store is lost they still go, so the local share counts them.
    private var placesAhead: [(at: Instant, tokens: Int)] = []

    /// How often a call waiting for a lease answer looks again.
    public static let poll: Duration = .milliseconds(1)

    public init(limits: KeyPool.Limits) {
        self.limits = limits
    }

    public var isFallingBack: Bool { fallback != nil }

    /// A lease request to send: what the next call needs at least, and what to ask for (`leaseRequests`
    /// requests' worth). Nil when the lease covers it, a request is out, or the store said to wait.
    /// Requests and tokens (of a lease, a need, a grant).
    public struct Units: Sendable, Hashable {
        public var requests: Int
        public var tokens: Int

        public init(requests: Int, tokens: Int) {
            self.requests = requests
            self.tokens = tokens
        }
    }

    public struct Refill: Sendable, Hashable {
        public var need: Units
        public var want: Units
        public var debtTokens: Int
        /// How far ahead the need may be granted (the waiting call's remaining time); zero: only now.
        public var maxWait: Duration
    }

    private func covers(_ callTokens: Int) -> Bool {
        (limits.rpm == nil || requests >= 1) && (limits.tpm == nil || tokens >= callTokens)
    }

    /// When a call of `callTokens` could go; `firm` false when that is only when to look again (a lease
    /// answer is awaited, or the store named a time that another daemon may take first).
    func earliest(tokens callTokens: Int, now: Instant) -> (at: Instant, firm: Bool) {
        if covers(callTokens) { return (max(now, validFrom ?? now), true) }
        if let fallback {
            var at = now
            if let rpm = fallback.rpm { at = max(at, rpm.earliest(cost: 1, now: now)) }
            if let tpm = fallback.tpm { at = max(at, tpm.earliest(cost: callTokens, now: now)) }
            return (at, true)
        }
        return (max(now + Self.poll, notBefore ?? now), false)
    }

    /// Takes a call the lease covers (or, falling back, the local share allows) at `at` (`now` or later).
    mutating func take(tokens callTokens: Int, at: Instant, now: Instant) {
        lastActive = at
        if covers(callTokens), (validFrom ?? at) <= at {
            if limits.rpm != nil { requests -= 1 }
            if limits.tpm != nil { tokens -= callTokens }
            if !placesAhead.isEmpty { placesAhead.removeAll { $0.at <= now } }
            if at > now { placesAhead.append((at, callTokens)) }
            return
        }
        guard var f = fallback else { return }
        _ = f.rpm?.reserve(cost: 1, now: at)
        _ = f.tpm?.reserve(cost: callTokens, now: at)
        fallback = f
    }

    /// A call of `callTokens` found the lease short: remember how much it needs, and until when it may wait.
    mutating func noteShort(tokens callTokens: Int, until: Instant?) {
        guard !covers(callTokens) else { return }
        shortBy = max(shortBy ?? 0, callTokens)
        if let until { shortUntil = max(shortUntil ?? until, until) }
    }

    /// The lease request to send now, if one is due; marks it out.
    public mutating func refill(leaseRequests: Int, now: Instant) -> Refill? {
        guard let short = shortBy, !refilling, fallback == nil, (notBefore ?? now) <= now, !covers(short) else {
            return nil
        }
        let lease = max(1, leaseRequests)
        let needRequests = limits.rpm == nil ? 0 : max(0, 1 - requests)
        let needTokens = limits.tpm == nil ? 0 : max(0, short - tokens)
        let wantRequests = limits.rpm == nil ? 0 : max(needRequests, lease - requests)
        let wantTokens = limits.tpm == nil ? 0 : max(needTokens, lease * short - tokens)
        refilling = true
        let debt = debtTokens
        debtTokens = 0
        let maxWait = max(.zero, (shortUntil ?? now) - now)
        return Refill(need: .init(requests: needRequests, tokens: needTokens),
                      want: .init(requests: wantRequests, tokens: wantTokens), debtTokens: debt, maxWait: maxWait)
    }

    /// The store's answer to the lease request: units granted (usable after `wait`: a later slot), or nothing
    /// and how long until the need fits.
    public mutating func granted(requests r: Int, tokens t: Int, wait: Duration, now: Instant) {
        refilling = false
        guard r > 0 || t > 0 else {
            notBefore = wait > .zero ? now + wait : nil
            return
        }
        requests += r
        tokens += t
        notBefore = nil
        validFrom = wait > .zero ? now + wait : nil
        shortBy = nil
        shortUntil = nil
        lastActive = now
    }

    /// The lease request got no answer: the debt it carried is owed again.
    public mutating func refillFailed(debtTokens debt: Int) {
        refilling = false
        debtTokens += debt
    }

    /// An answer used `actual` tokens where `reserved` were taken: the rest goes back to the lease (the store
    /// was already paid for it); more than reserved is owed to the store.
    mutating func settle(reservedTokens reserved: Int, actualTokens actual: Int, now: Instant) {
        // Falling back, the call may have been paced by the local share rather than the lease: nothing is credited
        // (the conservative side; the local limiter keeps its estimate).
        guard limits.tpm != nil, fallback == nil else { return }
        if actual < reserved { tokens += reserved - actual } else { debtTokens += actual - reserved }
    }

    /// The lease, if it has sat unused since `idleSince`: handed back (to return to the store) and emptied.
    public mutating func takeIdle(idleSince: Instant) -> (requests: Int, tokens: Int)? {
        guard !refilling, lastActive < idleSince, requests > 0 || tokens > 0 else { return nil }
        defer {
            requests = 0
            tokens = 0
        }
        return (requests, tokens)
    }

    /// The store cannot be reached: pace locally at `share` (0–1] of the cluster limits, burst likewise. What
    /// this daemon still holds from the store (the lease in hand, and places granted for later that have not gone
    /// yet) is spent within the share: it still goes out, and the local limiters count it as sent now.
    public mutating func fallBack(share: Double, now: Instant) {
        let s = min(1, max(0.001, share))
        func limiter(_ rate: Int?) -> GCRALimiter? {
            guard let rate else { return nil }
            let shared = max(1, Int((Double(rate) * s).rounded(.down)))
            let burst = max(1, Int((Double(limits.burst(of: rate)) * s).rounded(.down)))
            return GCRALimiter(rate: shared, per: .seconds(60), burst: burst)
        }
        if fallback == nil {
            var local = (rpm: limiter(limits.rpm), tpm: limiter(limits.tpm))
            let ahead = placesAhead.filter { $0.at > now }
            local.rpm?.charge(cost: ahead.count + requests, now: now)
            local.tpm?.charge(cost: ahead.reduce(tokens) { $0 + $1.tokens }, now: now)
            fallback = local
            placesAhead = []
        }
        refilling = false
        notBefore = nil
    }

    /// The store answers again: leases as before (what the fallback let through was counted only here).
    public mutating func rejoin() {
        fallback = nil
    }
}
