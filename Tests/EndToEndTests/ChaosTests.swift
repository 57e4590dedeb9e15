import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A daemon in front of two fake providers, `primary` and `fallback`, for the resilience runs.
final class ChaosRig: @unchecked Sendable {
    let dir: String
    let socket: String
    let primary: FakeProvider
    let fallback: FakeProvider
    let daemon: ChildProcess

    /// `primaryOptions` / `fallbackOptions` are extra YAML lines under each provider (indented 4 spaces);
    /// `routes` replaces the default route `default: primary/gpt-4o → fallback/gpt-4o-mini`; `primaryBaseURL`
    /// replaces the primary's base URL (`PORT` stands for its fake's port).
    static func start(primary: Personality = .healthy, fallback: Personality = .healthy,
                      primaryKind: String = "openai", fallbackKind: String = "openai",
                      primaryOptions: String = "", fallbackOptions: String = "",
                      routes: String? = nil, primaryBaseURL: String? = nil) async throws -> ChaosRig {
        let dir = makeTempDir()
        let p = try await FakeProvider.start(personality: primary)
        let f = try await FakeProvider.start(personality: fallback)
        func base(_ fake: FakeProvider, _ kind: String) -> String {
            switch kind {
            case "anthropic": "http://127.0.0.1:\(fake.port)/v1"
            case "gemini": "http://127.0.0.1:\(fake.port)/v1beta"
            case "azure": "http://127.0.0.1:\(fake.port)"
            default: fake.baseURL
            }
        }
        let config = dir + "/chaos.yaml"
        try """
        providers:
          primary:
            kind: \(primaryKind)
            base_url: \(primaryBaseURL.map { $0.replacingOccurrences(of: "PORT", with: "\(p.port)") }
                ?? base(p, primaryKind))
            api_key_env: BW_TEST_KEY
            http_version: "1.1"
        \(primaryOptions)
          fallback:
            kind: \(fallbackKind)
            base_url: \(base(f, fallbackKind))
            api_key_env: BW_TEST_KEY
            http_version: "1.1"
        \(fallbackOptions)
        routes:
        \(routes ?? "  default:\n    - {provider: primary, model: gpt-4o}\n    - {provider: fallback, model: gpt-4o-mini}")
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = dir + "/bw.sock"
        let daemon = try ChildProcess(binDir + "/breakwaterd", ["--config", config, "--socket", socket],
                                      environment: ["BW_TEST_KEY": DaemonUnderTest.apiKey],
                                      logPath: dir + "/daemon.log")
        let rig = ChaosRig(dir: dir, socket: socket, primary: p, fallback: f, daemon: daemon)
        let up = try await waitUntil(timeout: .seconds(30)) { (try? RawConnection(path: socket).hello()) != nil }
        guard up else {
            let why = "daemon did not come up:\n\(daemon.output)"
            rig.stop()
            throw TestFailure(why)
        }
        return rig
    }

    private init(dir: String, socket: String, primary: FakeProvider, fallback: FakeProvider, daemon: ChildProcess) {
        self.dir = dir
        self.socket = socket
        self.primary = primary
        self.fallback = fallback
        self.daemon = daemon
    }

    func client() -> BreakwaterClient { BreakwaterClient(socketPath: socket, clientName: "chaos") }

    /// The breaker's state for `target` and the provider's openings so far, as `breakwater breakers` and
    /// `breakwater status --json` report them (the stable interface, not the log's wording).
    func breaker(_ target: String) async throws -> (state: String?, openings: Int) {
        let c = client()
        defer { c.close() }
        let breakers = try JSONSerialization.jsonObject(with: Data(try await c.admin("breakers"))) as? [String: Any]
        let row = (breakers?["breakers"] as? [[String: Any]])?.first { $0["target"] as? String == target }
        let status = try JSONSerialization.jsonObject(with: Data(try await c.admin("status"))) as? [String: Any]
        let provider = String(target.split(separator: "/").first ?? "")
        let counters = (status?["resilience"] as? [[String: Any]])?.first { $0["provider"] as? String == provider }
        return (row?["state"] as? String, counters?["breaker_openings"] as? Int ?? 0)
    }

    func stop() {
        daemon.stop()
        Task { [primary, fallback] in
            try? await primary.shutdown()
            try? await fallback.shutdown()
        }
        if ProcessInfo.processInfo.environment["BW_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}

func percentile(_ sorted: [Duration], _ p: Double) -> Duration {
    sorted.isEmpty ? .zero : sorted[min(sorted.count - 1, Int((Double(sorted.count) * p / 100).rounded(.up)) - 1)]
}

func ms(_ d: Duration) -> String {
    let c = d.components
    return String(format: "%.1f ms", Double(c.seconds) * 1e3 + Double(c.attoseconds) / 1e15)
}

/// The resilience acceptance runs: real daemon, fake providers with scripted personalities, bounded in time, with
/// their figures printed.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ChaosTests {
    static let fastRetries = """
                retry_config:
                  retry_count: 2
                  backoff_base: 20ms
                  max_retry_wait: 200ms
            """

    /// Primary answers 30% 503 and 20% 429 with Retry-After: 1; the fallback is healthy. At least 99.9% of 2,000
    /// calls succeed, and the p99 stays far below the one-second Retry-After: the long wait sends the call to the
    /// fallback instead of sleeping.
    @Test func flakyPrimaryHealthyFallback() async throws {
        // The fake's 429s say the key's requests are spent (remaining 0) and the daemon paces to the limit the
        // fake advertises: a limit this load cannot reach keeps this run about retries and fallback.
        let flaky = Personality(name: "flaky", faults: [
            ProbabilisticFault(probability: 0.3, step: FaultStep(status: 503)),
            ProbabilisticFault(probability: 0.2, step: FaultStep(status: 429, retryAfter: "1")),
        ], seed: 7, rateLimitRequests: 1_000_000_000, rateLimitTokens: 1_000_000_000_000)
        // A breaker would soon send everything to the fallback; keep it out of this run to exercise retries.
        let rig = try await ChaosRig.start(primary: flaky, primaryOptions: Self.fastRetries + """

                circuit_breaker: {failure_threshold: 100000, minimum_calls: 100000}
            """)
        defer { rig.stop() }
        let client = rig.client()
        let total = 2000
        let start = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: (Bool, Duration, String).self) { group in
            var next = 0
            var out: [(Bool, Duration, String)] = []
            func add() {
                let i = next
                next += 1
                group.addTask {
                    let t0 = ContinuousClock.now
                    do {
                        let r = try await client.send(route: "default", body: chat("chaos \(i)"))
                        return (content(r.body) == "Echo: chaos \(i)", ContinuousClock.now - t0,
                                r.head.provider + " attempts \(r.head.attempts)")
                    } catch {
                        return (false, ContinuousClock.now - t0, "error: \(error)")
                    }
                }
            }
            for _ in 0..<32 { add() }
            while let r = try await group.next() {
                out.append(r)
                if next < total { add() }
            }
            return out
        }
        let elapsed = ContinuousClock.now - start
        let ok = results.filter(\.0).count
        let latencies = results.map(\.1).sorted()
        let byPrimary = results.filter { $0.2.hasPrefix("primary") }.count
        let byFallback = results.filter { $0.2.hasPrefix("fallback") }.count
        let slow = results.filter { $0.1 > .milliseconds(300) }
        if !slow.isEmpty {
            print("chaos flaky-primary: \(slow.count) calls over 300 ms, e.g. " + slow.prefix(5).map { "\(ms($0.1)) \($0.2)" }
                .joined(separator: ", "))
        }
        let ps = rig.primary.stats()
        print("""
            chaos flaky-primary: \(ok)/\(total) succeeded in \(ms(elapsed)); answered by primary \(byPrimary), \
            fallback \(byFallback); latency p50 \(ms(percentile(latencies, 50))), p99 \(ms(percentile(latencies, 99))), \
            max \(ms(latencies.last ?? .zero)); primary saw \(ps.requests) requests \(ps.byStatus), \
            fallback saw \(rig.fallback.stats().requests)
            """)
        #expect(Double(ok) / Double(total) >= 0.999)
        #expect(percentile(latencies, 99) < .milliseconds(500), "p99 must stay far below the 1 s Retry-After")
        #expect(byFallback > 0 && byPrimary > 0)
        #expect(ps.byStatus["503"] ?? 0 > 0 && ps.byStatus["429"] ?? 0 > 0)
    }

    /// A 401 from the primary: no retry, and no fallback unless the chain says so.
    @Test func authFailureNeitherRetriesNorFallsBackByDefault() async throws {
        let rig = try await ChaosRig.start(
            primary: Personality(name: "bad-key", defaultStep: FaultStep(status: 401)),
            primaryOptions: Self.fastRetries,
            routes: """
                  default:
                    - {provider: primary, model: gpt-4o}
                    - {provider: fallback, model: gpt-4o-mini}
                  lenient:
                    targets:
                      - {provider: primary, model: gpt-4o}
                      - {provider: fallback, model: gpt-4o-mini}
                    fallback_on: [transient, rate_limited, auth]
                """)
        defer { rig.stop() }
        let client = rig.client()
        do {
            _ = try await client.send(route: "default", body: chat("x"))
            Issue.record("the 401 was hidden")
        } catch {
            #expect(error.code == .upstreamError && error.upstreamStatus == 401 && error.provider == "primary")
        }
        #expect(rig.primary.stats().requests == 1, "no retry on 401")
        #expect(rig.fallback.stats().requests == 0, "no fallback on 401 by default")
        let r = try await client.send(route: "lenient", body: chat("y"))
        #expect(r.head.provider == "fallback")
        #expect(r.head.attempts == 2)
        #expect(rig.primary.stats().requests == 2)
        print("chaos auth: default route failed with 401 after 1 attempt; lenient route answered by fallback")
    }

    /// Primary hard down: the breaker opens after the threshold; then the primary sees only half-open probes and
    /// calls go straight to the fallback with no backoff delay; when the primary comes back the breaker closes.
    @Test func hardDownPrimaryOpensTheBreakerAndRecovers() async throws {
        let rig = try await ChaosRig.start(
            primary: Personality(name: "down", defaultStep: FaultStep(status: 503)),
            primaryOptions: """
                    retry_config: {retry_count: 1, backoff_base: 50ms, max_retry_wait: 1s}
                    circuit_breaker: {failure_threshold: 4, rolling_window: 10s, timeout_period: 700ms, success_threshold: 1}
                """)
        defer { rig.stop() }
        let client = rig.client()
        // Until the breaker opens: each call tries the primary twice (retry), then the fallback.
        var opened = false
        for _ in 0..<10 where !opened {
            let r = try await client.send(route: "default", body: chat("before"))
            #expect(r.head.provider == "fallback")
            opened = try await rig.breaker("primary/gpt-4o").state == "open"
        }
        #expect(opened, "breaker never opened: \(rig.daemon.output)")
        let primaryBefore = rig.primary.stats().requests
        #expect(primaryBefore == 8, "the breaker opens after failure_threshold (4) failed calls of 2 attempts each")

        // Open: the primary gets no attempts; calls are as fast as the fallback alone.
        var latencies: [Duration] = []
        for i in 0..<40 {
            let t0 = ContinuousClock.now
            let r = try await client.send(route: "default", body: chat("open \(i)"))
            latencies.append(ContinuousClock.now - t0)
            #expect(r.head.provider == "fallback" && r.head.attempts == 1)
        }
        latencies.sort()
        // No attempt at the primary, so no backoff either: each call was the fallback's single attempt.
        #expect(rig.primary.stats().requests == primaryBefore, "no attempt reached the primary while open")

        // After timeout_period one probe goes through; the primary is still down, so the breaker opens again.
        try await Task.sleep(for: .milliseconds(800))
        let probe = try await client.send(route: "default", body: chat("probe"))
        #expect(probe.head.provider == "fallback")
        #expect(rig.primary.stats().requests == primaryBefore + 1, "exactly one half-open probe")
        let reopened = try await rig.breaker("primary/gpt-4o")
        #expect(reopened.state == "open" && reopened.openings == 2, "the failed probe opened it again: \(reopened)")

        // The primary comes back: the next probe succeeds and the breaker closes.
        rig.primary.setPersonality(.healthy)
        try await Task.sleep(for: .milliseconds(800))
        let back = try await client.send(route: "default", body: chat("back"))
        #expect(back.head.provider == "primary")
        #expect(try await rig.breaker("primary/gpt-4o").state == "closed")
        let after = try await client.send(route: "default", body: chat("after"))
        #expect(after.head.provider == "primary")
        print("""
            chaos hard-down: breaker opened after \(primaryBefore) primary failures; while open 40 calls via fallback, \
            p50 \(ms(percentile(latencies, 50))), p99 \(ms(percentile(latencies, 99))), 0 primary attempts; \
            one probe per timeout_period; closed again once the primary recovered
            """)
    }

    /// One process's failures open the breaker that another process then sees: state is host-wide.
    @Test func twoClientProcessesShareOneBreaker() async throws {
        let rig = try await ChaosRig.start(
            primary: Personality(name: "down", defaultStep: FaultStep(status: 503)),
            primaryOptions: """
                    retry_config: {retry_count: 0}
                    circuit_breaker: {failure_threshold: 3, timeout_period: 60s}
                """)
        defer { rig.stop() }
        for i in 0..<3 {
            let a = try ChildProcess(binDir + "/breakwater", ["call", "--socket", rig.socket, "--message", "a\(i)"],
                                     logPath: rig.dir + "/a\(i).log")
            #expect(try await a.waitForExit() == 0, "\(a.output)")
        }
        #expect(rig.primary.stats().requests == 3)
        #expect(try await rig.breaker("primary/gpt-4o").state == "open")
        let b = try ChildProcess(binDir + "/breakwater", ["call", "--socket", rig.socket, "--message", "from b"],
                                 logPath: rig.dir + "/b.log")
        #expect(try await b.waitForExit() == 0, "\(b.output)")
        #expect(b.output.contains("[fallback/gpt-4o-mini") && b.output.contains("attempts 1"), "\(b.output)")
        #expect(rig.primary.stats().requests == 3, "process B never reached the primary: the breaker was open")
        print("chaos two-processes: process A's 3 failures opened the breaker; process B went straight to fallback")
    }

    /// A stream cut after its first chunk reached the app ends with an explicit error, and is not silently
    /// restarted on the fallback.
    @Test func streamCutAfterFirstChunkIsAnExplicitError() async throws {
        let rig = try await ChaosRig.start(primaryOptions: Self.fastRetries)
        defer { rig.stop() }
        rig.primary.script([FaultStep(chunkIntervalMs: 20, chunks: 6, resetAfterChunks: 2)])
        let s = try await rig.client().stream(route: "default", body: chat("one two three four five six"))
        var chunks = 0
        await #expect {
            for try await _ in s { chunks += 1 }
        } throws: { ($0 as? BreakwaterError)?.code == .streamInterrupted }
        #expect(chunks >= 1)
        #expect(s.head.provider == "primary")
        #expect(rig.fallback.stats().requests == 0)
        print("chaos stream-cut: \(chunks) chunk(s) reached the app, then STREAM_INTERRUPTED; no fallback")
    }

    /// A stream that fails before its first byte falls back transparently.
    @Test func streamFailingBeforeFirstByteFallsBack() async throws {
        let rig = try await ChaosRig.start(primaryOptions: Self.fastRetries)
        defer { rig.stop() }
        rig.primary.script([FaultStep(status: 503), FaultStep(status: 503), FaultStep(status: 503)])
        let s = try await rig.client().stream(route: "default", body: chat("a b c"))
        var text = ""
        for try await chunk in s { text += content(chunk) ?? "" }
        #expect(text == "Echo: a b c")
        #expect(s.head.provider == "fallback")
        #expect(s.head.attempts == 4)
        #expect(s.trailers?.succeeded == true)
    }

    /// CANCEL stops a retry that is sleeping.
    @Test func cancelStopsABackoffSleep() async throws {
        let rig = try await ChaosRig.start(
            primary: Personality(name: "slow-down", defaultStep: FaultStep(status: 503, retryAfter: "2")),
            primaryOptions: """
                    retry_config: {retry_count: 3, max_retry_wait: 10s}
                """,
            routes: "  default:\n    - {provider: primary, model: gpt-4o}")
        defer { rig.stop() }
        let client = rig.client()
        let call = Task { try await client.send(route: "default", body: chat("x")) }
        // Once the 503 has been written the daemon is sleeping out the 2 s Retry-After.
        #expect(try await waitUntil { rig.primary.stats().completed == 1 })
        let t0 = ContinuousClock.now
        call.cancel()
        let result = await call.result
        #expect(ContinuousClock.now - t0 < .seconds(1))
        guard case .failure(let error) = result else {
            Issue.record("a cancelled call returned an answer")
            return
        }
        #expect((error as? BreakwaterError)?.kind == .cancelled, "\(error)")
        // Past the moment the retry would have gone out: it never does.
        try await Task.sleep(for: .milliseconds(2500))
        #expect(rig.primary.stats().requests == 1, "the cancelled call's retry never ran")
    }

    /// OpenAI primary down, Anthropic fallback: the app gets the canonical (OpenAI-shaped) answer, plain and
    /// streamed, without knowing the provider changed.
    @Test func openAIDownAnthropicFallbackGivesCanonicalAnswers() async throws {
        let rig = try await ChaosRig.start(
            primary: Personality(name: "down", defaultStep: FaultStep(status: 503)),
            fallbackKind: "anthropic", primaryOptions: Self.fastRetries,
            routes: "  default:\n    - {provider: primary, model: gpt-4o}\n    - {provider: fallback, model: claude-sonnet-4-5}")
        defer { rig.stop() }
        let client = rig.client()
        let plain = try await client.send(route: "default", body: chat("hello from openai land"))
        #expect(plain.head.provider == "fallback" && plain.head.model == "claude-sonnet-4-5")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(plain.body)) as? [String: Any])
        #expect(object["object"] as? String == "chat.completion")
        #expect(content(plain.body) == "Echo: hello from openai land")
        #expect((plain.trailers.totalTokens ?? 0) > 0)

        let s = try await client.stream(route: "default", body: chat("streamed via anthropic"))
        var text = ""
        var objects: Set<String> = []
        for try await chunk in s {
            if let o = try? JSONSerialization.jsonObject(with: Data(chunk)) as? [String: Any],
               let kind = o["object"] as? String { objects.insert(kind) }
            text += content(chunk) ?? ""
        }
        #expect(text == "Echo: streamed via anthropic")
        #expect(objects == ["chat.completion.chunk"])
        #expect(s.head.provider == "fallback")
        #expect(s.trailers?.succeeded == true)
        #expect(rig.fallback.stats().byAPI["anthropic"] == 2)
        print("chaos openai→anthropic: plain and streamed answers came back in OpenAI's shape from Anthropic")
    }

    /// Model-level fallback within one provider: gpt-4-turbo → gpt-4 → gpt-3.5-turbo, in that order.
    @Test func modelLevelFallbackFollowsTheChainInOrder() async throws {
        let rig = try await ChaosRig.start(
            primaryOptions: """
                    retry_config: {retry_count: 0}
                """,
            routes: """
                  default:
                    - {provider: primary, model: gpt-4-turbo}
                    - {provider: primary, model: gpt-4}
                    - {provider: primary, model: gpt-3.5-turbo}
                """)
        defer { rig.stop() }
        rig.primary.script([FaultStep(status: 404, errorCode: "model_not_found"), FaultStep(status: 500)])
        let r = try await rig.client().send(route: "default", body: chat("which model?"))
        #expect(r.head.model == "gpt-3.5-turbo")
        #expect(r.head.attempts == 3)
        let byModel = rig.primary.stats().byModel
        #expect(byModel["gpt-4-turbo"] == 1 && byModel["gpt-4"] == 1 && byModel["gpt-3.5-turbo"] == 1, "\(byModel)")
    }

    /// Provider rate limits per key: past a key's RPM the daemon does not send (it would only earn a 429); with a
    /// second key the pool serves twice as many calls before moving on to the fallback.
    @Test func rateLimitsPerKeyAndKeyRotation() async throws {
        let one = try await ChaosRig.start(primaryOptions: """
                rate_limits: {rpm: 2}
                retry_config: {max_retry_wait: 100ms}
            """)
        defer { one.stop() }
        var providers: [String] = []
        for i in 0..<3 { providers.append(try await one.client().send(route: "default", body: chat("\(i)")).head.provider) }
        #expect(providers == ["primary", "primary", "fallback"])
        #expect(one.primary.stats().requests == 2, "the third call was never sent to the limited provider")

        setenv("BW_TEST_KEY_2", "sk-second-key", 1)
        defer { unsetenv("BW_TEST_KEY_2") }
        let two = try await ChaosRig.start(primaryOptions: """
                rate_limits: {rpm: 2}
                retry_config: {max_retry_wait: 100ms}
                api_keys: [{env: BW_TEST_KEY_2}]
            """)
        defer { two.stop() }
        providers = []
        for i in 0..<5 { providers.append(try await two.client().send(route: "default", body: chat("\(i)")).head.provider) }
        #expect(providers == ["primary", "primary", "primary", "primary", "fallback"])
        print("chaos rate-limits: 1 key at rpm 2 → 2 calls then fallback; 2 keys → 4 calls then fallback")
    }

    /// A provider with a real token bucket (20 requests/s, 1 s of burst), offered more than that: the daemon learns
    /// the limit from its headers and paces to it. Without a fallback every call is answered (none gets a raw
    /// 429) and the provider refuses few requests; with one, the excess goes to the fallback at once.
    @Test func pacesToAProvidersTokenBucket() async throws {
        let bucket = Personality(name: "bucket", tokenBucket: TokenBucketLimits(requestsPerMinute: 1200,
                                                                                burstSeconds: 1))
        let rig = try await ChaosRig.start(primary: bucket, routes: """
              default:
                - {provider: primary, model: gpt-4o}
                - {provider: fallback, model: gpt-4o-mini}
              solo:
                - {provider: primary, model: gpt-4o}
            """)
        defer { rig.stop() }
        let client = rig.client()
        func run(_ route: String, calls: Int) async -> (answered: Int, errors: [String], seconds: Double) {
            let start = ContinuousClock.now
            let results = await withTaskGroup(of: String?.self) { group in
                for i in 0..<calls {
                    group.addTask {
                        do {
                            _ = try await client.send(route: route, body: chat("paced \(i)"), timeoutMs: 20_000)
                            return nil
                        } catch let error as BreakwaterError {
                            return "\(error.code?.name ?? "?") \(error.upstreamStatus.map(String.init) ?? "")"
                        } catch {
                            return "\(error)"
                        }
                    }
                }
                return await group.reduce(into: [String?]()) { $0.append($1) }
            }
            let errors = results.compactMap { $0 }
            return (calls - errors.count, errors, (ContinuousClock.now - start).seconds)
        }
        // The first answer teaches the daemon the limit (calls sent before any answer came back cannot know it).
        _ = try await client.send(route: "solo", body: chat("learn"))
        rig.primary.resetStats()
        let alone = await run("solo", calls: 60)
        let seen = rig.primary.stats()
        print("""
            chaos token-bucket: 60 calls at once, no fallback: \(alone.answered) answered in \(String(
            format: "%.2f", alone.seconds)) s; the provider saw \(seen.requests) requests and refused \(
            seen.rateLimited) (longest run \(seen.longestRateLimitedRun))
            """)
        #expect(alone.answered == 60, "\(alone.errors)")
        // 20 fit in the bucket, the other 40 take 2 s at 20/s: paced, not retried after a 429.
        #expect(alone.seconds >= 1.5, "the daemon did not pace to the provider's limit")
        #expect(seen.rateLimited <= 6, "the daemon ran into the provider's limit instead of pacing to it")
        rig.primary.resetStats()
        let spread = await run("default", calls: 60)
        let primary = rig.primary.stats()
        let fallback = rig.fallback.stats()
        print("""
            chaos token-bucket: 60 calls at once with a fallback: \(spread.answered) answered in \(String(
            format: "%.2f", spread.seconds)) s, primary \(primary.completed) (refused \(
            primary.rateLimited)), fallback \(fallback.completed)
            """)
        #expect(spread.answered == 60, "\(spread.errors)")
        #expect(fallback.completed > 0, "the excess did not go to the fallback")
        #expect(spread.seconds < 1.5, "calls waited for the primary's limit instead of using the fallback")
    }

    /// A quiet gap between chunks longer than timeouts.idle counts as a failure: after bytes reached the app the
    /// stream ends with an explicit error.
    @Test func idleGapMidStreamIsAFailure() async throws {
        let rig = try await ChaosRig.start(primaryOptions: """
                timeouts: {idle: 300ms}
            """ + "\n" + Self.fastRetries)
        defer { rig.stop() }
        rig.primary.script([FaultStep(chunkIntervalMs: 10, chunks: 5, stallAfterChunks: 2, stallMs: 3000)])
        let t0 = ContinuousClock.now
        let s = try await rig.client().stream(route: "default", body: chat("a b c d e"))
        await #expect {
            for try await _ in s {}
        } throws: { ($0 as? BreakwaterError)?.code == .streamInterrupted }
        #expect(ContinuousClock.now - t0 < .seconds(2), "the idle limit, not the stall, ended the stream")
    }

    /// The same transparent fallback to Gemini and to Azure OpenAI, plain and streamed.
    @Test(arguments: [("gemini", "gemini-2.5-flash"), ("azure", "gpt-4o-deployment")])
    func fallbackToOtherProviderKinds(kind: String, model: String) async throws {
        let rig = try await ChaosRig.start(
            primary: Personality(name: "down", defaultStep: FaultStep(status: 503)),
            fallbackKind: kind, primaryOptions: Self.fastRetries,
            routes: "  default:\n    - {provider: primary, model: gpt-4o}\n    - {provider: fallback, model: \(model)}")
        defer { rig.stop() }
        let client = rig.client()
        let plain = try await client.send(route: "default", body: chat("to \(kind)"))
        #expect(plain.head.provider == "fallback" && plain.head.model == model)
        #expect(content(plain.body) == "Echo: to \(kind)")
        let s = try await client.stream(route: "default", body: chat("streamed to \(kind)"))
        var text = ""
        for try await chunk in s { text += content(chunk) ?? "" }
        #expect(text == "Echo: streamed to \(kind)")
        #expect(s.trailers?.succeeded == true)
        #expect(rig.fallback.stats().byAPI[kind] == 2, "\(rig.fallback.stats().byAPI)")
    }
}
