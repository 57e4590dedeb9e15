/// The generic cell rate algorithm: a rate limit as one timestamp (the theoretical arrival time), as in
/// Envoy's and Redis' rate limiters. Used for provider RPM and TPM (where a call's cost is its tokens).
public struct GCRALimiter: Sendable, Hashable {
    /// Time one unit of cost uses up: period / rate.
    public let emissionInterval: Duration
    /// How far ahead of now the arrival time may run: the burst.
    public let tolerance: Duration
    private var tat: Instant

    /// `rate` units per `period`, with up to `burst` units at once (default: the whole rate).
    public init(rate: Int, per period: Duration, burst: Int? = nil) {
        let r = max(1, rate)
        emissionInterval = .nanoseconds(period.nanoseconds / Int64(r))
        tolerance = .nanoseconds(emissionInterval.nanoseconds * Int64(max(1, burst ?? r)))
        tat = .zero
    }

    public enum Decision: Sendable, Hashable {
        case allowed
        /// Not before `at`; nothing was reserved.
        case wait(until: Instant)
    }

    /// Takes `cost` units now if the limit allows, else says when it would.
    public mutating func reserve(cost: Int = 1, now: Instant) -> Decision {
        let increment = Duration.nanoseconds(emissionInterval.nanoseconds * Int64(max(0, cost)))
        let newTAT = max(tat, now) + increment
        let allowAt = newTAT - tolerance
        if allowAt > now { return .wait(until: allowAt) }
        tat = newTAT
        return .allowed
    }

    /// The earliest time `cost` units would be allowed, reserving nothing.
    public func earliest(cost: Int = 1, now: Instant) -> Instant {
        let increment = Duration.nanoseconds(emissionInterval.nanoseconds * Int64(max(0, cost)))
        return max(now, max(tat, now) + increment - tolerance)
    }

    /// The provider says `remaining` units are left now: let no more than that through (never more than this
    /// limiter itself would allow). Keeps a learned limit in step with the provider's own count, which also holds
    /// what other clients of the same key spent.
    public mutating func limitRemaining(to remaining: Int, now: Instant) {
        let left = Duration.nanoseconds(emissionInterval.nanoseconds * Int64(max(0, remaining)))
        tat = max(tat, now + tolerance - left)
    }

    /// Corrects an earlier reservation once the real cost is known: a negative delta gives units back.
    public mutating func adjust(by delta: Int, now: Instant) {
        let shift = Duration.nanoseconds(emissionInterval.nanoseconds * Int64(delta))
        tat = max(tat + shift, now)
    }

    /// Counts `cost` units committed elsewhere, which go out whatever this limiter says: what comes later waits
    /// for them as if they had been taken now.
    public mutating func charge(cost: Int, now: Instant) {
        tat = max(tat, now) + .nanoseconds(emissionInterval.nanoseconds * Int64(max(0, cost)))
    }

    /// The provider said its quota is spent until `until`: nothing passes before then.
    public mutating func block(until: Instant) {
        tat = max(tat, until + tolerance - emissionInterval)
    }
}
