import Config
import Foundation
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
        #expect(c.routes["default"] == [RouteTarget(provider: "openai", model: "gpt-4o-mini"),
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

    @Test(arguments: ["", "s", "5x", "-1s", "ms5", "five seconds"])
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

    @Test func secretsDoNotPrint() {
        let s = Secret("sk-very-secret")
        #expect("\(s)" == "<redacted>")
        #expect(String(reflecting: s) == "<redacted>")
        #expect(!"\([s])".contains("sk-very"))
    }
}
