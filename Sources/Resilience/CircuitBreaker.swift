/// Circuit breaker settings (`circuit_breaker:` in the config), per (provider, model).
///
/// The rule, in the closed state: once the rolling window holds `minimumCalls` attempts, the breaker opens when
/// their failure share reaches `failureRateThreshold` — at volume only a rate says a provider is dead rather than
/// flaky. While the window holds fewer attempts, a rate means little, so it opens when `failureThreshold` calls in
/// a row fail at this target (each within `rollingWindow` of the one before). A call counts once, with the outcome
/// it leaves the target with — after its retries there — so a flaky provider whose retries succeed never builds a
/// streak, and a dead one opens after `failureThreshold` calls.
public struct BreakerPolicy: Sendable, Hashable {
    /// False: the breaker never opens (`enabled: false`); every attempt is allowed.
    public var enabled: Bool
    /// Calls in a row that open the breaker while the window holds fewer than `minimumCalls` attempts
    /// (`failure_threshold`).
    public var failureThreshold: Int
    /// The window attempts and failures are counted over (`rolling_window`).
    public var rollingWindow: Duration
    /// Failure share (0...1) of the attempts in the window that opens the breaker once there are `minimumCalls`
    /// of them (`failure_rate_threshold`).
    public var failureRateThreshold: Double
    /// Attempts needed in the window before the failure rate decides (`minimum_calls`).
    public var minimumCalls: Int
    /// How long the breaker stays open before letting probes through (`timeout_period`).
    public var timeoutPeriod: Duration
    /// Probe calls allowed at once while half-open (`half_open_max_calls`).
    public var halfOpenMaxCalls: Int
    /// Probe successes needed to close again (`success_threshold`).
    public var successThreshold: Int
    /// A call slower than this counts as a failure (`slow_call_threshold`), under the same rule; nil: speed never
    /// counts.
    public var slowCallThreshold: Duration?
    /// A failure share (with `minimumCalls` calls in the window) that raises a warning-level alert, below the
    /// share that opens the breaker (`alert_failure_rate`); nil: no alert.
    public var alertFailureRate: Double?

    public init(enabled: Bool = true, failureThreshold: Int = 5, rollingWindow: Duration = .seconds(30),
                failureRateThreshold: Double = 0.5, minimumCalls: Int = 100, timeoutPeriod: Duration = .seconds(30),
                halfOpenMaxCalls: Int = 1, successThreshold: Int = 2, slowCallThreshold: Duration? = nil,
                alertFailureRate: Double? = 0.25) {
        self.enabled = enabled
        self.failureThreshold = failureThreshold
        self.rollingWindow = rollingWindow
        self.failureRateThreshold = failureRateThreshold
        self.minimumCalls = minimumCalls
        self.timeoutPeriod = timeoutPeriod
        self.halfOpenMaxCalls = halfOpenMaxCalls
        self.successThreshold = successThreshold
        self.slowCallThreshold = slowCallThreshold
        self.alertFailureRate = alertFailureRate
    }
}

/// One state change, with the reason it happened: each becomes an audit event.
public struct BreakerTransition: Sendable, Hashable, CustomStringConvertible {
    public var from: CircuitBreaker.StateName
    public var to: CircuitBreaker.StateName
    public var reason: String
    public var at: Instant

    public var description: String { "\(from) → \(to): \(reason)" }
}

/// A circuit breaker with a real half-open state, as a value-type state machine: the caller keeps it behind a
/// lock, asks `acquire` before an attempt, reports with `record`, and acts on the transitions it returns.
public struct CircuitBreaker: Sendable {
    public enum StateName: String, Sendable, Hashable, CustomStringConvertible {
        case closed, open
        case halfOpen = "half_open"
        public var description: String { rawValue }
    }

    /// Calls in a row that left this target failed, while closed: what the count rule looks at.
    struct FailureStreak: Sendable, Hashable {
        var calls = 0
        var lastFailureAt: Instant?
    }

    enum State: Sendable {
        case closed(FailureStreak)
        case open(until: Instant)
        case halfOpen(inFlight: Int, successes: Int)
    }

    /// Whether an attempt may go ahead.
    public enum Permit: Sendable, Hashable {
        case allowed
        /// A half-open probe: report its outcome with `isProbe: true`.
        case probe
        /// Open (or half-open with all probe slots taken): skip this target.
        case rejected(retryAt: Instant)
    }

    public let policy: BreakerPolicy
    private(set) var state: State = .closed(FailureStreak())
    private var window: OutcomeWindow

    public init(policy: BreakerPolicy) {
        self.policy = policy
        window = OutcomeWindow(length: policy.rollingWindow)
    }

    public var stateName: StateName {
        switch state {
        case .closed: .closed
        case .open: .open
        case .halfOpen: .halfOpen
        }
    }

    /// When an open breaker lets probes through; nil unless open.
    public var reopensAt: Instant? {
        if case .open(let until) = state { return until }
        return nil
    }

    /// Calls and failures in the current window.
    public func windowCounts(now: Instant) -> (calls: Int, failures: Int) {
        window.counts(now: now)
    }

    /// The failure share in the current window, for status displays.
    public func failureRate(now: Instant) -> Double {
        let (calls, failures) = window.counts(now: now)
        return calls == 0 ? 0 : Double(failures) / Double(calls)
    }

    /// Whether `acquire` would let an attempt through now, without taking a probe slot: for choosing where a call
    /// can go next.
    public func wouldAllow(now: Instant) -> Bool {
        guard policy.enabled else { return true }
        switch state {
        case .closed: return true
        case .open(let until): return now >= until
        case .halfOpen(let inFlight, _): return inFlight < policy.halfOpenMaxCalls
        }
    }

    /// Whether an attempt's result counts as a failure: it failed in a way that says the provider is unhealthy
    /// (`failed`, decided by the caller with `FailureKind.countsAgainstBreaker`), or it was slower than
    /// `slowCallThreshold`.
    public func countsAsFailure(failed: Bool, duration: Duration) -> Bool {
        if failed { return true }
        guard let slow = policy.slowCallThreshold else { return false }
        return duration > slow
    }

    /// Asks to make an attempt. An open breaker whose timeout has passed turns half-open here.
    public mutating func acquire(now: Instant) -> (Permit, [BreakerTransition]) {
        guard policy.enabled else { return (.allowed, []) }
        switch state {
        case .closed:
            return (.allowed, [])
        case .open(let until):
            guard now >= until else { return (.rejected(retryAt: until), []) }
            state = .halfOpen(inFlight: 1, successes: 0)
            return (.probe, [transition(.open, .halfOpen, "timeout_period of \(policy.timeoutPeriod) passed", now)])
        case .halfOpen(let inFlight, let successes):
            guard inFlight < policy.halfOpenMaxCalls else { return (.rejected(retryAt: now), []) }
            state = .halfOpen(inFlight: inFlight + 1, successes: successes)
            return (.probe, [])
        }
    }

    /// Reports an attempt's result. `failed` is whether it counts as a failure for the breaker (the caller
    /// decides with `FailureKind.countsAgainstBreaker`); `duration` lets slow calls count as failures. In the
    /// closed state this feeds the rate rule; the count rule hears of calls through `recordCall`.
    public mutating func record(failed: Bool, duration: Duration = .zero, isProbe: Bool,
                                now: Instant) -> [BreakerTransition] {
        guard policy.enabled else { return [] }
        let failure = countsAsFailure(failed: failed, duration: duration)
        let why = failed ? "failure" : "slow call (\(duration) > \(policy.slowCallThreshold ?? .zero))"
        switch state {
        case .halfOpen(let inFlight, let successes):
            guard isProbe else { return [] }  // a call admitted before the breaker opened: ignore
            if failure {
                state = .open(until: now + policy.timeoutPeriod)
                return [transition(.halfOpen, .open, "probe \(why)", now)]
            }
            let done = successes + 1
            if done >= policy.successThreshold {
                state = .closed(FailureStreak())
                window.reset()
                return [transition(.halfOpen, .closed, "\(done) probe successes", now)]
            }
            state = .halfOpen(inFlight: max(0, inFlight - 1), successes: done)
            return []
        case .open:
            return []
        case .closed:
            window.add(failure: failure, now: now)
            guard failure else { return [] }
            let (calls, failures) = window.counts(now: now)
            guard calls >= policy.minimumCalls, Double(failures) / Double(calls) >= policy.failureRateThreshold
            else { return [] }
            state = .open(until: now + policy.timeoutPeriod)
            let rate = Int((Double(failures) / Double(calls) * 100).rounded())
            return [transition(.closed, .open,
                               "failure rate \(rate)% over \(calls) attempts within \(policy.rollingWindow) "
                                   + "(threshold \(Int(policy.failureRateThreshold * 100))%)", now)]
        }
    }

    /// Reports how a call left this target, after its retries here: `failed` when its last attempt counted as a
    /// failure (`countsAsFailure`), false when it got its answer. Outcomes that say nothing about the provider's
    /// health (rate limits, bad requests, cancellations) are not reported. While the window holds fewer than
    /// `minimumCalls` attempts, `failureThreshold` failed calls in a row open the breaker; at volume the rate
    /// decides alone.
    public mutating func recordCall(failed: Bool, now: Instant) -> [BreakerTransition] {
        guard policy.enabled, case .closed(var streak) = state else { return [] }
        guard failed else {
            state = .closed(FailureStreak())
            return []
        }
        if let last = streak.lastFailureAt, now - last > policy.rollingWindow { streak = FailureStreak() }
        streak.calls += 1
        streak.lastFailureAt = now
        let attempts = window.counts(now: now).calls
        guard streak.calls >= policy.failureThreshold, attempts < policy.minimumCalls else {
            state = .closed(streak)
            return []
        }
        state = .open(until: now + policy.timeoutPeriod)
        return [transition(.closed, .open,
                           "\(streak.calls) calls in a row failed (failure_threshold \(policy.failureThreshold), "
                               + "\(attempts) attempts in the window, fewer than minimum_calls)", now)]
    }

    /// Half-open probe slots taken and not yet reported or released.
    public var probesInFlight: Int {
        if case .halfOpen(let inFlight, _) = state { inFlight } else { 0 }
    }

    /// A probe ended without an outcome that says anything (cancelled): free its slot.
    public mutating func releaseProbe() {
        if case .halfOpen(let inFlight, let successes) = state {
            state = .halfOpen(inFlight: max(0, inFlight - 1), successes: successes)
        }
    }

    /// An admin reset: closed, counts cleared.
    public mutating func reset(now: Instant) -> [BreakerTransition] {
        let from = stateName
        state = .closed(FailureStreak())
        window.reset()
        return from == .closed ? [] : [transition(from, .closed, "reset by an admin", now)]
    }

    /// Restores an open breaker after a restart (the reopen time comes from the state store).
    public mutating func restoreOpen(until: Instant) {
        state = .open(until: until)
    }

    private func transition(_ from: StateName, _ to: StateName, _ reason: String, _ at: Instant) -> BreakerTransition {
        BreakerTransition(from: from, to: to, reason: reason, at: at)
    }
}

/// Calls and failures over a sliding time window, in ten buckets so memory stays constant at any call rate.
struct OutcomeWindow: Sendable {
    static let bucketCount = 10
    let bucketLength: Int64
    private var calls = [Int](repeating: 0, count: bucketCount)
    private var failures = [Int](repeating: 0, count: bucketCount)
    /// The absolute bucket number each slot holds.
    private var epochs = [Int64](repeating: -1, count: bucketCount)

    init(length: Duration) {
        bucketLength = max(1, length.nanoseconds / Int64(Self.bucketCount))
    }

    mutating func add(failure: Bool, now: Instant) {
        let epoch = now.nanoseconds / bucketLength
        let slot = Int(epoch % Int64(Self.bucketCount))
        if epochs[slot] != epoch {
            epochs[slot] = epoch
            calls[slot] = 0
            failures[slot] = 0
        }
        calls[slot] += 1
        if failure { failures[slot] += 1 }
    }

    /// Takes back one success counted in the current bucket (a call that turned out never to have been made).
    mutating func remove(now: Instant) {
        let epoch = now.nanoseconds / bucketLength
        let slot = Int(epoch % Int64(Self.bucketCount))
        guard epochs[slot] == epoch, calls[slot] > failures[slot] else { return }
        calls[slot] -= 1
    }

    func counts(now: Instant) -> (calls: Int, failures: Int) {
        let current = now.nanoseconds / bucketLength
        var c = 0
        var f = 0
        for slot in 0..<Self.bucketCount where epochs[slot] > current - Int64(Self.bucketCount) {
            c += calls[slot]
            f += failures[slot]
        }
        return (c, f)
    }

    mutating func reset() {
        epochs = [Int64](repeating: -1, count: Self.bucketCount)
    }
}
