import FakeProviderKit
import Foundation
import Testing

/// The `token_bucket` personality key: decoding, defaults and the errors for limits that cannot be enforced.
@Suite struct TokenBucketPersonalityTests {
    private func personality(_ json: String) throws -> Personality {
        try Personality(jsonData: Data(json.utf8))
    }

    /// The reason `Personality(jsonData:)` gives for `json`, or nil when it decodes.
    private func reason(_ json: String) -> String? {
        do {
            _ = try personality(json)
            return nil
        } catch {
            return String(describing: error)
        }
    }

    @Test func decodesEveryField() throws {
        let decoded = try personality("""
            {"token_bucket": {"requests_per_minute": 600, "tokens_per_minute": 90000, "burst_seconds": 1}}
            """)
        let expected = TokenBucketLimits(requestsPerMinute: 600, tokensPerMinute: 90_000, burstSeconds: 1)
        #expect(decoded.tokenBucket == expected)
    }

    @Test func burstDefaultsToAMinuteAndEachRateIsOptional() throws {
        let requests = try personality(#"{"token_bucket": {"requests_per_minute": 60}}"#)
        #expect(requests.tokenBucket == TokenBucketLimits(requestsPerMinute: 60, burstSeconds: 60))
        let tokens = try personality(#"{"token_bucket": {"tokens_per_minute": 1000, "burst_seconds": 0.5}}"#)
        #expect(tokens.tokenBucket == TokenBucketLimits(tokensPerMinute: 1000, burstSeconds: 0.5))
        #expect(try personality("{}").tokenBucket == nil)
    }

    @Test func roundTripsThroughJSON() throws {
        let original = Personality(
            name: "limited", tokenBucket: TokenBucketLimits(requestsPerMinute: 600, burstSeconds: 1)
        )
        let decoded = try Personality(jsonData: try JSONEncoder().encode(original))
        #expect(decoded == original)
        let informational = Personality.flaky()
        #expect(try Personality(jsonData: try JSONEncoder().encode(informational)) == informational)
    }

    @Test func needsAtLeastOneRate() {
        #expect(reason(#"{"token_bucket": {}}"#)?.contains("needs requests_per_minute, tokens_per_minute") == true)
        #expect(reason(#"{"token_bucket": {"burst_seconds": 1}}"#)?.contains("needs requests_per_minute") == true)
    }

    @Test func ratesMustBePositive() {
        #expect(
            reason(#"{"token_bucket": {"requests_per_minute": 0}}"#)
                == "invalid personality: token_bucket requests_per_minute must be positive, not 0"
        )
        #expect(
            reason(#"{"token_bucket": {"requests_per_minute": 10, "tokens_per_minute": -5}}"#)
                == "invalid personality: token_bucket tokens_per_minute must be positive, not -5"
        )
    }

    @Test func burstMustBeInRange() {
        for burst in ["0", "-1", "3601"] {
            let json = #"{"token_bucket": {"requests_per_minute": 10, "burst_seconds": "# + burst + "}}"
            #expect(reason(json)?.contains("burst_seconds must be more than 0 and at most 3600") == true, "\(burst)")
        }
        #expect(reason(#"{"token_bucket": {"requests_per_minute": 10, "burst_seconds": 3600}}"#) == nil)
    }

    @Test func unknownKeysAreRejected() {
        let message = reason(#"{"token_bucket": {"requests_per_min": 10}}"#)
        #expect(message?.contains("unknown key 'requests_per_min'") == true)
        #expect(message?.contains("requests_per_minute, tokens_per_minute, burst_seconds") == true)
        #expect(reason(#"{"token_bucket": 600}"#) != nil, "not an object")
    }

    @Test func cannotBeCombinedWithInformationalLimits() {
        let combined = "invalid personality: token_bucket cannot be combined with ratelimit_limit_requests or "
            + "ratelimit_limit_tokens: the bucket's rates are the limits"
        #expect(reason(#"{"token_bucket": {"requests_per_minute": 10}, "ratelimit_limit_requests": 10}"#) == combined)
        #expect(
            reason(#"{"ratelimit_limit_tokens": 2000000, "token_bucket": {"tokens_per_minute": 10}}"#) == combined,
            "even at the default value"
        )
        // In Swift, the informational limits are checked by `validate()`.
        let value = Personality(rateLimitTokens: 5, tokenBucket: TokenBucketLimits(tokensPerMinute: 10))
        #expect(throws: FakeProviderError.self) { try value.validate() }
        #expect(throws: Never.self) { try Personality(tokenBucket: TokenBucketLimits(tokensPerMinute: 10)).validate() }
    }

    @Test func startRefusesAnInvalidBucket() async {
        await #expect(throws: FakeProviderError.self) {
            _ = try await FakeProvider.start(personality: Personality(tokenBucket: TokenBucketLimits()))
        }
    }
}
