import BreakwaterClient
import FakeProviderKit
import Foundation
import Governance
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runtime enforcement end to end: a real daemon with a policy file, real SO_PEERCRED, the real CLI as a second
/// process for approvals.
@Suite(.serialized, .timeLimit(.minutes(2))) struct GovernanceE2ETests {
    static let invoiceToken = "test-invoice-token-0123456789abcdef"
    static let refundToken = "test-refund-token-0123456789abcdef"
    static let exportToken = "test-export-token-0123456789abcdef"
    static let stepUpToken = "test-step-up-token-0123456789abcdef"
    static let wrongUidToken = "test-wrong-uid-token-0123456789abcdef"
    static let budgetToken = "test-budget-token-0123456789abcdef"
    static let opsToken = "test-ops-token-0123456789abcdef"

    static func policy(approvalTimeout: String = "20s") -> String {
        func h(_ t: String) -> String { CredentialDigest.policyValue(forToken: t) }
        let now = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-60))
        return """
            anonymous: deny
            approvers: {uids: [0]}
            allow_self_approval: true
            agents:
              invoice-agent:
                agent_identity:
                  owner: billing
                  credentials: [{name: t1, token_sha256: \(h(invoiceToken)), issued_at: \(now), validity_window: 1h}]
                  uids: [0]
                scopes: {actions: [invoice.create], routes: [default], models: [gpt-4o-mini]}
                relationships: [{agent_to_tenant: acme}]
              refund-agent:
                agent_identity:
                  owner: support
                  credentials: [{name: t1, token_sha256: \(h(refundToken)), issued_at: \(now), validity_window: 1h}]
                scopes: {actions: [refund.issue], routes: [default], models: ["*"]}
                relationships: [{agent_to_tenant: acme}]
              export-agent:
                agent_identity:
                  owner: privacy
                  credentials: [{name: t1, token_sha256: \(h(exportToken)), issued_at: \(now), validity_window: 1h}]
                  step_up_credentials: [{name: s1, token_sha256: \(h(stepUpToken)), issued_at: \(now)}]
                scopes: {actions: [user.export], routes: ["*"], models: ["*"]}
                relationships: [{agent_to_tenant: "*"}]
              ops-agent:
                agent_identity:
                  credentials: [{name: t1, token_sha256: \(h(opsToken)), issued_at: \(now), validity_window: 1h}]
                scopes: {actions: ["*"], routes: ["*"], models: ["*"]}
                relationships: [{agent_to_tenant: "*"}]
                max_concurrent_calls: 1
              budget-agent:
                agent_identity:
                  credentials: [{name: t1, token_sha256: \(h(budgetToken)), issued_at: \(now), validity_window: 1h}]
                scopes: {actions: ["*"], routes: ["*"], models: ["*"]}
                relationships: [{agent_to_tenant: "*"}]
                budgets: {daily: {tokens: 300}}
              other-uid-agent:
                agent_identity:
                  credentials: [{name: t1, token_sha256: \(h(wrongUidToken)), issued_at: \(now), validity_window: 1h}]
                  uids: [4242]
                scopes: {actions: ["*"], routes: ["*"], models: ["*"]}
                relationships: [{agent_to_tenant: "*"}]
            conditional_controls:
              destructive_changes: {actions: [refund.issue], require_approval: true, approval_timeout: \(approvalTimeout)}
              sensitive_data: {actions: [user.export], step_up_auth: true, max_age: 10m}
              high_risk_actions: {actions: [user.export], rate_limit: 1/min}
            """
    }

    func client(_ d: DaemonUnderTest, _ token: String) -> BreakwaterClient {
        var c = BreakwaterClient.Configuration(socketPath: d.socket, credential: Array(token.utf8), clientName: "gov")
        c.reconnectAttempts = 1
        return BreakwaterClient(configuration: c)
    }

    @Test func identityScopeTenantStepUpAndRateLimit() async throws {
        let d = try await DaemonUnderTest.start(policy: Self.policy())
        defer { d.stop() }

        // Unknown token and a valid token from the wrong uid: refused at HELLO.
        await #expect { _ = try await client(d, "not-a-token").send(route: "default", body: chat("x")) } throws: {
            ($0 as? BreakwaterError)?.code == .unauthenticated
        }
        await #expect { _ = try await client(d, Self.wrongUidToken).send(route: "default", body: chat("x")) } throws: {
            let e = $0 as? BreakwaterError
            return e?.code == .unauthenticated && e?.message.contains("uid_not_allowed") == true
        }

        // In scope, right tenant: allowed.
        let invoice = client(d, Self.invoiceToken)
        let ok = try await invoice.send(route: "default", body: chat("make an invoice"), action: "invoice.create",
                                        tenant: "acme")
        #expect(content(ok.body) == "Echo: make an invoice")
        // Out of scope; wrong tenant: refused before any provider call.
        let before = d.fake.stats().requests
        await #expect { _ = try await invoice.send(route: "default", body: chat("x"), action: "refund.issue",
                                                   tenant: "acme") } throws: {
            ($0 as? BreakwaterError)?.code == .forbidden
        }
        await #expect { _ = try await invoice.send(route: "default", body: chat("x"), action: "invoice.create",
                                                   tenant: "globex") } throws: {
            ($0 as? BreakwaterError)?.code == .forbidden
        }
        #expect(d.fake.stats().requests == before)

        // Step-up: missing → STEP_UP_REQUIRED; present → allowed; then the 1/min rate limit refuses with a wait.
        let export = client(d, Self.exportToken)
        await #expect { _ = try await export.send(route: "default", body: chat("x"), action: "user.export") } throws: {
            ($0 as? BreakwaterError)?.code == .stepUpRequired
        }
        _ = try await export.send(route: "default", body: chat("export"), action: "user.export",
                                  stepUpToken: Self.stepUpToken)
        do {
            _ = try await export.send(route: "default", body: chat("again"), action: "user.export",
                                      stepUpToken: Self.stepUpToken)
            Issue.record("the rate limit let a second export through")
        } catch {
            #expect(error.code == .rateLimited)
            #expect((error.retryAfterMs ?? 0) > 1000)
        }
        // No token ever reaches the log.
        for t in [Self.invoiceToken, Self.exportToken, Self.stepUpToken, Self.wrongUidToken] {
            #expect(!d.daemon.output.contains(t))
        }
    }

    /// The approval flow, driven from a second process with the real CLI: approved, denied, expired.
    @Test func approvalsApprovedDeniedAndExpired() async throws {
        let d = try await DaemonUnderTest.start(policy: Self.policy(approvalTimeout: "2s"))
        defer { d.stop() }
        let refund = client(d, Self.refundToken)
        let ids = IDBox()

        func waitingCall(_ message: String) -> Task<Result<BreakwaterResponse, BreakwaterError>, Never> {
            Task {
                do {
                    return .success(try await refund.send(route: "default", body: chat(message), action: "refund.issue",
                                                          tenant: "acme", onNotice: { ids.add($0.approvalID ?? "") }))
                } catch let error as BreakwaterError {
                    return .failure(error)
                } catch {
                    return .failure(BreakwaterError(.protocolViolation, "\(error)"))
                }
            }
        }
        func cli(_ args: [String]) async throws -> (Int32?, String) {
            let p = try ChildProcess(binDir + "/breakwater", args + ["--socket", d.socket],
                                     logPath: d.dir + "/cli-\(UUID().uuidString).log")
            return (try await p.waitForExit(), p.output)
        }

        // 1. Approved.
        let first = waitingCall("refund one")
        #expect(try await waitUntil { ids.count == 1 })
        let (listed, list) = try await cli(["approvals"])
        #expect(listed == 0 && list.contains(ids.all[0]) && list.contains("refund-agent"), "\(list)")
        #expect(d.fake.stats().requests == 0, "nothing reaches the provider before the approval")
        let (approved, out) = try await cli(["approve", ids.all[0]])
        #expect(approved == 0, "\(out)")
        guard case .success(let r) = await first.value else {
            Issue.record("approved call failed: \(await first.value)")
            return
        }
        #expect(content(r.body) == "Echo: refund one")

        // 2. Denied.
        let second = waitingCall("refund two")
        #expect(try await waitUntil { ids.count == 2 })
        let (denied, _) = try await cli(["deny", ids.all[1], "--reason", "not this one"])
        #expect(denied == 0)
        guard case .failure(let e2) = await second.value else {
            Issue.record("denied call succeeded")
            return
        }
        #expect(e2.code == .approvalDenied && e2.message.contains("not this one"))

        // 3. Expired (approval_timeout 2s).
        let third = waitingCall("refund three")
        #expect(try await waitUntil { ids.count == 3 })
        guard case .failure(let e3) = await third.value else {
            Issue.record("unapproved call succeeded")
            return
        }
        #expect(e3.code == .approvalExpired)
        #expect(d.fake.stats().requests == 1, "only the approved call reached the provider")
        print("governance approvals: approved → answered, denied → APPROVAL_DENIED, expired → APPROVAL_EXPIRED")
    }

    /// Budgets: tokens are held up front from max_tokens, so two concurrent calls cannot both take the last of a
    /// budget; afterwards the hold is settled to the real usage.
    @Test func budgetsHoldUpFrontAndSettleToRealUsage() async throws {
        let d = try await DaemonUnderTest.start(policy: Self.policy())
        defer { d.stop() }
        let c = client(d, Self.budgetToken)
        func body(_ text: String, maxTokens: Int) -> [UInt8] {
            Array(try! JSONSerialization.data(withJSONObject: [
                "messages": [["role": "user", "content": text]], "max_tokens": maxTokens,
            ]))
        }
        // Two calls that each may use 200 tokens, in flight together, against a 300-token daily budget.
        d.fake.script([FaultStep(delayFirstByteMs: 500), FaultStep(delayFirstByteMs: 500)])
        func attempt(_ text: String) async -> Result<BreakwaterResponse, BreakwaterError> {
            do {
                return .success(try await c.send(route: "default", body: body(text, maxTokens: 200)))
            } catch {
                return .failure(error)
            }
        }
        async let a = attempt("a")
        async let b = attempt("b")
        let results = await [a, b]
        let refused = results.filter { if case .failure(let e) = $0 { e.code == .budgetExceeded } else { false } }
        #expect(results.count - refused.count == 1 && refused.count == 1, "\(results)")
        // The winner used a handful of tokens, not 200: a small call still fits.
        let small = try await c.send(route: "default", body: body("small", maxTokens: 50))
        #expect(content(small.body) == "Echo: small")
        await #expect { _ = try await c.send(route: "default", body: body("big", maxTokens: 290)) } throws: {
            ($0 as? BreakwaterError)?.code == .budgetExceeded
        }
    }

    /// Budget usage survives a daemon restart (SQLite in the state directory).
    @Test func budgetUsageSurvivesARestart() async throws {
        let state = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: state) }
        let d = try await DaemonUnderTest.start(policy: Self.policy(), extraArguments: ["--state-dir", state])
        defer { d.stop() }
        func body(maxTokens: Int) -> [UInt8] {
            Array(try! JSONSerialization.data(withJSONObject: [
                "messages": [["role": "user", "content": "spend"]], "max_tokens": maxTokens,
            ]))
        }
        // About 200 completion tokens of the 300-token daily budget.
        d.fake.script([FaultStep(content: Array(repeating: "word", count: 200).joined(separator: " "))])
        let first = try await client(d, Self.budgetToken).send(route: "default", body: body(maxTokens: 250))
        let used = Int(first.trailers.totalTokens ?? 0)
        #expect(used >= 200)

        d.daemon.signal(SIGTERM)
        #expect(try await d.daemon.waitForExit() == 0)
        let again = try ChildProcess(binDir + "/breakwaterd", [
            "--config", d.dir + "/breakwater.yaml", "--socket", d.socket, "--policy", d.dir + "/policy.yaml",
            "--state-dir", state,
        ], environment: ["BW_TEST_KEY": DaemonUnderTest.apiKey], logPath: d.dir + "/daemon2.log")
        defer { again.stop() }
        #expect(try await waitUntil { (try? RawConnection(path: d.socket)) != nil })
        // 150 more would fit a fresh budget, but not after the restored usage.
        await #expect { _ = try await client(d, Self.budgetToken).send(route: "default", body: body(maxTokens: 150)) }
            throws: { ($0 as? BreakwaterError)?.code == .budgetExceeded }
        let small = try await client(d, Self.budgetToken).send(route: "default", body: body(maxTokens: 20))
        #expect(content(small.body) == "Echo: spend")
    }

    /// Tokens rotate and are revoked without a restart: SIGHUP re-reads the policy; a broken policy is refused and
    /// the running one stays.
    @Test func tokensRotateAndAreRevokedOnReload() async throws {
        let fresh = "test-rotated-token-0123456789abcdef"
        let base = Self.policy()
        let d = try await DaemonUnderTest.start(policy: base)
        defer { d.stop() }
        let policyFile = d.dir + "/policy.yaml"
        func call(_ token: String) async -> ErrorCode? {
            do {
                _ = try await client(d, token).send(route: "default", body: chat("x"), action: "invoice.create",
                                                    tenant: "acme")
                return nil
            } catch {
                return error.code ?? .internalError
            }
        }
        func reload(_ text: String, expect line: String, count: Int) async throws {
            try text.write(toFile: policyFile, atomically: true, encoding: .utf8)
            d.daemon.signal(SIGHUP)
            #expect(try await waitUntil {
                d.daemon.output.components(separatedBy: line).count - 1 >= count
            }, "no \(line) in \(d.daemon.output)")
        }
        #expect(await call(fresh) == .unauthenticated)
        // Add a second credential for invoice-agent: the new token works, the old one still does.
        let digest = CredentialDigest.policyValue(forToken: fresh)
        let now = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-60))
        let rotated = base.replacingOccurrences(
            of: "uids: [0]\n    scopes: {actions: [invoice.create]",
            with: "uids: [0]\n    scopes: {actions: [invoice.create]")
            .replacingOccurrences(
                of: "validity_window: 1h}]\n      uids: [0]",
                with: "validity_window: 1h}, {name: t2, token_sha256: \(digest), issued_at: \(now), "
                    + "validity_window: 1h}]\n      uids: [0]")
        #expect(rotated != base)
        try await reload(rotated, expect: "reloaded", count: 1)
        #expect(await call(fresh) == nil)
        #expect(await call(Self.invoiceToken) == nil)
        // A broken policy is refused; the running one stays.
        try await reload(rotated + "\nagents: [not, a, mapping]\n", expect: "reload refused", count: 1)
        #expect(await call(fresh) == nil)
        // Revoke the old token.
        let old = CredentialDigest.policyValue(forToken: Self.invoiceToken)
        let revoked = rotated.replacingOccurrences(of: "token_sha256: \(old), issued_at:",
                                                   with: "token_sha256: \(old), revoked: true, issued_at:")
        #expect(revoked != rotated)
        try await reload(revoked, expect: "reloaded", count: 2)
        #expect(await call(Self.invoiceToken) == .unauthenticated)
        #expect(await call(fresh) == nil)
    }
}

final class IDBox: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: [String] = []
    func add(_ id: String) { lock.lock(); ids.append(id); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return ids }
    var count: Int { all.count }
}
