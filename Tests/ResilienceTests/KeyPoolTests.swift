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
        #expect(places == [.held(index: 0, at: start + .milliseconds(100)),
                           .held(index: 0, at: start + .milliseconds(200)),
                           .held(index: 0, at: start + .milliseconds(300))])
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

    // MARK: Cluster leases

    static let cluster = KeyPool.Limits(rpm: 6000, tpm: 600_000, scope: .cluster)  // leases of 10 requests

    /// A cluster key holds nothing until the store grants a lease: the first call finds it short and asks for
    /// one (once, however many calls wait), takes from it without asking again, and asks again when it runs out.
    @Test func clusterKeyTakesFromItsLease() {
        let clock = ManualClock()
        let now = clock.now()
        var pool = KeyPool(keyCount: 1, limits: Self.cluster)
        #expect(pool.acquire(tokens: 100, now: now) == .wait(until: now + ClusterShare.poll))
        let due = pool.dueRefills(now: now)
        #expect(due.count == 1)
        #expect(due.first?.refill.need == .init(requests: 1, tokens: 100))
        #expect(due.first?.refill.want == .init(requests: 10, tokens: 1000))
        _ = pool.acquire(tokens: 100, now: now)
        #expect(pool.dueRefills(now: now).isEmpty)  // one request out per key
        pool.leaseGranted(index: 0, requests: 2, tokens: 250, wait: .zero, now: now)
        #expect(pool.acquire(tokens: 100, now: now) == .key(index: 0, tokens: 100))
        #expect(pool.acquire(tokens: 100, now: now) == .key(index: 0, tokens: 100))
        #expect(pool.leases.first?.requests == 0 && pool.leases.first?.tokens == 50)
        #expect(pool.acquire(tokens: 100, now: now) == .wait(until: now + ClusterShare.poll))
        #expect(pool.dueRefills(now: now).first?.refill.need == .init(requests: 1, tokens: 50))
    }

    /// The store said the need does not fit for 50 ms: a waiting call looks again then, holding nothing, and no
    /// lease request goes out before.
    @Test func clusterWaitComesFromTheStore() {
        let clock = ManualClock()
        let now = clock.now()
        var pool = KeyPool(keyCount: 1, limits: Self.cluster)
        _ = pool.acquire(tokens: 10, now: now)
        _ = pool.dueRefills(now: now)
        pool.leaseGranted(index: 0, requests: 0, tokens: 0, wait: .milliseconds(50), now: now)
        #expect(pool.reserve(tokens: 10, now: now, notAfter: now + .seconds(1)) == .lookAgain(at: now + .milliseconds(50)))
        #expect(pool.reserve(tokens: 10, now: now, notAfter: now + .milliseconds(20)) == nil)
        #expect(pool.dueRefills(now: now + .milliseconds(49)).isEmpty)
        let due = pool.dueRefills(now: now + .milliseconds(50))
        // The call could wait until now + 1 s: the store may grant it a slot up to then.
        #expect(due.count == 1 && due.first?.refill.maxWait == .milliseconds(950))
    }

    /// The store granted the next slot, 80 ms ahead: a call holds its place for then (firm), and a second one
    /// finds the lease short again.
    @Test func aLaterSlotIsAPlace() {
        let clock = ManualClock()
        let now = clock.now()
        var pool = KeyPool(keyCount: 1, limits: Self.cluster)
        _ = pool.reserve(tokens: 10, now: now, notAfter: now + .seconds(2))
        _ = pool.dueRefills(now: now)
        pool.leaseGranted(index: 0, requests: 1, tokens: 10, wait: .milliseconds(80), now: now)
        #expect(pool.acquire(tokens: 10, now: now) == .wait(until: now + .milliseconds(80)))
        #expect(pool.reserve(tokens: 10, now: now, notAfter: now + .seconds(2)) == .held(index: 0, at: now + .milliseconds(80)))
        #expect(pool.reserve(tokens: 10, now: now, notAfter: now + .seconds(2)) == .lookAgain(at: now + ClusterShare.poll))
    }

    /// An answer that used fewer tokens than reserved leaves the rest in the lease (the store was paid for
    /// them); one that used more owes the difference, charged with the next lease request.
    @Test func clusterSettlementCorrectsTheLease() {
        let clock = ManualClock()
        let now = clock.now()
        var pool = KeyPool(keyCount: 1, limits: Self.cluster)
        _ = pool.acquire(tokens: 100, now: now)
        _ = pool.dueRefills(now: now)
        pool.leaseGranted(index: 0, requests: 2, tokens: 200, wait: .zero, now: now)
        _ = pool.acquire(tokens: 100, now: now)
        pool.settle(index: 0, reservedTokens: 100, actualTokens: 40, now: now)
        #expect(pool.leases.first?.tokens == 160)
        _ = pool.acquire(tokens: 100, now: now)
        pool.settle(index: 0, reservedTokens: 100, actualTokens: 130, now: now)
        _ = pool.acquire(tokens: 100, now: now)  // no requests left: short
        #expect(pool.dueRefills(now: now).first?.refill.debtTokens == 30)
    }

    /// With the store unreachable the key paces at its share of the cluster limit, at firm times (a place in
    /// the queue is held again); when the store is back, leases again.
    @Test func clusterFallsBackToALocalShare() {
        let clock = ManualClock()
        let now = clock.now()
        var pool = KeyPool(keyCount: 1, limits: KeyPool.Limits(rpm: 600, burstSeconds: 1, scope: .cluster))
        pool.fallBack(share: 0.5, now: now)  // 300/min, a burst of 5
        for _ in 0..<5 { #expect(pool.acquire(tokens: 1, now: now) == .key(index: 0, tokens: 1)) }
        #expect(pool.reserve(tokens: 1, now: now, notAfter: now + .seconds(1)) == .held(index: 0, at: now + .milliseconds(200)))
        #expect(pool.dueRefills(now: now).isEmpty)
        pool.rejoin()
        #expect(pool.acquire(tokens: 1, now: now + .seconds(10)) == .wait(until: now + .seconds(10) + ClusterShare.poll))
        #expect(pool.dueRefills(now: now + .seconds(10)).count == 1)
    }

    /// Losing the store with a lease in hand and a place granted for later: both still go out, and the local share
    /// counts them as sent then. Its burst of 5 at once is 3 from the lease, 1 ahead and 1 more; then its rate.
    @Test func whatIsHeldFromTheStoreCountsAgainstTheLocalShare() {
        let clock = ManualClock()
        let now = clock.now()
        var pool = KeyPool(keyCount: 1, limits: KeyPool.Limits(rpm: 600, burstSeconds: 1, scope: .cluster))
        _ = pool.reserve(tokens: 1, now: now, notAfter: now + .seconds(2))
        _ = pool.dueRefills(now: now)
        pool.leaseGranted(index: 0, requests: 1, tokens: 0, wait: .milliseconds(80), now: now)
        #expect(pool.reserve(tokens: 1, now: now, notAfter: now + .seconds(2)) == .held(index: 0, at: now + .milliseconds(80)))
        #expect(pool.reserve(tokens: 1, now: now, notAfter: now + .seconds(2)) == .lookAgain(at: now + ClusterShare.poll))
        _ = pool.dueRefills(now: now)
        pool.leaseGranted(index: 0, requests: 3, tokens: 0, wait: .zero, now: now)
        let lost = now + .milliseconds(10)
        pool.fallBack(share: 0.5, now: lost)  // 300/min (one per 200 ms), a burst of 5
        for _ in 0..<4 { #expect(pool.acquire(tokens: 1, now: lost) == .key(index: 0, tokens: 1)) }
        #expect(pool.acquire(tokens: 1, now: lost) == .wait(until: lost + .milliseconds(200)))
    }

    /// A lease no call used since `idleSince` is handed back whole (to return to the store); one in use stays.
    @Test func idleLeasesGoBack() {
        let clock = ManualClock()
        let now = clock.now()
        var pool = KeyPool(keyCount: 1, limits: Self.cluster)
        _ = pool.acquire(tokens: 100, now: now)
        _ = pool.dueRefills(now: now)
        pool.leaseGranted(index: 0, requests: 10, tokens: 1000, wait: .zero, now: now)
        _ = pool.acquire(tokens: 100, now: now + .seconds(1))
        #expect(pool.takeIdleLeases(idleSince: now + .seconds(1)).isEmpty)
        let back = pool.takeIdleLeases(idleSince: now + .seconds(3))
        #expect(back.count == 1 && back[0].requests == 9 && back[0].tokens == 900)
        #expect(pool.leases.first?.requests == 0)
    }
}
