import Config
import Foundation
import Governance
import Resilience
import Testing

@Suite struct PolicyLoaderTests {
    /// The repository's `policy.example.yaml`, found from this file's path.
    static let examplePath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("policy.example.yaml").path

    func issues(_ yaml: String) -> [ConfigIssue] {
        do {
            _ = try PolicyLoader.parse(yaml, file: "policy.yaml")
            Issue.record("bad policy accepted")
            return []
        } catch {
            return error.issues
        }
    }

    @Test func emptyPolicyDeniesEverything() throws {
        let p = try PolicyLoader.parse("")
        #expect(p == GovernancePolicy())
        let e = Gate(policy: p).explain(agent: "anyone", action: "invoice.create", tenant: "acme", route: "default",
                                        model: "m", now: .zero, wallNow: 0)
        #expect(!e.decision.isAllowed)
    }

    @Test func theExamplePolicyLoadsAndDecides() throws {
        let p = try PolicyLoader.load(file: Self.examplePath)
        #expect(Set(p.agents.keys) == ["invoice-agent", "refund-agent", "user-export-agent"])
        let invoice = try #require(p.agents["invoice-agent"])
        #expect(invoice.owner == "billing-service")
        #expect(invoice.peers.uids == [1001])
        #expect(invoice.scopes.actions.map(\.text) == ["invoice.create", "invoice.read", "invoice.send"])
        #expect(invoice.tenants == ["acme"])
        #expect(invoice.maxConcurrentCalls == 8)
        #expect(invoice.budgets.daily == BudgetAmount(tokens: 2_000_000, microUSD: 5_000_000))
        #expect(invoice.credentials.first?.notAfter == RFC3339.parse("2025-07-01T00:00:00Z"))
        #expect(p.agents["refund-agent"]?.tenants == ["acme", "globex"])
        #expect(p.agents["refund-agent"]?.peers.gids == [2002])
        #expect(p.agents["user-export-agent"]?.credentials.count == 2)
        #expect(p.controls.map(\.name) == ["destructive_changes", "sensitive_data", "high_risk_actions"])
        #expect(p.controls[0].requireApproval == ApprovalControl(timeout: .seconds(900),
                                                                 approvers: PeerSet(gids: [990])))
        #expect(p.controls[1].stepUpAuth == StepUpControl(maxAge: .seconds(300), issuers: PeerSet(uids: [0])))
        #expect(p.controls[2].rateLimit == ActionRateLimit(count: 1, per: .seconds(60)))
        #expect(p.approvers == PeerSet(uids: [0], gids: [990]))
        #expect(p.tenants["acme"]?.budgets.monthly?.microUSD == 250_000_000)
        #expect(p.prices["gpt-4o"] == ModelPrice(inputUSDPerMillion: 2.5, outputUSDPerMillion: 10))

        // The placeholder token authenticates from the right uid, inside its window.
        let june15 = RFC3339.parse("2025-06-15T12:00:00Z")!
        let peer = PeerCredentials(uid: 1001, gid: 1001, pid: 1)
        let auth = p.authenticate(token: Array("replace-me-invoice-agent".utf8), peer: peer, wallNow: june15)
        let principal = try #require(auth.principal)
        var gate = Gate(policy: p)
        let d = gate.authorize(AccessRequest(principal: principal, action: "invoice.create", tenant: "acme",
                                             route: "default", model: "gpt-4o-mini"),
                               now: .zero, wallNow: june15)
        #expect(d == .allow(rule: "agents.invoice-agent.scopes.actions"))
        let refund = gate.explain(agent: "refund-agent", action: "refund.issue", tenant: "globex", route: "premium",
                                  model: "gpt-4o", now: .zero, wallNow: june15)
        #expect(refund.rule == "conditional_controls.destructive_changes.require_approval")
        let export = p.explain(agent: "user-export-agent", action: "user.export", tenant: "initech",
                               route: "default", model: "gpt-4o", wallNow: june15)
        #expect(export.decision == .requireStepUp(rule: "conditional_controls.sensitive_data.step_up_auth"))
    }

    @Test func sequenceShapedControlsAreMerged() throws {
        // The shape many write-ups use: a list of one-key mappings.
        let p = try PolicyLoader.parse("""
            approvers: {uids: [0]}
            conditional_controls:
              destructive_changes:
                - actions: [refund.issue]
                - require_approval: true
                - approval_timeout: 2m
            """)
        #expect(p.controls.first?.requireApproval?.timeout == .seconds(120))
    }

    /// Every problem is reported, each at its own line.
    @Test func everyErrorHasItsLine() {
        let found = issues("""
            anonymous: nobody
            agents:
              invoice-agent:
                agent_identity:
                  credentials:
                    - name: a
                      token_sha256: not-a-hash
                    - name: b
                      token: bw-live-secret-token-value
                    - name: c
                      token_sha256: 2c5b5865985ef29727bd3b530a816c798d837b23bfcd988f7de59da5c2d98394
                      validity_window: 24h
                  uids: [me]
                scopes:
                  actions: [invoice.*, "*.create"]
                  routes: [default]
                relationships: acme
                max_concurrent_calls: 0
                budgets:
                  weekly: {tokens: 5}
            conditional_controls:
              destructive_changes:
                actions: [refund.issue]
                require_approval: true
              risky:
                actions: [user.export]
                rate_limit: 1/fortnight
              nothing:
                actions: [x]
            prices:
              gpt-4o: {input_usd_per_1m: cheap}
            colour: blue
            """)
        let lines = Set(found.map(\.line))
        // A bad rate_limit is one problem, not also "sets no control".
        #expect(!found.contains { $0.line == 26 })
        let expected: [(Int, String)] = [
            (1, "anonymous names an undefined agent"),
            (7, "token_sha256 that is not a hash"),
            (9, "a token in the file"),
            (12, "validity_window without issued_at"),
            (13, "non-numeric uid"),
            (15, "wildcard in the middle"),
            (15, "scopes without models"),
            (17, "relationships not a list"),
            (18, "zero concurrency"),
            (20, "unknown budget window"),
            (23, "approval without approvers"),
            (27, "bad rate limit"),
            (29, "a control that does nothing"),
            (31, "bad price"),
            (32, "unknown top-level key"),
        ]
        for (line, what) in expected {
            #expect(lines.contains(line), "\(what) (line \(line)); got \(found.map(\.description))")
        }
        let text = found.map(\.description).joined(separator: "\n")
        #expect(text.contains("policy.yaml:9:"))
        #expect(!text.contains("bw-live-secret-token-value"), "a token must never be echoed")
        #expect(!text.contains("not-a-hash"), "a token_sha256 value must never be echoed")
    }

    @Test func credentialCrossChecks() {
        let hash = "2c5b5865985ef29727bd3b530a816c798d837b23bfcd988f7de59da5c2d98394"
        let found = issues("""
            agents:
              a:
                agent_identity:
                  credentials:
                    - {name: one, token_sha256: \(hash)}
                    - {name: one, token_sha256: \(String(hash.reversed()))}
                  step_up_credentials:
                    - {name: pager, token_sha256: \(hash), issued_at: 2025-06-01T00:00:00Z}
                    - {name: pager2, token_sha256: \(String(hash.reversed()))}
                scopes: {actions: [x], routes: ["*"], models: [gpt-4o]}
                budgets: {daily: {cost_usd: 1}}
                relationships: [{agent_to_tenant: t}]
            """)
        let messages = found.map(\.message)
        #expect(messages.contains { $0.contains("two credentials are named \"one\"") })
        #expect(messages.contains { $0.contains("same token_sha256") })
        #expect(messages.contains { $0.contains("needs issued_at") })
        #expect(messages.contains { $0.contains("model \"gpt-4o\" has no price") })
        #expect(found.first { $0.message.contains("has no price") }?.line == 10)
        #expect(!found.map(\.description).joined().contains(hash), "no hash is echoed")
        #expect(found.count == 4, "\(found)")
    }

    /// `budgets: {scope: cluster}` puts a budget in the cluster store; anything but host or cluster is an error
    /// with its line.
    @Test func budgetScopes() throws {
        let p = try PolicyLoader.parse("""
            agents:
              a:
                scopes: {actions: [x], routes: ["*"], models: ["*"]}
                budgets: {daily: {tokens: 100}}
                relationships: [{agent_to_tenant: acme}]
            tenants:
              acme:
                budgets: {scope: cluster, monthly: {tokens: 5000}}
            """)
        #expect(p.agents["a"]?.budgets.scope == .host)
        #expect(p.tenants["acme"]?.budgets.scope == .cluster)
        #expect(p.tenants["acme"]?.budgets.monthly?.tokens == 5000)
        #expect(p.clusterBudgets == ["tenants.acme.budgets"])
        let found = issues("""
            tenants:
              acme:
                budgets: {scope: fleet, daily: {tokens: 1}}
            """)
        #expect(found.count == 1 && found.first?.line == 3, "\(found)")
        #expect(found.first?.message.contains("scope must be host") == true)
    }

    @Test func credentialWindowsAndAnonymous() throws {
        let p = try PolicyLoader.parse("""
            anonymous: local
            agents:
              local:
                agent_identity:
                  credentials:
                    - name: w
                      token_sha256: 2c5b5865985ef29727bd3b530a816c798d837b23bfcd988f7de59da5c2d98394
                      not_before: 2025-06-01T00:00:00+02:00
                      not_after: 2025-06-02T00:00:00Z
                      revoked: true
                    - name: d
                      token_sha256: 076379dab9c04a403066ffad8a3bbf14594de86f5ebd0fa2f337eb51613eb1eb
                      issued_at: 2025-06-01T00:00:00Z
                      validity_window: 30d
                scopes: {actions: ["*"], routes: ["*"], models: ["*"]}
                relationships: [{agent_to_tenant: "*"}]
            """)
        #expect(p.anonymous == .agent("local"))
        let w = try #require(p.agents["local"]?.credentials.first)
        #expect(w.notBefore == RFC3339.parse("2025-05-31T22:00:00Z"))
        #expect(w.revoked)
        #expect(p.agents["local"]?.credentials.last?.notAfter == RFC3339.parse("2025-07-01T00:00:00Z"))
    }

    @Test func missingFileIsAnIssueNotACrash() {
        #expect(throws: ConfigError.self) { try PolicyLoader.load(file: "/nonexistent/policy.yaml") }
    }
}
