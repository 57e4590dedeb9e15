import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// SIGHUP (`systemctl reload`) re-reads the config, the policy and the provider keys; a bad config is refused whole
/// and the running one stays; calls in flight finish on the route they started with.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ReloadTests {
    /// Rewrites the daemon's config with `routes`, sends SIGHUP, and waits for the daemon's log to say how it went.
    static func reload(_ d: DaemonUnderTest, routes: String? = nil, raw: String? = nil,
                       expect line: String = "reloaded") async throws {
        let config = d.dir + "/breakwater.yaml"
        var text = try String(contentsOfFile: config, encoding: .utf8)
        if let routes {
            let start = text.range(of: "routes:\n")!
            text = String(text[..<start.lowerBound]) + "routes:\n" + routes + "\n"
        }
        try (raw ?? text).write(toFile: config, atomically: true, encoding: .utf8)
        let before = d.daemon.output.components(separatedBy: line).count
        d.daemon.signal(SIGHUP)
        let done = try await waitUntil { d.daemon.output.components(separatedBy: line).count > before }
        try #require(done, "no \"\(line)\" in the log after SIGHUP:\n\(d.daemon.output)")
    }

    @Test func reloadAppliesAChangedFallbackChain() async throws {
        let d = try await DaemonUnderTest.start(routes: "  default:\n    - provider: fake\n      model: model-a")
        defer { d.stop() }
        let client = d.client()
        #expect(try await client.send(route: "default", body: chat("before")).head.model == "model-a")

        // A new chain: model-b first, model-a as fallback; and a new route.
        try await Self.reload(d, routes: """
              default:
                - provider: fake
                  model: model-b
                - provider: fake
                  model: model-a
              second:
                - provider: fake
                  model: model-c
            """)
        #expect(try await client.send(route: "default", body: chat("after")).head.model == "model-b")
        #expect(try await client.send(route: "second", body: chat("new route")).head.model == "model-c")
        // The fallback is live too: model-b failing for good sends the call on to model-a.
        d.fake.script([FaultStep(status: 500), FaultStep(status: 500), FaultStep(status: 500)])
        let r = try await client.send(route: "default", body: chat("fallback"))
        #expect(r.head.model == "model-a" && r.head.attempts == 4, "\(r.head)")
        d.assertNoSecretsInLog()
    }

    @Test func badConfigIsRefusedAndTheRunningOneStays() async throws {
        let d = try await DaemonUnderTest.start(routes: "  default:\n    - provider: fake\n      model: model-a")
        defer { d.stop() }
        let client = d.client()
        _ = try await client.send(route: "default", body: chat("before"))
        let config = d.dir + "/breakwater.yaml"
        let good = try String(contentsOfFile: config, encoding: .utf8)
        // Line 3 names an unknown provider kind; the last line routes to a provider that does not exist.
        let bad = good.replacingOccurrences(of: "kind: openai", with: "kind: martian")
            + "  other:\n    - provider: nowhere\n      model: x\n"
        try await Self.reload(d, raw: bad, expect: "reload refused")
        #expect(d.daemon.output.contains("\(config):3:"), "the error names file and line:\n\(d.daemon.output)")
        // The old config still serves, and the refused route does not exist.
        #expect(try await client.send(route: "default", body: chat("still")).head.model == "model-a")
        await #expect { _ = try await client.send(route: "other", body: chat("x")) } throws: { e in
            (e as? BreakwaterError)?.code == .unknownRoute
        }
        // A fixed config is taken on the next reload.
        try await Self.reload(d, raw: good.replacingOccurrences(of: "model: model-a", with: "model: model-z"))
        #expect(try await client.send(route: "default", body: chat("fixed")).head.model == "model-z")
    }

    /// The cluster store's client starts with the daemon: a reload that adds `cluster:` (and moves a provider's
    /// limits to it) is refused whole, and the running config keeps serving without one.
    @Test func addingAClusterStoreNeedsARestart() async throws {
        let d = try await DaemonUnderTest.start(routes: "  default:\n    - provider: fake\n      model: model-a")
        defer { d.stop() }
        let client = d.client()
        _ = try await client.send(route: "default", body: chat("before"))
        let config = d.dir + "/breakwater.yaml"
        let good = try String(contentsOfFile: config, encoding: .utf8)
        let clustered = good.replacingOccurrences(of: "model: model-a", with: "model: model-b")
            + "\ncluster:\n  redis: unix://\(d.dir)/redis.sock\n"
        try await Self.reload(d, raw: clustered, expect: "reload refused: adding, removing or changing cluster:")
        #expect(try await client.send(route: "default", body: chat("still")).head.model == "model-a")
        let cluster = try await d.status()["cluster"] as? [String: Any]
        #expect(cluster?["configured"] as? Bool == false)
    }

    @Test func callsInFlightFinishOnTheRouteTheyStartedWith() async throws {
        let d = try await DaemonUnderTest.start(routes: "  default:\n    - provider: fake\n      model: model-a")
        defer { d.stop() }
        let client = d.client()
        d.fake.script([FaultStep(delayFirstByteMs: 1500)])
        let slow = Task { try await client.send(route: "default", body: chat("slow")) }
        #expect(try await waitUntil { d.fake.stats().requests == 1 })
        try await Self.reload(d, routes: "  default:\n    - provider: fake\n      model: model-b")
        #expect(try await client.send(route: "default", body: chat("new")).head.model == "model-b")
        let old = try await slow.value
        #expect(old.head.model == "model-a")
        #expect(content(old.body) == "Echo: slow")
    }

    /// Provider keys are re-read too: a key dropped into $CREDENTIALS_DIRECTORY is used after the reload.
    @Test func reloadRereadsCredentials() async throws {
        let creds = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: creds) }
        let fake = try await FakeProvider.start()
        let d = try await DaemonUnderTest.start(withKey: false, providerBlock: """
              fake:
                kind: openai
                base_url: \(fake.baseURL)
                api_key_credential: fake_key
            """, environment: ["CREDENTIALS_DIRECTORY": creds])
        defer {
            d.stop()
            Task { try? await fake.shutdown() }
        }
        let client = d.client()
        await #expect { _ = try await client.send(route: "default", body: chat("no key yet")) } throws: { e in
            (e as? BreakwaterError)?.code == .noCredential
        }
        try "sk-rotated-key-0123456789".write(toFile: creds + "/fake_key", atomically: true, encoding: .utf8)
        try await Self.reload(d)
        let r = try await client.send(route: "default", body: chat("with key"))
        #expect(content(r.body) == "Echo: with key")
        #expect(!d.daemon.output.contains("sk-rotated-key"))
    }

    /// A reload that takes keys away (and changes the rate limits) gets a fresh key pool: no call picks a key
    /// that no longer exists.
    @Test func reloadWithFewerKeys() async throws {
        let d = try await DaemonUnderTest.start(providerOptions: """
                rate_limits: {rpm: 6000}
                api_keys:
                  - {env: BW_KEY_2}
                  - {env: BW_KEY_3}
            """, environment: ["BW_KEY_2": "sk-second-key-0123456789", "BW_KEY_3": "sk-third-key-0123456789"])
        defer { d.stop() }
        let client = d.client()
        for i in 0..<5 { _ = try await client.send(route: "default", body: chat("three keys \(i)")) }
        // A call on the old config across the reload: its first attempt fails after the reload, so its retry
        // takes a key from the pool the new config built.
        d.fake.script([FaultStep(status: 503, delayFirstByteMs: 1000)])
        let across = Task { try await client.send(route: "default", body: chat("across the reload")) }
        #expect(try await waitUntil { d.fake.stats().requests == 6 })
        let config = d.dir + "/breakwater.yaml"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        let oneKey = text.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.contains("api_keys") && !$0.contains("BW_KEY_") && !$0.contains("rate_limits") }
            .joined(separator: "\n")
        try await Self.reload(d, raw: oneKey)
        let r = try await across.value
        #expect(content(r.body) == "Echo: across the reload" && r.head.attempts == 2, "\(r.head)")
        for i in 0..<5 {
            let r = try await client.send(route: "default", body: chat("one key \(i)"))
            #expect(content(r.body) == "Echo: one key \(i)")
        }
    }
}
