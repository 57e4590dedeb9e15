import Resilience
import Testing

@Suite struct BackoffScheduleTests {
    let policy = RetryPolicy(retryCount: 6, backoffBase: .milliseconds(100), backoffMax: .seconds(1))

    @Test func exponentialCeilingsDoubleUpToTheMax() {
        let ceilings = (0..<6).map { policy.backoffCeiling(retry: $0) }
        #expect(ceilings == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800),
                             .seconds(1), .seconds(1)])
        #expect(policy.backoffCeiling(retry: 200) == .seconds(1), "no overflow at large retry numbers")
    }

    @Test(arguments: [0.0, 0.25, 0.5, 0.999])
    func fullJitterIsUniformBetweenZeroAndTheCeiling(unit: Double) {
        for retry in 0..<6 {
            let wait = policy.backoff(retry: retry, unit: unit)
            let ceiling = policy.backoffCeiling(retry: retry)
            #expect(wait >= .zero && wait <= ceiling)
            #expect(abs(wait.seconds - ceiling.seconds * unit) < 1e-6)
        }
    }

    @Test func noJitterAndConstant() {
        var p = policy
        p.jitter = false
        #expect(p.backoff(retry: 2, unit: 0.1) == .milliseconds(400))
        p.backoffStrategy = .constant
        #expect(p.backoff(retry: 5, unit: 0.1) == .milliseconds(100))
    }
}

@Suite struct RetryPlannerTests {
    let retry = RetryPolicy(retryCount: 2, backoffBase: .milliseconds(100), backoffMax: .seconds(10),
                            maxRetryWait: .milliseconds(500))
    let fallback = FallbackPolicy()
    let now = Instant(nanoseconds: 1_000_000_000_000)
    let transient = Classification(kind: .transient, retryable: true)

    func input(_ c: Classification? = nil, retries: Int = 0, next: Bool = true, ready: Bool = true,
               deadlineIn: Duration = .seconds(30), providerWait: Duration? = nil, budget: Bool = true,
               unit: Double = 0.5) -> RetryPlanner.Input {
        RetryPlanner.Input(classification: c ?? transient, retriesDone: retries, hasNextTarget: next,
                           nextTargetReady: ready, now: now, deadline: now + deadlineIn, providerWait: providerWait,
                           budgetAllows: budget, unit: unit)
    }

    @Test func transientFailureRetriesAfterJitteredBackoff() {
        #expect(RetryPlanner.decide(input(), retry: retry, fallback: fallback) == .retry(after: .milliseconds(50)))
        #expect(RetryPlanner.decide(input(retries: 1), retry: retry, fallback: fallback)
            == .retry(after: .milliseconds(100)))
    }

    @Test func retriesExhaustedFallBackOrFail() {
        #expect(RetryPlanner.decide(input(retries: 2), retry: retry, fallback: fallback)
            == .nextTarget(reason: "retries exhausted (2)"))
        #expect(RetryPlanner.decide(input(retries: 2, next: false), retry: retry, fallback: fallback)
            == .fail(reason: "retries exhausted (2)"))
    }

    @Test func retryAfterIsHonouredWhenNoFallbackIsThere() {
        let step = RetryPlanner.decide(input(next: false, providerWait: .milliseconds(800)), retry: retry,
                                       fallback: fallback)
        #expect(step == .retry(after: .milliseconds(800)))
    }

    @Test func aLongRetryAfterMovesOnToAHealthyFallbackInsteadOfSleeping() {
        let step = RetryPlanner.decide(input(providerWait: .seconds(1)), retry: retry, fallback: fallback)
        guard case .nextTarget(let reason) = step else {
            Issue.record("expected a fallback, got \(step)")
            return
        }
        #expect(reason.contains("max_retry_wait"))
    }

    @Test func aWaitPastTheDeadlineNeverSleeps() {
        let withFallback = RetryPlanner.decide(input(deadlineIn: .milliseconds(300),
                                                     providerWait: .milliseconds(400)),
                                               retry: retry, fallback: fallback)
        guard case .nextTarget(let r1) = withFallback else {
            Issue.record("expected a fallback, got \(withFallback)")
            return
        }
        #expect(r1.contains("deadline"))
        let alone = RetryPlanner.decide(input(next: false, deadlineIn: .milliseconds(900), providerWait: .seconds(1)),
                                        retry: retry, fallback: fallback)
        guard case .fail(let r2) = alone else {
            Issue.record("expected a failure, got \(alone)")
            return
        }
        #expect(r2.contains("deadline"))
    }

    @Test func respectRateLimitsOffIgnoresTheProvidersWait() {
        var r = retry
        r.respectRateLimits = false
        #expect(RetryPlanner.decide(input(providerWait: .seconds(5)), retry: r, fallback: fallback)
            == .retry(after: .milliseconds(50)))
    }

    @Test func authFailuresDoNotFallBackUnlessTheChainSaysSo() {
        let auth = Classification(kind: .auth, retryable: false)
        #expect(RetryPlanner.decide(input(auth), retry: retry, fallback: fallback)
            == .fail(reason: "auth failure is not retried"))
        let permissive = FallbackPolicy(fallbackOn: FallbackPolicy.defaultKinds.union([.auth]))
        #expect(RetryPlanner.decide(input(auth), retry: retry, fallback: permissive)
            == .nextTarget(reason: "auth failure is not retried"))
    }

    @Test func quotaExhaustedIsNotRetriedButFallsBack() {
        let quota = Classification(kind: .quotaExhausted, retryable: false)
        #expect(RetryPlanner.decide(input(quota), retry: retry, fallback: fallback)
            == .nextTarget(reason: "quota_exhausted failure is not retried"))
    }

    /// With another target ready, a call never naps longer than max_retry_wait: the default (0) retries at once.
    @Test func withATargetReadyTheBackoffIsCutToMaxRetryWait() {
        var r = retry
        r.maxRetryWait = .zero
        #expect(RetryPlanner.decide(input(retries: 1), retry: r, fallback: fallback) == .retry(after: .zero))
        r.maxRetryWait = .milliseconds(30)
        #expect(RetryPlanner.decide(input(retries: 1), retry: r, fallback: fallback)
            == .retry(after: .milliseconds(30)))
    }

    /// A fallback that cannot take the call now (breaker open, keys busy) is no reason not to wait here.
    @Test func aFallbackThatIsNotReadyLetsTheCallBackOffHere() {
        var r = retry
        r.maxRetryWait = .zero
        #expect(RetryPlanner.decide(input(retries: 1, ready: false), retry: r, fallback: fallback)
            == .retry(after: .milliseconds(100)))
        #expect(RetryPlanner.decide(input(ready: false, providerWait: .seconds(2)), retry: r, fallback: fallback)
            == .retry(after: .seconds(2)))
        #expect(RetryPlanner.decide(input(retries: 2, ready: false), retry: r, fallback: fallback)
            == .nextTarget(reason: "retries exhausted (2)"), "exhausted: it still moves on, to queue there")
    }

    /// A 429 with the provider's wait is paced, not retried: retry_count does not bound it, the deadline does.
    @Test func aRateLimitWithAWaitIsPacedBeyondRetryCount() {
        let limited = Classification(kind: .rateLimited, retryable: true)
        let paced = input(limited, retries: 2, next: false, providerWait: .seconds(1))
        #expect(RetryPlanner.isPaced(paced, retry: retry))
        #expect(RetryPlanner.decide(paced, retry: retry, fallback: fallback) == .retry(after: .seconds(1)))
        let late = input(limited, retries: 2, next: false, deadlineIn: .milliseconds(500), providerWait: .seconds(1))
        guard case .fail(let why) = RetryPlanner.decide(late, retry: retry, fallback: fallback) else {
            Issue.record("a wait past the deadline must fail")
            return
        }
        #expect(why.contains("deadline"))
        let bare = input(limited, retries: 2, next: false)
        #expect(!RetryPlanner.isPaced(bare, retry: retry), "no wait given: an ordinary retry")
        #expect(RetryPlanner.decide(bare, retry: retry, fallback: fallback) == .fail(reason: "retries exhausted (2)"))
        let withFallback = RetryPlanner.decide(input(limited, providerWait: .seconds(1)), retry: retry,
                                               fallback: fallback)
        #expect(withFallback == .nextTarget(reason: "the provider asked to wait 1.0 s, longer than max_retry_wait"))
    }

    @Test func aLocalConfigurationErrorIsNeverRetried() {
        let local = ErrorClassifier().classify(.transport(.localConfiguration))!
        #expect(local == Classification(kind: .configuration, retryable: false))
        #expect(!local.kind.countsAgainstBreaker)
        #expect(RetryPlanner.decide(input(local), retry: retry, fallback: fallback)
            == .nextTarget(reason: "configuration failure is not retried"))
        #expect(RetryPlanner.decide(input(local, next: false), retry: retry, fallback: fallback)
            == .fail(reason: "configuration failure is not retried"))
    }

    @Test func anEmptyBudgetStopsRetries() {
        #expect(RetryPlanner.decide(input(budget: false), retry: retry, fallback: fallback)
            == .nextTarget(reason: "retry budget exhausted"))
    }
}

@Suite struct RetryBudgetTests {
    /// The defaults in virtual time, 200 calls per second for 60 s: a provider failing 30% of attempts with
    /// `retry_count: 3` gets the 0.42 retries per call it needs (≥ 99% of calls answered), and one that is down
    /// sees at most 1.5 attempts per call (plus the floor) with no breaker to stop it.
    @Test(arguments: [(0.3, 0.99, 1.45), (1.0, 0.0, 1.52)])
    func defaultBudgetAtLoad(failureRate: Double, minSuccess: Double, maxAttemptsPerCall: Double) {
        let clock = ManualClock()
        var budget = RetryBudget()
        var rng = SeededGenerator(seed: 11)
        var answered = 0
        var attempts = 0
        let calls = 12_000
        for _ in 0..<calls {
            clock.advance(by: .milliseconds(5))
            budget.recordCall(now: clock.now())
            for attempt in 0..<4 {
                if attempt > 0, !budget.tryRetry(now: clock.now()) { break }
                attempts += 1
                if Double.random(in: 0..<1, using: &rng) >= failureRate {
                    answered += 1
                    break
                }
            }
        }
        #expect(Double(answered) / Double(calls) >= minSuccess)
        #expect(Double(attempts) / Double(calls) <= maxAttemptsPerCall)
    }

    @Test func retriesAreCappedAtAShareOfLiveTraffic() {
        let clock = ManualClock()
        var budget = RetryBudget(ratio: 0.2, minRetriesPerSecond: 0, window: .seconds(10))
        for _ in 0..<100 { budget.recordCall(now: clock.now()) }
        var granted = 0
        for _ in 0..<50 where budget.tryRetry(now: clock.now()) { granted += 1 }
        #expect(granted == 20)
    }

    @Test func theFloorLetsAQuietHostRetry() {
        let clock = ManualClock()
        var budget = RetryBudget(ratio: 0.2, minRetriesPerSecond: 1, window: .seconds(10))
        var granted = 0
        for _ in 0..<50 where budget.tryRetry(now: clock.now()) { granted += 1 }
        #expect(granted == 10)
    }

    @Test func oldTrafficLeavesTheWindow() {
        let clock = ManualClock()
        var budget = RetryBudget(ratio: 0.5, minRetriesPerSecond: 0, window: .seconds(10))
        for _ in 0..<10 { budget.recordCall(now: clock.now()) }
        for _ in 0..<5 {
            let granted = budget.tryRetry(now: clock.now())
            #expect(granted)
        }
        let r2 = budget.tryRetry(now: clock.now())
        #expect(!r2)
        clock.advance(by: .seconds(11))
        let r3 = budget.tryRetry(now: clock.now())
        #expect(!r3, "no traffic in the window: no allowance")
        for _ in 0..<2 { budget.recordCall(now: clock.now()) }
        let r4 = budget.tryRetry(now: clock.now())
        #expect(r4)
        let r5 = budget.tryRetry(now: clock.now())
        #expect(!r5)
    }
}
