import Resilience
import Testing

@Suite struct RateLimitHeaderTests {
    /// 2015-10-21T07:28:00Z, the RFC 9110 example date.
    let wallNow = 1_445_412_480.0

    /// Names match in any ASCII case, and only whole: a longer or shorter name, or another header, is not read.
    @Test func namesMatchWholeInAnyCase() {
        let info = RateLimitHeaders.parse([
            ("X-RateLimit-Remaining-Requests", " 7 "), ("ANTHROPIC-RATELIMIT-TOKENS-LIMIT", "900"),
            ("x-ratelimit-limit-requestsX", "1"), ("x-ratelimit-limit-request", "2"), ("x-request-id", "3"),
            ("Retry-After-Ms", "250"), ("", "4"),
        ], wallNow: wallNow)
        #expect(info.remainingRequests == 7)
        #expect(info.limitTokens == 900)
        #expect(info.limitRequests == nil)
        #expect(info.retryAfter == .milliseconds(250))
    }

    @Test func retryAfterDeltaSeconds() {
        let info = RateLimitHeaders.parse([("Retry-After", "1")], wallNow: wallNow)
        #expect(info.retryAfter == .seconds(1))
        #expect(info.suggestedWait == .seconds(1))
    }

    @Test func retryAfterHTTPDate() {
        let info = RateLimitHeaders.parse([("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")], wallNow: wallNow)
        #expect(info.retryAfter == .seconds(30))
        let past = RateLimitHeaders.parse([("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")], wallNow: wallNow)
        #expect(past.retryAfter == .zero)
    }

    @Test func retryAfterMsWinsOverRetryAfter() {
        let info = RateLimitHeaders.parse([("retry-after", "2"), ("retry-after-ms", "250")], wallNow: wallNow)
        #expect(info.retryAfter == .milliseconds(250))
    }

    @Test func openAIHeaders() {
        let info = RateLimitHeaders.parse([
            ("x-ratelimit-limit-requests", "10000"), ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"), ("x-ratelimit-remaining-tokens", "1999994"),
            ("x-ratelimit-reset-tokens", "20ms"),
        ], wallNow: wallNow)
        #expect(info.limitRequests == 10000)
        #expect(info.remainingRequests == 0)
        #expect(info.resetRequests == .seconds(360))
        #expect(info.resetTokens == .milliseconds(20))
        #expect(info.suggestedWait == .seconds(360), "exhausted request quota: wait for its reset")
    }

    @Test func anthropicHeaders() {
        let info = RateLimitHeaders.parse([
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2015-10-21T07:28:05Z"),
            ("anthropic-ratelimit-tokens-remaining", "5000"),
            ("anthropic-ratelimit-tokens-reset", "2015-10-21T09:28:10+02:00"),
        ], wallNow: wallNow)
        #expect(info.resetRequests == .seconds(5))
        #expect(info.resetTokens == .seconds(10))
        #expect(info.suggestedWait == .seconds(5))
    }

    @Test(arguments: [
        ("1s", Duration.seconds(1)), ("20ms", .milliseconds(20)), ("6m0s", .seconds(360)), ("1h2m3.5s", .seconds(3723.5)),
        ("850us", .microseconds(850)), ("850µs", .microseconds(850)), ("0", .zero), ("1.5s", .milliseconds(1500)),
    ])
    func goDurations(text: String, expected: Duration) {
        #expect(GoDuration.parse(text) == expected)
    }

    @Test(arguments: ["", "s", "5", "5x", "m5", "٣s"])
    func badGoDurations(text: String) {
        #expect(GoDuration.parse(text) == nil)
    }

    @Test func rfc3339AndHTTPDateAgree() {
        #expect(RFC3339.parse("2015-10-21T07:28:00Z") == wallNow)
        #expect(RFC3339.parse("2015-10-21T07:28:00.5Z") == wallNow + 0.5)
        #expect(RFC3339.parse("1970-01-01T00:00:00Z") == 0)
        #expect(HTTPDate.parse("Wed, 21 Oct 2015 07:28:00 GMT") == wallNow)
        #expect(RFC3339.parse("2015-10-21 07:28") == nil)
        #expect(HTTPDate.parse("yesterday") == nil)
    }
}
