/// A host-wide cap on retries for one provider: retries may be at most `ratio` of the calls in the last `window`,
/// plus a small floor (`minRetriesPerSecond`) so a quiet host can still retry. Finagle's retry budget, counted in
/// ten time buckets so memory stays constant.
///
/// The default ratio, 0.5, is what `retry_count: 3` needs at a 30% failure rate (0.3 + 0.09 + 0.027 = 0.42
/// retries per call) with room to spare, while a provider that is down sees at most 1.5 attempts per call even
/// with its breaker disabled (Finagle's and Linkerd's 0.2 starve such a bad hour: 84% of calls answered).
public struct RetryBudget: Sendable {
    public let ratio: Double
    public let minRetriesPerSecond: Double
    public let window: Duration
    private var calls: OutcomeWindow
    private var retries: OutcomeWindow

    public init(ratio: Double = 0.5, minRetriesPerSecond: Double = 2, window: Duration = .seconds(10)) {
        self.ratio = ratio
        self.minRetriesPerSecond = minRetriesPerSecond
        self.window = window
        calls = OutcomeWindow(length: window)
        retries = OutcomeWindow(length: window)
    }

    /// Counts a first attempt (live traffic).
    public mutating func recordCall(now: Instant) {
        calls.add(failure: false, now: now)
    }

    /// Takes back a first attempt counted at `now` that never reached the provider.
    public mutating func forgetCall(now: Instant) {
        calls.remove(now: now)
    }

    /// Takes one retry from the budget if it has room; false means retrying now would make a retry storm.
    public mutating func tryRetry(now: Instant) -> Bool {
        let c = calls.counts(now: now).calls
        let r = retries.counts(now: now).calls
        let allowance = Double(c) * ratio + minRetriesPerSecond * window.seconds
        guard Double(r + 1) <= allowance else { return false }
        retries.add(failure: false, now: now)
        return true
    }
}
