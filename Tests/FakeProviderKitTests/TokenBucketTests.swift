@testable import FakeProviderKit
import Testing

/// The bucket arithmetic in virtual time: no clock, no server.
@Suite struct TokenBucketTests {
    /// 600 a minute holding a second's worth: 10 requests at once, then one every 100 ms.
    let tenPerSecond = TokenBucketLimits(requestsPerMinute: 600, burstSeconds: 1)

    private func refused(_ quantity: TokenBucket.Quantity, wait: Duration?) -> TokenBucket.Decision {
        .refused(TokenBucket.Refusal(quantity: quantity, wait: wait))
    }

    @Test func startsFull() {
        var bucket = TokenBucket(limits: tenPerSecond, now: .zero)
        #expect(bucket.requests?.size == 10)
        #expect(bucket.requests?.remaining == 10)
        #expect(bucket.requests?.untilFull == .zero)
        #expect(bucket.tokens == nil, "tokens are not limited")
        for _ in 0..<10 {
            #expect(bucket.admit(cost: 1_000_000, now: .zero) == .admitted)
        }
        #expect(bucket.requests?.remaining == 0)
        #expect(bucket.admit(cost: 0, now: .zero) == refused(.requests, wait: .milliseconds(100)))
    }

    @Test func refillsAtTheRatePerSecond() {
        var bucket = TokenBucket(limits: tenPerSecond, now: .zero)
        for _ in 0..<10 {
            _ = bucket.admit(cost: 0, now: .zero)
        }
        #expect(bucket.admit(cost: 0, now: .milliseconds(40)) == refused(.requests, wait: .milliseconds(60)))
        let almost = Duration.milliseconds(100) - .nanoseconds(1)
        #expect(bucket.admit(cost: 0, now: almost) == refused(.requests, wait: .nanoseconds(1)))
        #expect(bucket.admit(cost: 0, now: .milliseconds(100)) == .admitted)
        #expect(bucket.admit(cost: 0, now: .milliseconds(100)) == refused(.requests, wait: .milliseconds(100)))
        // 250 ms later 2.5 requests have flowed in: two fit, the third waits for the missing half.
        #expect(bucket.admit(cost: 0, now: .milliseconds(350)) == .admitted)
        #expect(bucket.admit(cost: 0, now: .milliseconds(350)) == .admitted)
        #expect(bucket.admit(cost: 0, now: .milliseconds(350)) == refused(.requests, wait: .milliseconds(50)))
    }

    @Test func refillStopsAtCapacity() {
        var bucket = TokenBucket(limits: tenPerSecond, now: .zero)
        for _ in 0..<3 {
            _ = bucket.admit(cost: 0, now: .zero)
        }
        #expect(bucket.requests?.untilFull == .milliseconds(300))
        _ = bucket.admit(cost: 0, now: .seconds(3600))
        #expect(bucket.requests?.remaining == 9, "an idle hour refills to 10, not 60,000; then one is taken")
        for _ in 0..<9 {
            #expect(bucket.admit(cost: 0, now: .seconds(3600)) == .admitted)
        }
        #expect(bucket.admit(cost: 0, now: .seconds(3600)) == refused(.requests, wait: .milliseconds(100)))
    }

    @Test func defaultBurstHoldsAMinute() {
        let limits = TokenBucketLimits(requestsPerMinute: 90, tokensPerMinute: 40_000)
        let bucket = TokenBucket(limits: limits, now: .zero)
        #expect(bucket.requests?.size == 90)
        #expect(bucket.tokens?.size == 40_000)
    }

    @Test func capacityIsAtLeastOne() {
        // 30 a minute over one second would be half a request.
        var bucket = TokenBucket(limits: TokenBucketLimits(requestsPerMinute: 30, burstSeconds: 1), now: .zero)
        #expect(bucket.requests?.size == 1)
        #expect(bucket.admit(cost: 0, now: .zero) == .admitted)
        #expect(bucket.admit(cost: 0, now: .zero) == refused(.requests, wait: .seconds(2)))
        let tokens = TokenBucket(limits: TokenBucketLimits(tokensPerMinute: 1, burstSeconds: 1), now: .zero)
        #expect(tokens.tokens?.size == 1)
    }

    @Test func tokenCostIsTakenWithTheRequest() {
        // 6,000 tokens a minute: 100 a second, a bucket of 6,000.
        var bucket = TokenBucket(limits: TokenBucketLimits(tokensPerMinute: 6000), now: .zero)
        #expect(bucket.admit(cost: 4000, now: .zero) == .admitted)
        #expect(bucket.tokens?.remaining == 2000)
        #expect(bucket.tokens?.untilFull == .seconds(40))
        #expect(bucket.admit(cost: 4000, now: .zero) == refused(.tokens, wait: .seconds(20)))
        #expect(bucket.tokens?.remaining == 2000, "a refused request takes nothing")
        #expect(bucket.admit(cost: 2000, now: .zero) == .admitted)
        #expect(bucket.admit(cost: 0, now: .zero) == .admitted, "a request without tokens needs none")
        #expect(bucket.admit(cost: 1, now: .zero) == refused(.tokens, wait: .milliseconds(10)))
    }

    @Test func aRequestNeedsBothBuckets() {
        // One request and 10 tokens a second, each bucket holding a second's worth.
        var bucket = TokenBucket(
            limits: TokenBucketLimits(requestsPerMinute: 60, tokensPerMinute: 600, burstSeconds: 1), now: .zero
        )
        #expect(bucket.admit(cost: 5, now: .zero) == .admitted)
        #expect(bucket.requests?.remaining == 0)
        #expect(bucket.tokens?.remaining == 5)
        // Short of both: the request bucket takes 1 s, the token bucket 0.5 s; the longer wait is the answer.
        #expect(bucket.admit(cost: 10, now: .zero) == refused(.requests, wait: .seconds(1)))
        #expect(bucket.tokens?.remaining == 5, "refused by one bucket, nothing is taken from the other")
        #expect(bucket.admit(cost: 10, now: .seconds(1)) == .admitted)

        // Two requests a second but still 10 tokens: the second large request waits for the tokens alone.
        var wide = TokenBucket(
            limits: TokenBucketLimits(requestsPerMinute: 120, tokensPerMinute: 600, burstSeconds: 1), now: .zero
        )
        #expect(wide.admit(cost: 10, now: .zero) == .admitted)
        #expect(wide.admit(cost: 10, now: .zero) == refused(.tokens, wait: .seconds(1)))
        #expect(wide.requests?.remaining == 1)
        #expect(wide.admit(cost: 10, now: .seconds(1)) == .admitted)
    }

    @Test func tokensThatNeverFitGetNoWait() {
        var bucket = TokenBucket(
            limits: TokenBucketLimits(requestsPerMinute: 600, tokensPerMinute: 600, burstSeconds: 1), now: .zero
        )
        #expect(bucket.tokens?.size == 10)
        #expect(bucket.admit(cost: 11, now: .zero) == refused(.tokens, wait: nil), "a full bucket is not enough")
        #expect(bucket.requests?.remaining == 10)
        #expect(bucket.admit(cost: 10, now: .zero) == .admitted)
    }

    @Test func waitIsExactForUnevenRates() {
        // 7 a minute over a second is 0.117 of a request, so the bucket holds 1 and refills every 60/7 s.
        var bucket = TokenBucket(limits: TokenBucketLimits(requestsPerMinute: 7, burstSeconds: 1), now: .zero)
        #expect(bucket.admit(cost: 0, now: .zero) == .admitted)
        let wait = Duration.nanoseconds(8_571_428_572)
        #expect(bucket.admit(cost: 0, now: .seconds(1)) == refused(.requests, wait: wait - .seconds(1)))
        #expect(bucket.admit(cost: 0, now: wait - .nanoseconds(1)) == refused(.requests, wait: .nanoseconds(1)))
        #expect(bucket.admit(cost: 0, now: wait) == .admitted, "sent after exactly the wait named, it fits")
    }

    @Test func timeGoingBackChangesNothing() {
        var bucket = TokenBucket(limits: tenPerSecond, now: .seconds(10))
        for _ in 0..<10 {
            _ = bucket.admit(cost: 0, now: .seconds(10))
        }
        #expect(bucket.admit(cost: 0, now: .seconds(5)) == refused(.requests, wait: .milliseconds(100)))
        #expect(bucket.admit(cost: 0, now: .seconds(10) + .milliseconds(100)) == .admitted)
    }

    @Test func millisecondsRoundUp() {
        #expect(Duration.nanoseconds(1).millisecondsRoundedUp == 1)
        #expect(Duration.milliseconds(100).millisecondsRoundedUp == 100)
        #expect((Duration.milliseconds(100) + .nanoseconds(1)).millisecondsRoundedUp == 101)
        #expect(Duration.zero.millisecondsRoundedUp == 0)
    }
}
