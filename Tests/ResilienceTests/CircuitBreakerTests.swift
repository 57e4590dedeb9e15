import Resilience
import Testing

@Suite struct CircuitBreakerTests {
    let policy = BreakerPolicy(failureThreshold: 3, rollingWindow: .seconds(10), failureRateThreshold: 0.5,
                               minimumCalls: 10, timeoutPeriod: .seconds(5), halfOpenMaxCalls: 1,
                               successThreshold: 2)

    /// One call that failed at this target: its attempt, then how the call left.
    func fail(_ b: inout CircuitBreaker, _ clock: ManualClock, isProbe: Bool = false) -> [BreakerTransition] {
        let t = b.record(failed: true, isProbe: isProbe, now: clock.now())
        return isProbe ? t : t + b.recordCall(failed: true, now: clock.now())
    }

    func succeed(_ b: inout CircuitBreaker, _ clock: ManualClock, isProbe: Bool = false) -> [BreakerTransition] {
        let t = b.record(failed: false, isProbe: isProbe, now: clock.now())
        return isProbe ? t : t + b.recordCall(failed: false, now: clock.now())
    }

    @Test func closedOpensByCount() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)
        #expect(fail(&b, clock).isEmpty)
        #expect(fail(&b, clock).isEmpty)
        #expect(b.stateName == .closed)
        let t = fail(&b, clock)
        #expect(t.map(\.to) == [.open])
        #expect(t.first?.reason.contains("3 calls in a row failed") == true)
        let r1 = b.acquire(now: clock.now())
        #expect(r1.0 == .rejected(retryAt: clock.now() + .seconds(5)))
    }

    @Test func aSuccessfulCallBreaksTheStreak() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)
        _ = fail(&b, clock)
        _ = fail(&b, clock)
        _ = succeed(&b, clock)
        _ = fail(&b, clock)
        _ = fail(&b, clock)
        #expect(b.stateName == .closed, "2 failed calls since the last success, threshold 3")
        #expect(fail(&b, clock).map(\.to) == [.open])
    }

    /// A call whose retries succeed is a successful call: a flaky provider builds no streak, however many of its
    /// attempts fail.
    @Test func failedAttemptsOfACallThatSucceededDoNotBuildAStreak() {
        let clock = ManualClock()
        var p = policy
        p.minimumCalls = 100
        var b = CircuitBreaker(policy: p)
        for _ in 0..<5 {
            for _ in 0..<3 { #expect(b.record(failed: true, isProbe: false, now: clock.now()).isEmpty) }
            #expect(succeed(&b, clock).isEmpty)
        }
        #expect(b.stateName == .closed, "15 of 20 attempts failed, but below minimum_calls and every call succeeded")
    }

    /// At volume (the window holds minimum_calls attempts) the failure rate decides alone: any number of failed
    /// calls in a row do not open the breaker while the rate stays under the threshold.
    @Test func neverByCountAloneAtHighVolume() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)  // minimum_calls 10, threshold 3 calls, rate 50%
        for _ in 0..<30 { _ = succeed(&b, clock) }
        for _ in 0..<8 { #expect(fail(&b, clock).isEmpty) }
        #expect(b.stateName == .closed, "8 failed calls in a row, but 8 of 38 attempts (21%) at volume")
        var transitions: [BreakerTransition] = []
        for _ in 0..<22 { transitions += fail(&b, clock) }
        #expect(b.stateName == .open, "30 of 60 attempts failed: 50%")
        #expect(transitions.count == 1)
        #expect(transitions.first?.reason.contains("failure rate 50% over 60 attempts") == true)
    }

    /// A quiet provider: calls minutes apart that all fail still open it, as long as each comes within the
    /// rolling window of the one before.
    @Test func aQuietDeadProviderOpensByCount() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)  // rolling window 10 s
        for _ in 0..<2 {
            #expect(fail(&b, clock).isEmpty)
            clock.advance(by: .seconds(9))
        }
        #expect(fail(&b, clock).map(\.to) == [.open])
    }

    @Test func aDisabledBreakerNeverOpens() {
        let clock = ManualClock()
        var p = policy
        p.enabled = false
        var b = CircuitBreaker(policy: p)
        for _ in 0..<1000 { #expect(fail(&b, clock).isEmpty) }
        #expect(b.acquire(now: clock.now()).0 == .allowed)
        #expect(b.wouldAllow(now: clock.now()))
    }

    @Test func wouldAllowTakesNoProbeSlot() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)
        for _ in 0..<3 { _ = fail(&b, clock) }
        #expect(!b.wouldAllow(now: clock.now()))
        clock.advance(by: .seconds(5))
        #expect(b.wouldAllow(now: clock.now()))
        #expect(b.wouldAllow(now: clock.now()))
        #expect(b.acquire(now: clock.now()).0 == .probe)
        #expect(!b.wouldAllow(now: clock.now()), "the one probe slot is taken")
    }

    /// The defaults at load: a provider failing 10% or 30% of attempts never opens its breaker, one failing 60%
    /// opens it, in the same virtual-time run of 500 attempts per second for a minute.
    @Test(arguments: [(0.1, false), (0.3, false), (0.6, true)])
    func defaultsAtVolume(failureRate: Double, opens: Bool) {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: BreakerPolicy())
        var rng = SeededGenerator(seed: 7)
        var opened = false
        for _ in 0..<30_000 {
            clock.advance(by: .milliseconds(2))
            guard b.acquire(now: clock.now()).0 == .allowed else { continue }
            // A call's attempts until one succeeds, at most 4 (retry_count 3).
            var failed = true
            for _ in 0..<4 {
                failed = Double.random(in: 0..<1, using: &rng) < failureRate
                opened = opened || !b.record(failed: failed, isProbe: false, now: clock.now()).isEmpty
                if !failed { break }
            }
            opened = opened || !b.recordCall(failed: failed, now: clock.now()).isEmpty
        }
        #expect(opened == opens)
    }

    @Test func failuresOutsideTheWindowDoNotCount() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)
        _ = fail(&b, clock)
        _ = fail(&b, clock)
        clock.advance(by: .seconds(11))
        #expect(fail(&b, clock).isEmpty)
        #expect(b.stateName == .closed)
    }

    @Test func closedOpensByRateOnlyAfterMinimumCalls() {
        let clock = ManualClock()
        var p = policy
        p.failureThreshold = 100
        var b = CircuitBreaker(policy: p)
        // 2 of 4 failed: 50%, but below the minimum of 10 calls.
        for i in 0..<4 { _ = b.record(failed: i % 2 == 0, isProbe: false, now: clock.now()) }
        #expect(b.stateName == .closed, "2 of 4 failed, but fewer than 10 calls")
        for _ in 0..<5 { _ = succeed(&b, clock) }
        #expect(b.stateName == .closed, "2 of 9 failed")
        var transitions: [BreakerTransition] = []
        for _ in 0..<3 { transitions += fail(&b, clock) }
        #expect(b.stateName == .closed, "5 of 12 failed: 42%")
        for _ in 0..<2 { transitions += fail(&b, clock) }
        #expect(b.stateName == .open, "7 of 14 failed: 50%")
        #expect(transitions.count == 1)
        #expect(transitions[0].reason.contains("failure rate"))
        #expect(b.failureRate(now: clock.now()) >= 0.5)
    }

    @Test func openBecomesHalfOpenOnlyAfterTheTimeout() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)
        for _ in 0..<3 { _ = fail(&b, clock) }
        clock.advance(by: .milliseconds(4999))
        let r2 = b.acquire(now: clock.now())
        #expect(r2.0 != .probe)
        #expect(b.stateName == .open)
        clock.advance(by: .milliseconds(1))
        let (permit, t) = b.acquire(now: clock.now())
        #expect(permit == .probe)
        #expect(t.map(\.to) == [.halfOpen])
        #expect(b.stateName == .halfOpen)
    }

    @Test func halfOpenLimitsProbes() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)
        for _ in 0..<3 { _ = fail(&b, clock) }
        clock.advance(by: .seconds(5))
        let r3 = b.acquire(now: clock.now())
        #expect(r3.0 == .probe)
        let r4 = b.acquire(now: clock.now())
        guard case .rejected = r4.0 else {
            Issue.record("a second probe was let through while one is in flight")
            return
        }
        var two = policy
        two.halfOpenMaxCalls = 2
        var b2 = CircuitBreaker(policy: two)
        for _ in 0..<3 { _ = fail(&b2, clock) }
        clock.advance(by: .seconds(5))
        let r5 = b2.acquire(now: clock.now())
        #expect(r5.0 == .probe)
        let r6 = b2.acquire(now: clock.now())
        #expect(r6.0 == .probe)
        let r7 = b2.acquire(now: clock.now())
        guard case .rejected = r7.0 else {
            Issue.record("a third probe was let through")
            return
        }
    }

    @Test func halfOpenClosesAfterSuccessThreshold() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)
        for _ in 0..<3 { _ = fail(&b, clock) }
        clock.advance(by: .seconds(5))
        let r8 = b.acquire(now: clock.now())
        #expect(r8.0 == .probe)
        #expect(succeed(&b, clock, isProbe: true).isEmpty)
        #expect(b.stateName == .halfOpen)
        let r9 = b.acquire(now: clock.now())
        #expect(r9.0 == .probe)
        let t = succeed(&b, clock, isProbe: true)
        #expect(t.map(\.to) == [.closed])
        let r10 = b.acquire(now: clock.now())
        #expect(r10.0 == .allowed)
        // Counts start afresh after closing.
        _ = fail(&b, clock)
        _ = fail(&b, clock)
        #expect(b.stateName == .closed)
    }

    @Test func halfOpenReopensOnAProbeFailure() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)
        for _ in 0..<3 { _ = fail(&b, clock) }
        clock.advance(by: .seconds(5))
        let r11 = b.acquire(now: clock.now())
        #expect(r11.0 == .probe)
        let t = fail(&b, clock, isProbe: true)
        #expect(t.map(\.to) == [.open])
        #expect(b.reopensAt == clock.now() + .seconds(5))
    }

    @Test func slowCallsCountAsFailures() {
        let clock = ManualClock()
        var p = policy
        p.slowCallThreshold = .seconds(2)
        var b = CircuitBreaker(policy: p)
        func slowCall() -> [BreakerTransition] {
            let t = b.record(failed: false, duration: .seconds(3), isProbe: false, now: clock.now())
            let counted = b.countsAsFailure(failed: false, duration: .seconds(3))
            return t + b.recordCall(failed: counted, now: clock.now())
        }
        #expect(!b.countsAsFailure(failed: false, duration: .seconds(1)))
        for _ in 0..<2 { #expect(slowCall().isEmpty) }
        #expect(b.stateName == .closed)
        #expect(slowCall().map(\.to) == [.open])
    }

    @Test func slowCallsFollowTheRateRuleAtVolume() {
        let clock = ManualClock()
        var p = policy
        p.slowCallThreshold = .seconds(2)
        p.failureThreshold = 1000
        var b = CircuitBreaker(policy: p)
        for _ in 0..<5 { _ = b.record(failed: false, duration: .seconds(1), isProbe: false, now: clock.now()) }
        for _ in 0..<4 { _ = b.record(failed: false, duration: .seconds(3), isProbe: false, now: clock.now()) }
        #expect(b.stateName == .closed, "4 slow of 9: below minimum_calls")
        let t = b.record(failed: false, duration: .seconds(3), isProbe: false, now: clock.now())
        #expect(t.map(\.to) == [.open], "5 slow of 10: 50%")
        #expect(t.first?.reason.contains("failure rate") == true)
    }

    @Test func adminResetCloses() {
        let clock = ManualClock()
        var b = CircuitBreaker(policy: policy)
        for _ in 0..<3 { _ = fail(&b, clock) }
        let r12 = b.reset(now: clock.now())
        #expect(r12.map(\.to) == [.closed])
        let r13 = b.acquire(now: clock.now())
        #expect(r13.0 == .allowed)
    }
}

/// A small deterministic generator (SplitMix64) so statistical runs give the same result every time.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct GCRATests {
    @Test func steadyRateWithoutBurst() {
        let clock = ManualClock()
        var l = GCRALimiter(rate: 60, per: .seconds(60), burst: 1)
        let r14 = l.reserve(now: clock.now())
        #expect(r14 == .allowed)
        let r15 = l.reserve(now: clock.now())
        #expect(r15 == .wait(until: clock.now() + .seconds(1)))
        clock.advance(by: .milliseconds(999))
        let r16 = l.reserve(now: clock.now())
        #expect(r16 != .allowed)
        clock.advance(by: .milliseconds(1))
        let r17 = l.reserve(now: clock.now())
        #expect(r17 == .allowed)
    }

    @Test func burstThenRate() {
        let clock = ManualClock()
        var l = GCRALimiter(rate: 10, per: .seconds(1), burst: 5)
        for _ in 0..<5 {
            let allowed = l.reserve(now: clock.now())
            #expect(allowed == .allowed)
        }
        let r19 = l.reserve(now: clock.now())
        #expect(r19 == .wait(until: clock.now() + .milliseconds(100)))
        clock.advance(by: .milliseconds(100))
        let r20 = l.reserve(now: clock.now())
        #expect(r20 == .allowed)
    }

    @Test func tokenCostsAndCorrections() {
        let clock = ManualClock()
        var tpm = GCRALimiter(rate: 1000, per: .seconds(60))
        let r21 = tpm.reserve(cost: 800, now: clock.now())
        #expect(r21 == .allowed)
        let r22 = tpm.reserve(cost: 300, now: clock.now())
        #expect(r22 != .allowed)
        // The call used 200 tokens, not 800: give 600 back.
        tpm.adjust(by: -600, now: clock.now())
        let r23 = tpm.reserve(cost: 300, now: clock.now())
        #expect(r23 == .allowed)
        let r24 = tpm.reserve(cost: 600, now: clock.now())
        #expect(r24 != .allowed)
    }

    @Test func providerSaidWait() {
        let clock = ManualClock()
        var l = GCRALimiter(rate: 100, per: .seconds(1))
        l.block(until: clock.now() + .seconds(2))
        let r25 = l.reserve(now: clock.now())
        #expect(r25 != .allowed)
        clock.advance(by: .seconds(2))
        let r26 = l.reserve(now: clock.now())
        #expect(r26 == .allowed)
    }
}
