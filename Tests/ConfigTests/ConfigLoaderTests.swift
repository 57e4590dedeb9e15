import Config
import Foundation
import Resilience
import Testing

@Suite struct ConfigLoaderTests {
    @Test func emptyFileMeansBuiltInDefaults() throws {
        #expect(try ConfigLoader.parse("") == BreakwaterConfig.defaults)
        #expect(try ConfigLoader.parse("# nothing here\n") == BreakwaterConfig.defaults)
    }

    @Test func fullExample() throws {
        let c = try ConfigLoader.parse("""
            socket: /run/breakwater/breakwater.sock
            limits:
              max_frame_bytes: 65536
              max_body_bytes: 1048576
              max_concurrent_calls: 64
              drain_timeout: 10s
              default_call_timeout: 2m
            providers:
              openai:
                kind: openai
                base_url: https://api.openai.com/v1
                api_key_credential: openai_api_key
                api_key_env: OPENAI_API_KEY
                http_version: "2"
                timeouts: {connect: 3s, first_byte: 30s, idle: 500ms, total: 1.5m}
              local:
                kind: openai
                base_url: http://127.0.0.1:8000/v1
                api_key_env: LOCAL_KEY
                http_version: "1.1"
            routes:
              default:
                - provider: openai
                  model: gpt-4o-mini
                - provider: local
                  model: llama-3.1-8b
            """)
        #expect(c.socketPath == "/run/breakwater/breakwater.sock")
        #expect(c.limits.maxFrameBytes == 65536)
        #expect(c.limits.maxBodyBytes == 1_048_576)
        #expect(c.limits.maxConcurrentCalls == 64)
        #expect(c.limits.drainTimeout == .seconds(10))
        #expect(c.limits.defaultCallTimeout == .seconds(120))
        let openai = try #require(c.providers["openai"])
        #expect(openai.apiKeyCredential == "openai_api_key")
        #expect(openai.httpVersion == .http2)
        #expect(openai.timeouts.connect == .seconds(3))
        #expect(openai.timeouts.idle == .milliseconds(500))
        #expect(openai.timeouts.total == .seconds(90))
        #expect(c.providers["local"]?.httpVersion == .http1_1)
        #expect(c.routes["default"]?.targets == [RouteTarget(provider: "openai", model: "gpt-4o-mini"),
                                        RouteTarget(provider: "local", model: "llama-3.1-8b")])
    }

    /// Every problem is reported, each at its own line and column.
    @Test func everyErrorHasItsLine() {
        let yaml = """
            sockett: /tmp/x
            providers:
              openai:
                kind: openai
                base_url: api.openai.com
                api_key: sk-live-secret
                http_version: "3"
              other:
                base_url: http://x
            routes:
              default:
                - provider: nowhere
                  model: m
                - model: only-model
              empty: []
            limits:
              max_concurrent_calls: zero
              drain_timeout: soon
            """
        do {
            _ = try ConfigLoader.parse(yaml, file: "bw.yaml")
            Issue.record("bad config accepted")
        } catch {
            let lines = error.issues.map(\.line)
            #expect(lines.contains(1), "unknown top-level key")
            #expect(lines.contains(5), "base_url without scheme")
            #expect(lines.contains(6), "api_key in the file")
            #expect(lines.contains(7), "bad http_version")
            #expect(lines.contains(9), "provider without kind")
            #expect(lines.contains(12), "route to an unknown provider")
            #expect(lines.contains(14), "target without provider")
            #expect(lines.contains(15), "empty route")
            #expect(lines.contains(17), "non-numeric limit")
            #expect(lines.contains(18), "bad duration")
            #expect(error.description.contains("bw.yaml:6:"))
            #expect(!error.description.contains("sk-live-secret"), "the key's value must never be echoed")
        }
    }

    @Test func connectionPoolsPerProvider() throws {
        let c = try ConfigLoader.parse("""
            limits: {upstream_connections_per_host: 32}
            providers:
              local: {kind: openai, base_url: "http://127.0.0.1:8000/v1", http_version: "1.1", max_connections: 1000}
              openai: {kind: openai, base_url: https://api.openai.com/v1, max_connections: 4, max_concurrent_streams: 50}
              h2c: {kind: openai, base_url: "http://127.0.0.1:9000/v1", http_version: 2-prior-knowledge}
              cleartext2: {kind: openai, base_url: "http://127.0.0.1:9001/v1", http_version: "2"}
            routes:
              default: [{provider: local, model: m}]
            """)
        let limit = { (name: String) in
            c.providers[name]!.callsInFlightLimit(defaultConnections: c.limits.upstreamConnectionsPerHost)
        }
        #expect(limit("local") == 1000)
        #expect(limit("openai") == 200, "HTTP/2 over TLS: 4 connections × 50 streams")
        #expect(limit("h2c") == 3200, "the default connections × the default 100 streams")
        #expect(limit("cleartext2") == 32, "HTTP/2 asked for over http:// is HTTP/1.1: one call per connection")
        do {
            _ = try ConfigLoader.parse("""
                providers:
                  p: {kind: openai, base_url: "http://x", max_connections: 0, max_concurrent_streams: many}
                """, file: "bw.yaml")
            Issue.record("bad pool limits accepted")
        } catch {
            #expect(error.description.contains("max_connections must be a whole number from 1"))
            #expect(error.description.contains("max_concurrent_streams must be a whole number from 1"))
        }
    }

    @Test func streamCoalescingWindow() throws {
        let routes = """
            providers:
              p: {kind: openai, base_url: "http://127.0.0.1:8000/v1"}
            routes:
              default: [{provider: p, model: m}]

            """
        #expect(try ConfigLoader.parse(routes).limits.streamCoalescingWindow == .milliseconds(5), "the default")
        #expect(try ConfigLoader.parse("limits: {stream_coalescing_window: 20ms}\n" + routes)
            .limits.streamCoalescingWindow == .milliseconds(20))
        #expect(try ConfigLoader.parse("limits: {stream_coalescing_window: 0s}\n" + routes)
            .limits.streamCoalescingWindow == .zero, "zero turns it off")
        for (value, message) in [("1s", "stream_coalescing_window must be at most 100ms (0s turns it off)"),
                                 ("soon", "stream_coalescing_window must be a duration such as 0s, 500ms")] {
            do {
                _ = try ConfigLoader.parse("limits: {stream_coalescing_window: \(value)}\n" + routes, file: "bw.yaml")
                Issue.record("stream_coalescing_window: \(value) accepted")
            } catch {
                #expect(error.description.contains(message), "\(error.description)")
                #expect(error.description.contains("bw.yaml:1:"))
            }
        }
    }

    @Test func clusterStoreAndScopes() throws {
        let c = try ConfigLoader.parse("""
            cluster:
              redis: redis://10.0.0.5:6380/2
              password_credential: redis_password
              key_prefix: "fleet-a:"
              timeout: 50ms
              fallback_share: 0.25
            providers:
              openai: {kind: openai, base_url: https://api.openai.com/v1,
                       rate_limits: {rpm: 5000, tpm: 2000000, burst_seconds: 1, scope: cluster}}
              local: {kind: openai, base_url: "http://127.0.0.1:8000/v1", rate_limits: {rpm: 60}}
            routes:
              default: [{provider: openai, model: m}]
            """)
        #expect(c.cluster?.redis == "redis://10.0.0.5:6380/2")
        #expect(c.cluster?.passwordCredential == "redis_password")
        #expect(c.cluster?.keyPrefix == "fleet-a:")
        #expect(c.cluster?.timeout == .milliseconds(50))
        #expect(c.cluster?.fallbackShare == 0.25)
        #expect(c.providers["openai"]?.rateLimits == KeyPool.Limits(rpm: 5000, tpm: 2_000_000, burstSeconds: 1,
                                                                     scope: .cluster))
        #expect(c.providers["local"]?.rateLimits.scope == .host)
        #expect(c.providers["local"]?.rateLimits.burst(of: 60) == 60, "a minute's worth by default")

        func problems(_ yaml: String) -> String {
            do {
                _ = try ConfigLoader.parse(yaml, file: "bw.yaml")
                return ""
            } catch {
                return error.description
            }
        }
        let noStore = problems("""
            providers:
              p: {kind: openai, base_url: "http://x", rate_limits: {rpm: 10, scope: cluster}}
            """)
        #expect(noStore.contains("bw.yaml:2:") && noStore.contains("needs a cluster: section"), "\(noStore)")
        let bad = problems("""
            cluster: {redis: "redis://:hunter2@10.0.0.5:6379", timeout: soon, fallback_share: 2}
            providers:
              p: {kind: openai, base_url: "http://x", rate_limits: {rpm: 10, scope: fleet, burst_seconds: 0}}
            """)
        #expect(bad.contains("password_credential") && !bad.contains("hunter2"), "\(bad)")
        #expect(bad.contains("cluster.timeout must be a positive duration"))
        #expect(bad.contains("fallback_share must be a share of the cluster limit"))
        #expect(bad.contains("scope must be host") && bad.contains("burst_seconds must be"))
        #expect(problems("cluster: {redis: \"rediss://10.0.0.5:6379\"}").contains("no TLS"))
        #expect(problems("cluster: {timeout: 1s}").contains("cluster needs redis:"))
    }

    @Test func syntaxErrorPointsAtTheLine() {
        do {
            _ = try ConfigLoader.parse("routes:\n  default: [\n    {provider: a\n", file: "x.yaml")
            Issue.record("syntax error accepted")
        } catch {
            #expect(error.issues.count == 1)
            #expect(error.issues[0].line >= 3)
            #expect(error.issues[0].message.hasPrefix("YAML syntax"))
        }
    }

    @Test func defaultRouteNeedsItsProviderWhenProvidersAreReplaced() {
        #expect(throws: ConfigError.self) {
            try ConfigLoader.parse("providers:\n  mine: {kind: openai, base_url: 'http://x'}\n")
        }
    }

    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)), ("5s", .seconds(5)), ("1.5s", .milliseconds(1500)),
        ("2m", .seconds(120)), ("1h", .seconds(3600)), ("30", .seconds(30)), (" 7s ", .seconds(7)),
    ])
    func durations(text: String, expected: Duration) {
        #expect(DurationParser.parse(text) == expected)
    }

    @Test(arguments: ["", "s", "5x", "-1s", "ms5", "five seconds", "1e300s", "1e17h", "99999999999999999999"])
    func badDurations(text: String) {
        #expect(DurationParser.parse(text) == nil)
    }
}

@Suite struct CredentialTests {
    let provider = ProviderConfig(kind: .openai, baseURL: "http://x", apiKeyCredential: "openai_api_key",
                                  apiKeyEnv: "OPENAI_API_KEY")

    @Test func credentialFileWinsOverEnvironment() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("creds-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "sk-from-file\n".write(to: dir.appendingPathComponent("openai_api_key"), atomically: true, encoding: .utf8)
        let key = CredentialResolver.apiKey(for: provider, environment: [
            "CREDENTIALS_DIRECTORY": dir.path, "OPENAI_API_KEY": "sk-from-env",
        ])
        #expect(key?.value == "sk-from-file")
    }

    @Test func environmentIsTheFallback() {
        #expect(CredentialResolver.apiKey(for: provider, environment: ["OPENAI_API_KEY": "sk-env"])?.value == "sk-env")
        #expect(CredentialResolver.apiKey(for: provider, environment: ["CREDENTIALS_DIRECTORY": "/nonexistent"]) == nil)
        #expect(CredentialResolver.apiKey(for: provider, environment: ["OPENAI_API_KEY": "  "]) == nil)
    }

    /// A key file that is there but cannot be read (here: not UTF-8; a directory or no permission alike) is named
    /// as unreadable, so the daemon can log a configuration error, and the key counts as missing.
    @Test func anUnreadableKeyFileIsReportedByName() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("creds-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data([0xFF, 0xFE, 0x00, 0x41]).write(to: dir.appendingPathComponent("openai_api_key"))
        let env = ["CREDENTIALS_DIRECTORY": dir.path]
        #expect(CredentialResolver.unreadableCredentials(for: provider, environment: env) == ["openai_api_key"])
        #expect(CredentialResolver.apiKey(for: provider, environment: env) == nil)
        try "sk-ok".write(to: dir.appendingPathComponent("openai_api_key"), atomically: true, encoding: .utf8)
        #expect(CredentialResolver.unreadableCredentials(for: provider, environment: env).isEmpty)
        #expect(CredentialResolver.unreadableCredentials(for: provider, environment: [:]).isEmpty)
    }

    @Test func secretsDoNotPrint() {
        let s = Secret("sk-very-secret")
        #expect("\(s)" == "<redacted>")
        #expect(String(reflecting: s) == "<redacted>")
        #expect(!"\([s])".contains("sk-very"))
    }
}

@Suite struct ResilienceConfigTests {
    /// The seed article's retry_config shape, verbatim keys and plain-number seconds.
    @Test func retryConfigBreakerBudgetAndFallbackOn() throws {
        let c = try ConfigLoader.parse("""
            providers:
              openai:
                kind: openai
                base_url: https://api.openai.com/v1
                api_key_env: OPENAI_API_KEY
                retry_config:
                  retryable_status_codes: [429, 500, 502, 503, 504]
                  retry_count: 3
                  backoff_strategy: exponential
                  backoff_base: 1.0
                  backoff_max: 60.0
                  jitter: true
                  respect_rate_limits: true
                  max_retry_wait: 2s
                  non_retryable_error_codes: [insufficient_quota]
                circuit_breaker:
                  failure_threshold: 7
                  rolling_window: 1m
                  failure_rate_threshold: 0.4
                  minimum_calls: 30
                  timeout_period: 45s
                  half_open_max_calls: 2
                  success_threshold: 3
                  slow_call_threshold: 20s
                retry_budget: {ratio: 0.1, min_retries_per_second: 5, window: 20s}
            routes:
              default:
                - {provider: openai, model: gpt-4-turbo}
                - {provider: openai, model: gpt-4}
              strict:
                targets:
                  - {provider: openai, model: gpt-4o}
                fallback_on: [transient, auth]
            """)
        let p = try #require(c.providers["openai"])
        #expect(p.classifier.retryableStatusCodes == [429, 500, 502, 503, 504])
        #expect(p.classifier.nonRetryableErrorCodes == ["insufficient_quota"])
        #expect(p.retry.retryCount == 3)
        #expect(p.retry.backoffStrategy == .exponential)
        #expect(p.retry.backoffBase == .seconds(1))
        #expect(p.retry.backoffMax == .seconds(60))
        #expect(p.retry.jitter && p.retry.respectRateLimits)
        #expect(p.retry.maxRetryWait == .seconds(2))
        #expect(p.breaker == BreakerPolicy(failureThreshold: 7, rollingWindow: .seconds(60), failureRateThreshold: 0.4,
                                           minimumCalls: 30, timeoutPeriod: .seconds(45), halfOpenMaxCalls: 2,
                                           successThreshold: 3, slowCallThreshold: .seconds(20)))
        #expect(p.retryBudget.ratio == 0.1 && p.retryBudget.minRetriesPerSecond == 5)
        #expect(p.retryBudget.window == .seconds(20))
        #expect(c.routes["default"]?.targets.map(\.model) == ["gpt-4-turbo", "gpt-4"])
        #expect(c.routes["default"]?.fallback == FallbackPolicy())
        #expect(c.routes["strict"]?.fallback.fallbackOn == [.transient, .auth])
    }

    /// The defaults that hold at load, and the two keys that turn things off: `max_retry_wait: 0s` (never nap
    /// while another target is ready) and `circuit_breaker: {enabled: false}`.
    @Test func loadDefaultsAndOffSwitches() throws {
        let defaults = try ConfigLoader.parse("""
            providers:
              p: {kind: openai, base_url: "http://127.0.0.1:1/v1", api_key_env: K}
            routes:
              default: [{provider: p, model: m}]
            """)
        let d = try #require(defaults.providers["p"])
        #expect(d.retry.maxRetryWait == .zero)
        #expect(d.breaker.enabled && d.breaker.minimumCalls == 100 && d.breaker.failureThreshold == 5)
        #expect(d.breaker.failureRateThreshold == 0.5 && d.breaker.rollingWindow == .seconds(30))
        #expect(d.retryBudget.ratio == 0.5 && d.retryBudget.minRetriesPerSecond == 2)
        let off = try ConfigLoader.parse("""
            providers:
              p:
                kind: openai
                base_url: "http://127.0.0.1:1/v1"
                api_key_env: K
                retry_config: {max_retry_wait: 0s}
                circuit_breaker: {enabled: false}
            routes:
              default: [{provider: p, model: m}]
            """)
        let o = try #require(off.providers["p"])
        #expect(o.retry.maxRetryWait == .zero && !o.breaker.enabled)
        #expect(throws: ConfigError.self) {
            try ConfigLoader.parse("""
                providers:
                  p: {kind: openai, base_url: "http://x/v1", api_key_env: K, retry_config: {backoff_base: 0s}}
                routes:
                  default: [{provider: p, model: m}]
                """)
        }
    }

    @Test func resilienceErrorsHaveLines() {
        do {
            _ = try ConfigLoader.parse("""
                providers:
                  openai:
                    kind: openai
                    base_url: https://api.openai.com/v1
                    retry_config:
                      retryable_status_codes: [429, 999]
                      backoff_strategy: fibonacci
                      jitter: maybe
                    circuit_breaker:
                      failure_rate_threshold: 1.5
                      half_open: 3
                routes:
                  default:
                    targets: [{provider: openai, model: m}]
                    fallback_on: [transient, sometimes]
                """, file: "r.yaml")
            Issue.record("bad resilience config accepted")
        } catch {
            let lines = Set(error.issues.map(\.line))
            #expect(lines.isSuperset(of: [6, 7, 8, 10, 11, 15]), "\(error)")
        }
    }
}
