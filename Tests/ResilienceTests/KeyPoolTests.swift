import Resilience
import Testing

@Suite struct KeyPoolTests {
    @Test func keysRotateRoundRobin() {
        let clock = ManualClock()
        var pool = KeyPool(keyCount: 3, limits: KeyPool.Limits())
        var used: [Int] = []
        for _ in 0..<6 {
            let g = pool.acquire(tokens: 10, now: clock.now())
            if case .key(let i, _) = g { used.append(i) }
        }
        #expect(used == [0, 1, 2, 0, 1, 2])
    }

    @Test func aRateLimitedKeyRestsWhileTheOthersServe() {
        let clock = ManualClock()
        var pool = KeyPool(keyCount: 2, limits: KeyPool.Limits())
        pool.rest(index: 0, until: clock.now() + .seconds(1))
        for _ in 0..<3 {
            let g = pool.acquire(tokens: 1, now: clock.now())
            #expect(g == .key(index: 1, tokens: 1))
        }
        pool.rest(index: 1, until: clock.now() + .seconds(2))
        let blocked = pool.acquire(tokens: 1, now: clock.now())
        #expect(blocked == .wait(until: clock.now() + .seconds(1)))
        clock.advance(by: .seconds(1))
        let back = pool.acquire(tokens: 1, now: clock.now())
        #expect(back == .key(index: 0, tokens: 1))
    }

    @Test func rpmPerKey() {
        let clock = ManualClock()
        var pool = KeyPool(keyCount: 1, limits: KeyPool.Limits(rpm: 2))
        let a = pool.acquire(tokens: 0, now: clock.now())
        let b = pool.acquire(tokens: 0, now: clock.now())
        let c = pool.acquire(tokens: 0, now: clock.now())
        #expect(a == .key(index: 0, tokens: 0) && b == .key(index: 0, tokens: 0))
        #expect(c == .wait(until: clock.now() + .seconds(30)))
    }

    @Test func tokensReservedUpFrontAndCorrectedFromUsage() {
        let clock = ManualClock()
        var pool = KeyPool(keyCount: 1, limits: KeyPool.Limits(tpm: 1000))
        let first = pool.acquire(tokens: 900, now: clock.now())
        #expect(first == .key(index: 0, tokens: 900))
        let second = pool.acquire(tokens: 300, now: clock.now())
        guard case .wait = second else {
            Issue.record("the token limit let a call through")
            return
        }
        pool.settle(index: 0, reservedTokens: 900, actualTokens: 100, now: clock.now())
        let third = pool.acquire(tokens: 300, now: clock.now())
        #expect(third == .key(index: 0, tokens: 300))
    }

    @Test func aFailedTokenReservationDoesNotSpendARequest() {
        let clock = ManualClock()
        var pool = KeyPool(keyCount: 1, limits: KeyPool.Limits(rpm: 1, tpm: 100))
        let tooBig = pool.acquire(tokens: 500, now: clock.now())
        guard case .wait = tooBig else {
            Issue.record("500 tokens admitted under a 100 TPM limit")
            return
        }
        let fits = pool.acquire(tokens: 50, now: clock.now())
        #expect(fits == .key(index: 0, tokens: 50))
    }

    @Test func headersSayingTheQuotaIsSpentRestTheKey() {
        let clock = ManualClock()
        var pool = KeyPool(keyCount: 2, limits: KeyPool.Limits())
        var info = RateLimitInfo()
        info.remainingRequests = 0
        info.resetRequests = .milliseconds(500)
        pool.learn(index: 0, from: info, now: clock.now())
        let g = pool.acquire(tokens: 1, now: clock.now())
        #expect(g == .key(index: 1, tokens: 1))
        let h = pool.acquire(tokens: 1, now: clock.now())
        #expect(h == .key(index: 1, tokens: 1), "key 0 rests until its reset")
        clock.advance(by: .milliseconds(500))
        let i = pool.acquire(tokens: 1, now: clock.now())
        #expect(i == .key(index: 0, tokens: 1))
    }
    /// A provider's `x-ratelimit-limit-requests: 600` (10/s) with 4 left and the bucket full in 0.6 s: the key
    /// learns a limiter that lets 4 calls through now, then one every 100 ms, as the provider refills.
    @Test func aLearnedLimitPacesCallsAsTheProviderRefills() {
        let clock = ManualClock()
        var pool = KeyPool(keyCount: 1, limits: KeyPool.Limits())
        var info = RateLimitInfo()
        info.limitRequests = 600
        info.remainingRequests = 4
        info.resetRequests = .milliseconds(600)
        pool.learn(index: 0, from: info, now: clock.now())
        for _ in 0..<4 { #expect(pool.acquire(tokens: 1, now: clock.now()) == .key(index: 0, tokens: 1)) }
        #expect(pool.acquire(tokens: 1, now: clock.now()) == .wait(until: clock.now() + .milliseconds(100)))
        clock.advance(by: .milliseconds(100))
        #expect(pool.acquire(tokens: 1, now: clock.now()) == .key(index: 0, tokens: 1))
        // The provider counts calls from elsewhere too: its lower figure wins.
        clock.advance(by: .milliseconds(500))
        info.remainingRequests = 0
        pool.learn(index: 0, from: info, now: clock.now())
        #expect(pool.acquire(tokens: 1, now: clock.now()) == .wait(until: clock.now() + .milliseconds(100)))
    }

    /// Waiting callers take places in a queue: each reservation is 100 ms after the last, and none is handed
    /// out past `notAfter`.
    @Test func reservationsQueueAtTheLimitsRate() {
        let clock = ManualClock()
        var pool = KeyPool(keyCount: 1, limits: KeyPool.Limits(rpm: 600))  // 10/s, burst 600
        var info = RateLimitInfo()
        info.limitRequests = 600
        info.remainingRequests = 0
        info.resetRequests = .milliseconds(200)  // the provider's bucket holds 2
        pool.learn(index: 0, from: info, now: clock.now())
        let start = clock.now()
        let places = (0..<3).compactMap { _ in pool.reserve(tokens: 1, now: start, notAfter: start + .seconds(1)) }
        #expect(places.map(\.at) == [start + .milliseconds(100), start + .milliseconds(200),
                                      start + .milliseconds(300)])
        #expect(pool.reserve(tokens: 1, now: start, notAfter: start + .milliseconds(350)) == nil)
        #expect(pool.earliest(tokens: 1, now: start) == start + .milliseconds(400))
    }

    /// Which 429s rest the whole key: only one that says nothing about the quota. One with a limit was learned;
    /// one with quota left is an overload signal for that call.
    @Test func onlyABare429RestsTheKey() {
        var bare = RateLimitInfo()
        bare.retryAfter = .seconds(1)
        #expect(KeyPool.shouldRest(after: bare))
        var spent = bare
        spent.remainingRequests = 0
        #expect(KeyPool.shouldRest(after: spent))
        var left = bare
        left.remainingRequests = 12
        #expect(!KeyPool.shouldRest(after: left))
        var limited = spent
        limited.limitRequests = 600
        #expect(!KeyPool.shouldRest(after: limited))
    }
}
