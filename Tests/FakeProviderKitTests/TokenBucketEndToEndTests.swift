import FakeProviderKit
import Foundation
import Testing

/// The `token_bucket` personality on a real fake on loopback, spoken to over plain HTTP/1.1.
@Suite struct TokenBucketEndToEndTests {
    /// Starts a fake, runs `body` against it and shuts it down, whether `body` throws or not.
    private func withFake(
        _ limits: TokenBucketLimits, down: Bool = false, _ body: (FakeProvider) async throws -> Void
    ) async throws {
        let fake = try await FakeProvider.start(personality: Personality(down: down, tokenBucket: limits))
        do {
            try await body(fake)
        } catch {
            try await fake.shutdown()
            throw error
        }
        try await fake.shutdown()
    }

    private static func openAI(key: String, maxTokens: Int? = nil) -> HTTPRequest {
        let cap = maxTokens.map { #", "max_tokens": \#($0)"# } ?? ""
        return HTTPRequest(
            path: "/v1/chat/completions", headers: [("authorization", "Bearer \(key)")],
            body: #"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]\#(cap)}"#
        )
    }

    private static func error(_ reply: HTTPReply) -> [String: Any]? {
        reply.json?["error"] as? [String: Any]
    }

    /// Requests with `key` until one is admitted, waiting as each 429 says; nil if none is within 10 s.
    private static func untilAdmitted(_ request: HTTPRequest, port: Int) async throws -> HTTPReply? {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let reply = try LoopbackHTTP.send(request, port: port)
            guard reply.status == 429 else { return reply }
            try await Task.sleep(for: .milliseconds(min(max(reply.int("retry-after-ms") ?? 20, 1), 1000)))
        }
        return nil
    }

    @Test func refusesPastTheBurstPerKeyThenRecovers() async throws {
        // 600 a minute over one second: a bucket of 10, one request back every 100 ms.
        try await withFake(TokenBucketLimits(requestsPerMinute: 600, burstSeconds: 1)) { fake in
            // Pipelined on one connection, so the 15 are decided well within the 100 ms one refill takes.
            let burst = Array(repeating: Self.openAI(key: "sk-first"), count: 15)
            let replies = try LoopbackHTTP.send(burst, port: fake.port)
            #expect(replies.map(\.status) == Array(repeating: 200, count: 10) + Array(repeating: 429, count: 5))
            #expect(replies[0].headers["x-ratelimit-limit-requests"] == "600")
            #expect(replies[0].headers["x-ratelimit-remaining-requests"] == "9", "after its own charge")
            #expect(replies[0].headers["x-ratelimit-reset-requests"] == "100ms", "one request to refill")
            for reply in replies.dropFirst(10) {
                #expect((reply.int("retry-after") ?? 0) >= 1)
                let waitMs = reply.int("retry-after-ms") ?? 0
                #expect((1...100).contains(waitMs), "one request's refill at most: \(waitMs)")
                #expect(reply.headers["x-ratelimit-limit-requests"] == "600")
                #expect(reply.headers["x-ratelimit-remaining-requests"] == "0")
                #expect(reply.headers["x-ratelimit-reset-requests"] != nil)
                let error = Self.error(reply)
                #expect(error?["code"] as? String == "rate_limit_exceeded")
                #expect(error?["type"] as? String == "requests")
                let message = error?["message"] as? String ?? ""
                #expect(message.contains("on requests per min (RPM): Limit 600, Used 600, Requested 1."), "\(message)")
                #expect(message.contains("Please try again in"))
                #expect(!message.contains("sk-first"), "the key is never echoed")
            }

            let other = try LoopbackHTTP.send(Self.openAI(key: "sk-second"), port: fake.port)
            #expect(other.status == 200, "another key has its own bucket")
            #expect(other.headers["x-ratelimit-remaining-requests"] == "9")

            let stats = fake.stats()
            #expect(stats.rateLimited == 5)
            #expect(stats.longestRateLimitedRun == 5)
            #expect(stats.byStatus == ["200": 11, "429": 5])
            let served = try LoopbackHTTP.send(HTTPRequest(method: "GET", path: "/_fake/stats"), port: fake.port)
            #expect(served.json?["rate_limited"] as? Int == 5)
            #expect(served.json?["longest_rate_limited_run"] as? Int == 5)

            let again = try await Self.untilAdmitted(Self.openAI(key: "sk-first"), port: fake.port)
            #expect(again?.status == 200, "the first key's bucket refills")
        }
    }

    @Test func everyAPIRefusesInItsOwnShape() async throws {
        // A bucket of one request per key, back after a second.
        try await withFake(TokenBucketLimits(requestsPerMinute: 60, burstSeconds: 1)) { fake in
            let anthropic = HTTPRequest(
                path: "/v1/messages", headers: [("x-api-key", "sk-ant"), ("anthropic-version", "2023-06-01")],
                body: #"{"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}"#
            )
            let anthropicReplies = try LoopbackHTTP.send([anthropic, anthropic], port: fake.port)
            #expect(anthropicReplies.map(\.status) == [200, 429])
            let refusedAnthropic = anthropicReplies[1]
            #expect((refusedAnthropic.json?["error"] as? [String: Any])?["type"] as? String == "rate_limit_error")
            #expect(refusedAnthropic.headers["anthropic-ratelimit-requests-limit"] == "60")
            #expect(refusedAnthropic.headers["anthropic-ratelimit-requests-remaining"] == "0")
            #expect(refusedAnthropic.headers["anthropic-ratelimit-requests-reset"] != nil)
            #expect((refusedAnthropic.int("retry-after") ?? 0) >= 1)
            #expect((refusedAnthropic.int("retry-after-ms") ?? 0) > 0)

            let gemini = HTTPRequest(
                path: "/v1beta/models/gemini-2.0-flash:generateContent?key=gem-key",
                body: #"{"contents": [{"parts": [{"text": "hi"}]}]}"#
            )
            let geminiReplies = try LoopbackHTTP.send([gemini, gemini], port: fake.port)
            #expect(geminiReplies.map(\.status) == [200, 429])
            let geminiError = Self.error(geminiReplies[1])
            #expect(geminiError?["status"] as? String == "RESOURCE_EXHAUSTED")
            let details = geminiError?["details"] as? [[String: Any]] ?? []
            let retryInfo = details.first { $0["@type"] as? String == "type.googleapis.com/google.rpc.RetryInfo" }
            #expect((retryInfo?["retryDelay"] as? String)?.hasSuffix("s") == true)
            #expect((geminiReplies[1].int("retry-after") ?? 0) >= 1)

            let azure = HTTPRequest(
                path: "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
                headers: [("api-key", "azure-key")], body: #"{"messages": [{"role": "user", "content": "hi"}]}"#
            )
            let azureReplies = try LoopbackHTTP.send([azure, azure], port: fake.port)
            #expect(azureReplies.map(\.status) == [200, 429])
            let azureError = Self.error(azureReplies[1])
            #expect(azureError?["code"] as? String == "429")
            #expect((azureError?["message"] as? String)?.contains("exceeded call rate limit") == true)
            #expect(azureReplies[1].headers["x-ratelimit-remaining-requests"] == "0")
            #expect((azureReplies[1].int("retry-after") ?? 0) >= 1)

            #expect(fake.stats().rateLimited == 3)
            #expect(fake.stats().longestRateLimitedRun == 1, "each 429 followed another key's admitted request")
        }
    }

    @Test func tokensAreChargedPromptPlusMaxTokens() async throws {
        // 10 tokens a second per key, a bucket of 10; requests unlimited.
        try await withFake(TokenBucketLimits(tokensPerMinute: 600, burstSeconds: 1)) { fake in
            // "hi" is one prompt token, plus a cap of 5: 6 tokens.
            let request = Self.openAI(key: "sk-tokens", maxTokens: 5)
            let replies = try LoopbackHTTP.send([request, request], port: fake.port)
            #expect(replies.map(\.status) == [200, 429])
            #expect(replies[0].headers["x-ratelimit-limit-tokens"] == "600")
            #expect(replies[0].headers["x-ratelimit-remaining-tokens"] == "4")
            #expect(replies[0].headers["x-ratelimit-limit-requests"] == "10000", "requests stay informational")
            let refused = replies[1]
            #expect(Self.error(refused)?["type"] as? String == "tokens")
            let message = Self.error(refused)?["message"] as? String ?? ""
            #expect(message.contains("on tokens per min (TPM): Limit 600, Used "), "\(message)")
            #expect(message.contains("Requested 6. Please try again in"), "\(message)")
            let waitMs = refused.int("retry-after-ms") ?? 0
            #expect((1...200).contains(waitMs), "two tokens at ten a second: \(waitMs)")

            // 101 tokens never fit in a bucket of 10: no wait would help, so none is offered.
            let tooLarge = try LoopbackHTTP.send(Self.openAI(key: "sk-other", maxTokens: 100), port: fake.port)
            #expect(tooLarge.status == 429)
            #expect(tooLarge.headers["retry-after"] == nil)
            #expect(tooLarge.headers["retry-after-ms"] == nil)
            let tooLargeMessage = Self.error(tooLarge)?["message"] as? String ?? ""
            #expect(tooLargeMessage.contains("Request too large for gpt-4o-mini"), "\(tooLargeMessage)")
            #expect(tooLargeMessage.contains("Limit 600, Requested 101."))
            #expect(fake.stats().rateLimited == 2)
        }
    }

    @Test func downAndScriptedStepsComeAroundTheBucket() async throws {
        let limits = TokenBucketLimits(requestsPerMinute: 60, burstSeconds: 1)
        try await withFake(limits, down: true) { fake in
            let first = Self.openAI(key: "sk-a")
            let down = try LoopbackHTTP.send([first, first, first], port: fake.port)
            #expect(down.map(\.status) == [503, 503, 503], "a down provider answers before the bucket")
            #expect(fake.stats().rateLimited == 0)

            fake.setPersonality(Personality(tokenBucket: limits))
            fake.script([FaultStep(status: 500), FaultStep(status: 500)])
            #expect(try LoopbackHTTP.send(first, port: fake.port).status == 500, "uncharged while down: still full")
            #expect(try LoopbackHTTP.send(first, port: fake.port).status == 429)
            #expect(fake.scriptedSteps().count == 1, "a refused request takes no scripted step")
            #expect(try LoopbackHTTP.send(Self.openAI(key: "sk-b"), port: fake.port).status == 500)
            #expect(fake.scriptedSteps().isEmpty)
        }
    }

    @Test func runsEndWhenAnyKeyIsAdmitted() async throws {
        try await withFake(TokenBucketLimits(requestsPerMinute: 60, burstSeconds: 1)) { fake in
            let a = Self.openAI(key: "sk-a")
            let b = Self.openAI(key: "sk-b")
            let replies = try LoopbackHTTP.send([a, a, a, b, a, b], port: fake.port)
            #expect(replies.map(\.status) == [200, 429, 429, 200, 429, 429])
            #expect(fake.stats().rateLimited == 4)
            #expect(fake.stats().longestRateLimitedRun == 2, "a's two, then b's admission ends the run")

            let reset = try LoopbackHTTP.send(HTTPRequest(path: "/_fake/reset"), port: fake.port)
            #expect(reset.json?["rate_limited"] as? Int == 0)
            #expect(reset.json?["longest_rate_limited_run"] as? Int == 0)
            #expect(try LoopbackHTTP.send(a, port: fake.port).status == 200, "a reset fills every bucket")
        }
    }
    /// `POST /_fake/reset-stats` zeroes the counters (the longest run included) and nothing else: the buckets
    /// stay as spent, unlike `/_fake/reset`.
    @Test func resetStatsZeroesCountersOnly() async throws {
        try await withFake(TokenBucketLimits(requestsPerMinute: 60, burstSeconds: 1)) { fake in
            let a = Self.openAI(key: "sk-a")
            #expect(try LoopbackHTTP.send([a, a, a], port: fake.port).map(\.status) == [200, 429, 429])
            let zeroed = try LoopbackHTTP.send(HTTPRequest(path: "/_fake/reset-stats"), port: fake.port)
            #expect(zeroed.status == 200)
            #expect(zeroed.json?["requests"] as? Int == 0 && zeroed.json?["rate_limited"] as? Int == 0)
            #expect(zeroed.json?["longest_rate_limited_run"] as? Int == 0)
            #expect(try LoopbackHTTP.send(a, port: fake.port).status == 429, "the bucket is still spent")
            #expect(fake.stats().requests == 1 && fake.stats().rateLimited == 1)
        }
    }
}
