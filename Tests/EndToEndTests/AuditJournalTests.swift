import BreakwaterClient
import FakeProviderKit
import Foundation
import JournalTestKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The audit trail in a real systemd-journald: calls that hit each decision kind, read back with
/// `journalctl -o json`, checked by MESSAGE_ID and fields — and no token, key, prompt or completion anywhere.
@Suite(.serialized, .timeLimit(.minutes(3))) struct AuditJournalTests {
    static let ids: [String: String] = [
        "identity_check": "74dd06e1e3784b888107e7c15a87f4f9", "policy_decision": "34340cbcb98844868ddc65a13a700ff8",
        "approval_requested": "8353bc8d838348eaa049b1ef2df0b64a", "approval_expired": "fb11bb6745ff40ef8bdc4deebf928cbc",
        "step_up_demanded": "0332ccb51bfb445f857f870367c5df99", "rate_limit_refused": "5a01b30b36674301be457c7b6dc79cc7",
        "budget_refused": "df98f06572684cca89710f4ce720605e", "upstream_attempt": "e50044f9b4c545e2a09b4927ea5b02eb",
        "retry": "ed4ebe4b38dd46f8b08fe465ab9d1d0d", "call_completed": "f91d955ff15343e4b82e60d0aa363d11",
        "approval_granted": "2475c642fa3c431085a41a37f0e0a365", "approval_denied": "4e77d9c54fb04d4cb9bf18eecbf0d97c",
        "concurrency_limit_refused": "b143d4138c6f4bf5b45c70448b9347be",
        "fallback": "b61db148d5d040ea81f43714100575bf", "breaker_transition": "1f979a8598b64c5588d8a5ef26f7152d",
    ]
    static let secretPrompt = "the-secret-prompt-text-4711"

    @Test func everyDecisionKindIsInTheJournalWithItsFields() async throws {
        try await JournalHarness.withHarness { journal in
            // Two targets on the fake: a primary whose breaker opens after 1 failed call, and a fallback model.
            let d = try await DaemonUnderTest.start(
                routes: "  default:\n    - {provider: fake, model: gpt-4o-mini}\n"
                    + "  chain:\n    - {provider: fake, model: gpt-4o}\n    - {provider: fake, model: gpt-4o-mini}",
                policy: GovernanceE2ETests.policy(approvalTimeout: "3s"),
                providerOptions: "    circuit_breaker: {failure_threshold: 1}", wrap: { journal.command($0, $1) })
            defer { d.stop() }
            func client(_ token: String) -> BreakwaterClient {
                var c = BreakwaterClient.Configuration(socketPath: d.socket, credential: Array(token.utf8))
                c.reconnectAttempts = 1
                return BreakwaterClient(configuration: c)
            }
            let prompt = chat(Self.secretPrompt)
            // Identity refused; allowed call (with one retry upstream); out of scope; step-up demanded;
            // rate limit; approval expired; budget refused.
            _ = try? await client("wrong-token").send(route: "default", body: prompt)
            d.fake.script([FaultStep(status: 503)])
            let invoice = client(GovernanceE2ETests.invoiceToken)
            _ = try await invoice.send(route: "default", body: prompt, action: "invoice.create", tenant: "acme")
            _ = try? await invoice.send(route: "default", body: prompt, action: "refund.issue", tenant: "acme")
            let export = client(GovernanceE2ETests.exportToken)
            _ = try? await export.send(route: "default", body: prompt, action: "user.export")
            _ = try await export.send(route: "default", body: prompt, action: "user.export",
                                      stepUpToken: GovernanceE2ETests.stepUpToken)
            _ = try? await export.send(route: "default", body: prompt, action: "user.export",
                                       stepUpToken: GovernanceE2ETests.stepUpToken)
            // Approvals: one granted and one denied from the CLI in another process, one left to expire.
            let refund = client(GovernanceE2ETests.refundToken)
            for verdict in ["approve", "deny", "expire"] {
                let ids = IDBox()
                let call = Task {
                    try? await refund.send(route: "default", body: prompt, action: "refund.issue", tenant: "acme",
                                           onNotice: { ids.add($0.approvalID ?? "") })
                }
                #expect(try await waitUntil { ids.count == 1 })
                if verdict != "expire" {
                    let cli = try ChildProcess(binDir + "/breakwater", [verdict, ids.all[0], "--socket", d.socket],
                                               logPath: d.dir + "/\(verdict).log")
                    #expect(try await cli.waitForExit() == 0, "\(cli.output)")
                }
                _ = await call.value
            }
            // Fallback and a breaker opening: the primary (gpt-4o) answers 503 three times (the first attempt and
            // its two retries); the call leaves it failed, which opens its breaker (failure_threshold 1), and falls
            // back to gpt-4o-mini.
            let ops = client(GovernanceE2ETests.opsToken)
            d.fake.script([FaultStep(status: 503), FaultStep(status: 503), FaultStep(status: 503)])
            _ = try await ops.send(route: "chain", body: prompt, action: "ops.check")
            // Concurrency: ops-agent may have one call in flight.
            d.fake.script([FaultStep(delayFirstByteMs: 1500)])
            let slow = Task { try? await ops.send(route: "default", body: prompt, action: "ops.check") }
            #expect(try await waitUntil { d.fake.stats().inFlight == 1 })
            _ = try? await ops.send(route: "default", body: prompt, action: "ops.check")
            _ = await slow.value
            let big = Array(try JSONSerialization.data(withJSONObject: [
                "messages": [["role": "user", "content": Self.secretPrompt]], "max_tokens": 1000,
            ]))
            _ = try? await client(GovernanceE2ETests.budgetToken).send(route: "default", body: big)

            for (kind, id) in Self.ids {
                let found = try await journal.waitForEntries(count: 1, matching: ["MESSAGE_ID": id])
                #expect(!found.isEmpty, "no \(kind) entry")
            }
            let refusedIdentity = try journal.entries(matching: ["MESSAGE_ID": Self.ids["identity_check"]!,
                                                                 "DECISION": "deny"])
            #expect(refusedIdentity.first?["REASON"] == "unknown_credential")
            #expect(refusedIdentity.first?["PEER_UID"] == "\(getuid())")
            let denied = try journal.entries(matching: ["MESSAGE_ID": Self.ids["policy_decision"]!, "DECISION": "deny"])
            #expect(denied.contains { $0["AGENT"] == "invoice-agent" && $0["ACTION"] == "refund.issue"
                && $0["TENANT"] == "acme" && ($0["RULE"] ?? "").isEmpty == false && $0["REQUEST_ID"] != nil })
            #expect(denied.allSatisfy { ($0.priority ?? 9) <= 5 }, "denials are at notice priority or higher")
            let granted = try journal.entries(matching: ["MESSAGE_ID": Self.ids["approval_granted"]!])
            #expect(granted.first?["APPROVER_UID"] == "\(getuid())" && granted.first?["APPROVAL_ID"] != nil)
            let opened = try journal.entries(matching: ["MESSAGE_ID": Self.ids["breaker_transition"]!,
                                                        "BREAKER_TO": "open"])
            #expect(opened.first?["BREAKER"] == "fake/gpt-4o" && (opened.first?.priority ?? 9) <= 4,
                    "breaker openings are at warning priority or higher")
            let limited = try journal.entries(matching: ["MESSAGE_ID": Self.ids["rate_limit_refused"]!])
            #expect(Int(limited.first?["RETRY_AFTER_MS"] ?? "0") ?? 0 > 1000)
            let attempts = try journal.entries(matching: ["MESSAGE_ID": Self.ids["upstream_attempt"]!])
            #expect(attempts.contains { $0["STATUS"] == "503" && $0["PROVIDER"] == "fake" })
            #expect(attempts.contains { $0["STATUS"] == "200" && $0["MODEL"] == "gpt-4o-mini" })

            // Nothing secret, anywhere in the journal.
            let everything = try journal.entries()
            let text = everything.map { "\($0)" }.joined(separator: "\n")
            for secret in [GovernanceE2ETests.invoiceToken, GovernanceE2ETests.exportToken,
                           GovernanceE2ETests.stepUpToken, GovernanceE2ETests.refundToken, DaemonUnderTest.apiKey,
                           Self.secretPrompt, "Echo: "] {
                #expect(!text.contains(secret), "\(secret) reached the journal")
            }
            print("audit journal: \(everything.count) entries, every decision kind present, no secrets")
        }
    }

    /// A failure rate over `alert_failure_rate` (while the breaker stays closed) raises one warning-level entry.
    @Test func failureRateAlertAtWarningPriority() async throws {
        try await JournalHarness.withHarness { journal in
            let d = try await DaemonUnderTest.start(
                providerOptions: "    circuit_breaker: {failure_threshold: 1000, minimum_calls: 8, "
                    + "failure_rate_threshold: 0.9, alert_failure_rate: 0.25}",
                wrap: { journal.command($0, $1) })
            defer { d.stop() }
            let c = d.client()
            for i in 0..<5 { _ = try await c.send(route: "default", body: chat("ok \(i)")) }
            // One call whose three attempts (two retries) all fail: 3 failures in 8 calls = 37.5%.
            d.fake.script([FaultStep(status: 503), FaultStep(status: 503), FaultStep(status: 503)])
            _ = try? await c.send(route: "default", body: chat("fails"))
            let alerts = try await journal.waitForEntries(count: 1, matching: ["MESSAGE_ID": "374e785366e546d7aba94dc3f85592b5"])
            #expect(alerts.count == 1)
            #expect((alerts.first?.priority ?? 9) <= 4)
            #expect(alerts.first?["BREAKER"] == "fake/gpt-4o-mini")
            #expect(alerts.first?["FAILURE_RATE"] == "0.375")
        }
    }
}
