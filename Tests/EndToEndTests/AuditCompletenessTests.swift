import BreakwaterClient
import FakeProviderKit
import Foundation
import JournalTestKit
import Synchronization
import Testing

/// The audit completeness run: calls with a mix of outcomes, paced at 1,000 calls/s for 30 s (BW_AUDIT_SECONDS
/// and BW_AUDIT_RATE change it), must leave exactly the expected number of journal entries of each kind, with
/// zero entries the daemon could not write.
@Suite(.serialized, .timeLimit(.minutes(5))) struct AuditCompletenessTests {
    @Test func everyCallLeavesExactlyItsEntries() async throws {
        let env = ProcessInfo.processInfo.environment
        let seconds = Double(env["BW_AUDIT_SECONDS"] ?? "30") ?? 30
        let rate = Double(env["BW_AUDIT_RATE"] ?? "1000") ?? 1000
        let total = Int(seconds * rate)
        // 10% of upstream answers are 400s (not retried, so each call makes exactly one attempt).
        let personality = Personality(name: "some-400s", faults: [
            ProbabilisticFault(probability: 0.1, step: FaultStep(status: 400)),
        ], seed: 11, rateLimitRequests: 1_000_000_000, rateLimitTokens: 1_000_000_000_000)
        try await JournalHarness.withHarness { journal in
            let d = try await DaemonUnderTest.start(fakePersonality: personality, policy: GovernanceE2ETests.policy(),
                                                    wrap: { journal.command($0, $1) })
            defer { d.stop() }
            let connections = 4
            let clients = (0..<connections).map { _ in
                BreakwaterClient(socketPath: d.socket, credential: GovernanceE2ETests.invoiceToken, clientName: "load")
            }
            let tally = Tally()
            let start = ContinuousClock.now
            await withTaskGroup(of: Void.self) { group in
                for w in 0..<64 {
                    group.addTask {
                        while true {
                            let i = tally.next.add(1, ordering: .relaxed).oldValue
                            guard i < total else { return }
                            // Paced: call i starts at start + i / rate.
                            try? await Task.sleep(until: start + .nanoseconds(Int64(Double(i) / rate * 1e9)))
                            let forbidden = i % 10 == 0
                            let kind: String
                            do {
                                _ = try await clients[w % connections].send(
                                    route: "default", body: chat("load \(i)"),
                                    action: forbidden ? "refund.issue" : "invoice.create", tenant: "acme")
                                kind = "ok"
                            } catch let error as BreakwaterError {
                                kind = error.code?.name ?? "\(error.kind)"
                            } catch {
                                kind = "\(error)"
                            }
                            tally.outcome.withLock { $0[kind, default: 0] += 1 }
                        }
                    }
                }
            }
            let elapsed = ContinuousClock.now - start
            let counts = tally.outcome.withLock { $0 }
            let ok = counts["ok"] ?? 0
            let upstream = counts["UPSTREAM_ERROR"] ?? 0
            let forbidden = counts["FORBIDDEN"] ?? 0
            #expect(ok + upstream + forbidden == total, "unexpected outcomes: \(counts)")

            let ids = AuditJournalTests.ids
            let completedMatch = ["MESSAGE_ID": ids["call_completed"]!]
            let completed = try await journal.waitForEntries(count: total, matching: completedMatch,
                                                            timeout: .seconds(120)).count
            let expected: [(String, [String: String], Int)] = [
                ("identity_check allow", ["MESSAGE_ID": ids["identity_check"]!, "DECISION": "allow"], connections),
                ("policy_decision allow", ["MESSAGE_ID": ids["policy_decision"]!, "DECISION": "allow"], ok + upstream),
                ("policy_decision deny", ["MESSAGE_ID": ids["policy_decision"]!, "DECISION": "deny"], forbidden),
                ("upstream_attempt", ["MESSAGE_ID": ids["upstream_attempt"]!], ok + upstream),
                ("upstream_attempt status 400", ["MESSAGE_ID": ids["upstream_attempt"]!, "STATUS": "400"], upstream),
                ("call_completed ok", ["MESSAGE_ID": ids["call_completed"]!, "OUTCOME": "ok"], ok),
                ("call_completed error", ["MESSAGE_ID": ids["call_completed"]!, "OUTCOME": "error"],
                 upstream + forbidden),
            ]
            var report: [String] = []
            for (name, match, want) in expected {
                let got = try journal.count(matching: match)
                report.append("\(name) \(got)/\(want)")
                #expect(got == want, "\(name): \(got) entries, expected \(want)")
            }
            #expect(completed == total)
            let status = try JSONSerialization.jsonObject(
                with: Data(try await BreakwaterClient(socketPath: d.socket).admin("status"))) as? [String: Any]
            let audit = status?["audit"] as? [String: Int] ?? [:]
            #expect(audit["unwritten"] == 0 && audit["dropped"] == 0, "\(audit)")
            let achieved = Double(total) / elapsed.seconds
            print(String(format: "audit completeness: %d calls in %.1f s (%.0f calls/s): ", total, elapsed.seconds,
                         achieved) + report.joined(separator: ", ")
                + "; written \(audit["written"] ?? -1), unwritten \(audit["unwritten"] ?? -1), "
                + "dropped \(audit["dropped"] ?? -1)")
        }
    }
}

/// Shared by the load workers: the next call's index and the outcomes so far.
final class Tally: Sendable {
    let next = Atomic<Int>(0)
    let outcome = Mutex<[String: Int]>([:])
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
