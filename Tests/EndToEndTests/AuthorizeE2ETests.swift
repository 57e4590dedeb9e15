import BreakwaterClient
import FakeProviderKit
import Foundation
import Governance
import JournalTestKit
import Testing

/// AUTHORIZE through the Swift shim against a real daemon writing to a real journald: an approval granted from the
/// CLI in another process, bound to the arguments; every new audit kind by MESSAGE_ID, with the argument hash and
/// the shown fields — and none of the hidden argument values anywhere in the journal.
@Suite(.serialized, .timeLimit(.minutes(3))) struct AuthorizeE2ETests {
    static let token = "test-authorize-token-0123456789abcdef"
    static let hidden = "hidden-card-number-4111111111111111"
    static let ids = [
        "action_requested": "cfbd6982332d46dd9d03936c097340fd", "action_allowed": "49aaba552a1d4a448bbc53bc8387c1bc",
        "action_denied": "fb205ea05474400589747e74ddb60c9a", "approval_reused": "1c7038dd8141426982aa335795056b89",
        "approval_requested": "8353bc8d838348eaa049b1ef2df0b64a", "approval_granted": "2475c642fa3c431085a41a37f0e0a365",
        "tool_call_blocked": "ccbde119e9d441009f2b997fae28ac8e",
    ]

    static var policy: String {
        let now = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-60))
        return """
            anonymous: deny
            approvers: {uids: [0]}
            allow_self_approval: true
            agents:
              refund-agent:
                agent_identity:
                  credentials: [{name: t1, token_sha256: \(CredentialDigest.policyValue(forToken: token)), \
            issued_at: \(now), validity_window: 1h}]
                scopes: {actions: [refund.issue, chat.reply], routes: [default], models: ["*"]}
                relationships: [{agent_to_tenant: acme}]
            tool_actions: {wipe_disk: disk.wipe}
            conditional_controls:
              destructive_changes:
                actions: [refund.issue]
                require_approval: true
                approval_timeout: 20s
                approval_reusable_for: 1m
                show_arguments: [amount, invoice]
            """
    }

    @Test func anApprovedActionAndItsAuditTrail() async throws {
        try await JournalHarness.withHarness { journal in
            let d = try await DaemonUnderTest.start(policy: Self.policy, wrap: { journal.command($0, $1) })
            defer { d.stop() }
            var configuration = BreakwaterClient.Configuration(socketPath: d.socket, credential: Array(Self.token.utf8))
            configuration.reconnectAttempts = 1
            let client = BreakwaterClient(configuration: configuration)
            let arguments = Array(#"{"invoice":"1182","amount":40,"card":"\#(Self.hidden)"}"#.utf8)

            let ids = IDBox()
            let pending = Task {
                try await client.authorize(action: "refund.issue", tenant: "acme", arguments: arguments,
                                           onNotice: { ids.add($0.approvalID ?? "") })
            }
            #expect(try await waitUntil { ids.count == 1 })
            let approve = try ChildProcess(binDir + "/breakwater", ["approve", ids.all[0], "--socket", d.socket],
                                           logPath: d.dir + "/approve.log")
            #expect(try await approve.waitForExit() == 0, "\(approve.output)")
            let decision = try await pending.value
            #expect(decision.approvalID == ids.all[0] && decision.decisionID.hasPrefix("dec-"))
            // Canonical JSON: keys sorted, no whitespace.
            let canonical = #"{"amount":40,"card":"\#(Self.hidden)","invoice":"1182"}"#
            #expect(decision.argumentHash == CredentialDigest(hashing: Array(canonical.utf8)).hex)

            // Reused within the window (same arguments, keys in another order): allowed at once.
            let reordered = Array(#"{"amount":40,"card":"\#(Self.hidden)","invoice":"1182"}"#.utf8)
            let again = try await client.authorize(action: "refund.issue", tenant: "acme", arguments: reordered)
            #expect(again.approvalID == ids.all[0] && again.argumentHash == decision.argumentHash)
            // Another tenant: refused before any approval.
            await #expect { _ = try await client.authorize(action: "refund.issue", tenant: "globex") } throws: {
                ($0 as? BreakwaterError)?.code == .forbidden
            }

            // A model answer calling a tool out of scope: TOOL_CALL_BLOCKED, audited with the tool's name.
            d.fake.script([FaultStep(toolCall: "wipe_disk")])
            let tools = Array(#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","#
                .utf8) + Array(#""function":{"name":"wipe_disk"}}]}"#.utf8)
            await #expect { _ = try await client.send(route: "default", body: tools, action: "chat.reply",
                                                      tenant: "acme") } throws: {
                ($0 as? BreakwaterError)?.code == .toolCallBlocked
            }
            #expect(d.fake.stats().toolsOffered.isEmpty, "the out-of-scope tool was taken out of the request")

            for (kind, id) in Self.ids {
                let found = try await journal.waitForEntries(count: 1, matching: ["MESSAGE_ID": id])
                #expect(!found.isEmpty, "no \(kind) entry")
            }
            let requested = try journal.entries(matching: ["MESSAGE_ID": Self.ids["approval_requested"]!])
            #expect(requested.first?["ARGUMENT_HASH"] == decision.argumentHash)
            #expect(requested.first?["SHOWN_ARGUMENTS"] == #"{"amount":40,"invoice":"1182"}"#,
                    "\(requested.first.map { "\($0)" } ?? "none")")
            let allowed = try journal.entries(matching: ["MESSAGE_ID": Self.ids["action_allowed"]!])
            #expect(allowed.contains { $0["DECISION_ID"] == decision.decisionID && $0["AGENT"] == "refund-agent"
                && $0["ACTION"] == "refund.issue" && $0["APPROVAL_ID"] == ids.all[0] })
            let denied = try journal.entries(matching: ["MESSAGE_ID": Self.ids["action_denied"]!])
            #expect(denied.first?["TENANT"] == "globex" && denied.first?["DECISION"] == "deny")
            let reused = try journal.entries(matching: ["MESSAGE_ID": Self.ids["approval_reused"]!])
            #expect(reused.first?["APPROVAL_ID"] == ids.all[0] && reused.first?["ARGUMENT_HASH"] == decision.argumentHash)

            let blocked = try journal.entries(matching: ["MESSAGE_ID": Self.ids["tool_call_blocked"]!])
            #expect(blocked.count == 2 && blocked.allSatisfy { $0["TOOL_NAME"] == "wipe_disk" },
                    "removed from the request, then called by the model")
            let text = try journal.entries().map { "\($0)" }.joined(separator: "\n")
            #expect(!text.contains(Self.hidden), "a hidden argument reached the journal")
            #expect(!text.contains(Self.token))
            print("authorize journal: approval bound to \(decision.argumentHash.prefix(12))…, reused once, "
                + "every new kind present, hidden arguments absent")
        }
    }
}
