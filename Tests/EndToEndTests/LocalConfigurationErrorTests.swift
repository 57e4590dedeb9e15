import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

/// Failures that are this host's own doing — here a `ca_file` that does not exist — are configuration errors:
/// never retried, never counted in the provider's breaker or retry budget, reported to the app as
/// CONFIGURATION_ERROR and to the log as an error to fix; a fallback still answers.
@Suite(.serialized, .timeLimit(.minutes(1))) struct LocalConfigurationErrorTests {
    @Test func aBadCAFileNeverReachesTheBreakerOrTheBudget() async throws {
        let rig = try await ChaosRig.start(
            primaryOptions: """
                    ca_file: /nonexistent/breakwater-test-ca.pem
                    retry_config: {retry_count: 3}
                    circuit_breaker: {failure_threshold: 1}
                """,
            routes: """
                  default:
                    - {provider: primary, model: gpt-4o}
                    - {provider: fallback, model: gpt-4o-mini}
                  solo:
                    - {provider: primary, model: gpt-4o}
                """,
            primaryBaseURL: "https://127.0.0.1:PORT/v1")
        defer { rig.stop() }
        let client = rig.client()
        for i in 0..<5 {
            let r = try await client.send(route: "default", body: chat("via fallback \(i)"))
            #expect(r.head.provider == "fallback")
        }
        var codes: [String] = []
        for _ in 0..<3 {
            do {
                _ = try await client.send(route: "solo", body: chat("no fallback"))
                Issue.record("a call through a broken ca_file succeeded")
            } catch {
                codes.append(error.code?.name ?? "\(error.kind)")
                #expect(error.message.contains("could not be made"), "\(error.message)")
                #expect(!error.message.contains(DaemonUnderTest.apiKey))
            }
        }
        #expect(codes == Array(repeating: "CONFIGURATION_ERROR", count: 3))
        #expect(rig.primary.stats().requests == 0, "nothing reached the provider")

        // The provider's breaker and budget heard nothing: no opening, no retry, no first attempt.
        let status = try #require(try JSONSerialization.jsonObject(with: Data(try await client.admin("status")))
            as? [String: Any])
        let engine = (status["resilience"] as? [[String: Any]]) ?? []
        let primary = engine.first { $0["provider"] as? String == "primary" }
        #expect((primary?["first_attempts"] as? Int ?? 0) == 0, "\(engine)")
        #expect((primary?["retries"] as? Int ?? 0) == 0, "\(engine)")
        #expect((primary?["breaker_openings"] as? Int ?? 0) == 0, "\(engine)")
        #expect((status["open_breakers"] as? [Any])?.isEmpty == true, "\(status)")
        let breakers = try #require(try JSONSerialization.jsonObject(with: Data(try await client.admin("breakers")))
            as? [String: Any])
        let row = (breakers["breakers"] as? [[String: Any]])?.first { $0["target"] as? String == "primary/gpt-4o" }
        #expect((row?["calls"] as? Int ?? 0) == 0, "\(breakers)")
        // Each call tried the broken target once (no retry), and the log says it is a configuration error.
        let lines = rig.daemon.output.split(separator: "\n").filter { $0.contains("configuration error") }
        #expect(lines.count == 8, "\(rig.daemon.output)")
        #expect(!rig.daemon.output.contains(DaemonUnderTest.apiKey))
    }
}
