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
}
