import Governance
import Resilience
import Testing

/// A gate over the fixture policy and a virtual clock, one per test.
struct GateHarness {
    let clock = ManualClock()
    var gate = Gate(policy: Fixture.policy())

    mutating func decide(_ r: AccessRequest, wallNow: Double = Fixture.wallNow) -> Decision {
        gate.authorize(r, now: clock.now(), wallNow: wallNow)
    }
}

@Suite struct AuthorizationTests {

    func request(_ token: String, _ peer: PeerCredentials, action: String?, tenant: String?,
                 route: String = "default", model: String? = "gpt-4o-mini", stepUp: String? = nil,
                 pass: AccessRequest.Pass = .admission) throws -> AccessRequest {
        AccessRequest(principal: try Fixture.principal(token, peer), action: action, tenant: tenant, route: route,
                      model: model, stepUpToken: stepUp.map(PresentedToken.init), pass: pass)
    }

    func denialCode(_ d: Decision) -> DenialCode? {
        if case .deny(_, let code, _) = d { return code }
        return nil
    }

    @Test func inScopeIsAllowed() throws {
        var h = GateHarness()
        let d = h.decide(try request(Fixture.invoiceToken, Fixture.invoicePeer, action: "invoice.create",
                                     tenant: "acme"))
        #expect(d == .allow(rule: "agents.invoice-agent.scopes.actions"))
        #expect(h.gate.inFlight(agent: "invoice-agent") == 1)
        h.gate.release(agent: "invoice-agent")
        #expect(h.gate.inFlight(agent: "invoice-agent") == 0)
    }

    @Test func outOfScope() throws {
        var h = GateHarness()
        let d = h.decide(try request(Fixture.invoiceToken, Fixture.invoicePeer, action: "refund.issue",
                                     tenant: "acme"))
        #expect(denialCode(d) == .outOfScope)
        #expect(d.rule == "agents.invoice-agent.scopes.actions")
        #expect(d.description.contains("\"refund.issue\" is not in the scopes of agent \"invoice-agent\""))
    }

    @Test func wrongTenant() throws {
        var h = GateHarness()
        let d = h.decide(try request(Fixture.invoiceToken, Fixture.invoicePeer, action: "invoice.create",
                                     tenant: "globex"))
        #expect(denialCode(d) == .wrongTenant)
        #expect(d.rule == "agents.invoice-agent.relationships")
    }

    @Test func tenantAndActionMustBeNamedUnlessWildcarded() throws {
        var h = GateHarness()
        let noTenant = h.decide(try request(Fixture.invoiceToken, Fixture.invoicePeer, action: "invoice.create",
                                            tenant: nil))
        #expect(denialCode(noTenant) == .tenantRequired)
        let noAction = h.decide(try request(Fixture.invoiceToken, Fixture.invoicePeer, action: nil, tenant: "acme"))
        #expect(denialCode(noAction) == .actionRequired)
        // export-agent has tenants ["*"]: no tenant is fine.
        let exportAny = h.decide(try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export",
                                             tenant: nil, stepUp: Fixture.exportStepUpToken))
        #expect(exportAny.isAllowed)
    }

    @Test func routeAndModelScopes() throws {
        var h = GateHarness()
        let route = h.decide(try request(Fixture.invoiceToken, Fixture.invoicePeer, action: "invoice.create",
                                         tenant: "acme", route: "premium"))
        #expect(denialCode(route) == .routeNotInScope)
        #expect(route.rule == "agents.invoice-agent.scopes.routes")
        let model = h.decide(try request(Fixture.invoiceToken, Fixture.invoicePeer, action: "invoice.create",
                                         tenant: "acme", model: "gpt-4o"))
        #expect(denialCode(model) == .modelNotInScope)
        #expect(model.rule == "agents.invoice-agent.scopes.models")
    }

    @Test func wildcardActions() throws {
        var h = GateHarness()
        for action in ["invoice.create", "invoice.read", "invoice.line.add"] {
            let d = h.decide(try request(Fixture.invoiceToken, Fixture.invoicePeer, action: action, tenant: "acme"))
            #expect(d.isAllowed, "\(action)")
            h.gate.release(agent: "invoice-agent")
        }
        for action in ["invoice", "invoicex.create", "invoices.create"] {
            let d = h.decide(try request(Fixture.invoiceToken, Fixture.invoicePeer, action: action, tenant: "acme"))
            #expect(denialCode(d) == .outOfScope, "\(action)")
        }
    }

    @Test func defaultDeny() throws {
        let h = GateHarness()
        // An agent without scopes may do nothing.
        let e = h.gate.explain(agent: "idle-agent", action: "invoice.create", tenant: "acme", route: "default",
                               model: "gpt-4o-mini", now: h.clock.now(), wallNow: Fixture.wallNow)
        #expect(denialCode(e.decision) == .defaultDeny)
        #expect(e.rule == "default_deny")
        // An agent the policy does not know is denied too.
        let unknown = h.gate.explain(agent: "ghost", action: "invoice.create", tenant: "acme", route: "default",
                                     model: "gpt-4o-mini", now: h.clock.now(), wallNow: Fixture.wallNow)
        #expect(denialCode(unknown.decision) == .unknownAgent)
        // An empty policy denies everything.
        let empty = Gate(policy: GovernancePolicy())
        #expect(empty.authenticate(token: Array(Fixture.invoiceToken.utf8), peer: Fixture.invoicePeer,
                                   wallNow: Fixture.wallNow).principal == nil)
    }

    @Test func expiredCredentialIsDeniedOnTheNextCall() throws {
        var h = GateHarness()
        let r = try request(Fixture.invoiceToken, Fixture.invoicePeer, action: "invoice.create", tenant: "acme")
        let d = h.decide(r, wallNow: RFC3339.parse("2025-07-01T00:00:01Z")!)
        #expect(denialCode(d) == .identity)
        #expect(d.description.contains("expired_credential"))
    }

    // MARK: Step-up

    @Test func stepUpMissing() throws {
        var h = GateHarness()
        let d = h.decide(try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export", tenant: "acme"))
        #expect(d == .requireStepUp(rule: "conditional_controls.sensitive_data.step_up_auth"))
        #expect(h.gate.inFlight(agent: "export-agent") == 0)
    }

    @Test func stepUpPresentAndValid() throws {
        var h = GateHarness()
        let d = h.decide(try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export", tenant: "acme",
                                     stepUp: Fixture.exportStepUpToken))
        #expect(d == .allow(rule: "agents.export-agent.scopes.actions"))
    }

    @Test func stepUpExpired() throws {
        var h = GateHarness()
        // The policy's step-up credential was issued a minute before wallNow; max_age is 5 minutes.
        let d = h.decide(try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export", tenant: "acme",
                                     stepUp: Fixture.exportStepUpToken), wallNow: Fixture.wallNow + 241)
        #expect(denialCode(d) == .stepUpExpired)
        #expect(d.rule == "conditional_controls.sensitive_data.step_up_auth")
    }

    @Test func stepUpInvalid() throws {
        var h = GateHarness()
        // Someone else's token, or the agent's own main credential, is not a step-up credential.
        for token in [Fixture.unknownToken, Fixture.exportToken] {
            let d = h.decide(try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export", tenant: "acme",
                                         stepUp: token))
            #expect(denialCode(d) == .stepUpInvalid)
        }
    }

    @Test func stepUpIssuedAtRunTime() throws {
        var h = GateHarness()
        var policy = Fixture.policy()
        policy.agents["export-agent"]?.stepUpCredentials = []
        h.gate = Gate(policy: policy)
        let token = Array("bw-test-runtime-stepup-abcdef0123".utf8)
        #expect(throws: StepUpRefusal.self) {
            try h.gate.grantStepUp(agent: "export-agent", token: token, by: Fixture.stranger, wallNow: Fixture.wallNow)
        }
        let grant = try h.gate.grantStepUp(agent: "export-agent", token: token, by: Fixture.admin,
                                           wallNow: Fixture.wallNow)
        #expect(grant.issuedBy == Fixture.admin)
        let r = try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export", tenant: "acme",
                            stepUp: "bw-test-runtime-stepup-abcdef0123")
        #expect(h.decide(r).isAllowed)
        h.clock.advance(by: .seconds(120))  // past the rate limit
        #expect(denialCode(h.decide(r, wallNow: Fixture.wallNow + 301)) == .stepUpExpired)
        // A grant for one agent does not step another up.
        let other = Array("bw-test-runtime-stepup-for-invoice".utf8)
        _ = try h.gate.grantStepUp(agent: "invoice-agent", token: other, by: Fixture.admin, wallNow: Fixture.wallNow)
        h.clock.advance(by: .seconds(120))
        let borrowed = try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export", tenant: "acme",
                                   stepUp: "bw-test-runtime-stepup-for-invoice")
        #expect(denialCode(h.decide(borrowed)) == .stepUpInvalid)
        #expect(throws: StepUpRefusal.self) {
            try h.gate.grantStepUp(agent: "ghost", token: other, by: Fixture.admin, wallNow: Fixture.wallNow)
        }
    }

    // MARK: Rate limit

    @Test func actionRateLimitCarriesTheWait() throws {
        var h = GateHarness()
        let r = try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export", tenant: "acme",
                            stepUp: Fixture.exportStepUpToken)
        #expect(h.decide(r).isAllowed)
        h.gate.release(agent: "export-agent")
        h.clock.advance(by: .seconds(20))
        let limited = h.decide(r)
        #expect(limited == .rateLimited(rule: "conditional_controls.high_risk_actions.rate_limit",
                                        retryAfter: .seconds(40)))
        #expect(h.gate.inFlight(agent: "export-agent") == 0)
        h.clock.advance(by: .seconds(40))
        #expect(h.decide(r).isAllowed)
    }

    @Test func rateLimitIsPerAgentPerAction() throws {
        var h = GateHarness()
        let export = try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export", tenant: "acme",
                                 stepUp: Fixture.exportStepUpToken)
        let refund = try request(Fixture.refundToken, Fixture.refundPeer, action: "refund.issue", tenant: "acme")
        #expect(h.decide(export).isAllowed)
        // The same limit group, but another agent and action: its own budget.
        if case .requireApproval = h.decide(refund) {} else { Issue.record("expected approval") }
        if case .rateLimited = h.decide(refund) {} else { Issue.record("expected rate limited") }
    }

    @Test func rateLimitSurvivesAReloadWhenUnchanged() throws {
        var h = GateHarness()
        let r = try request(Fixture.exportToken, Fixture.exportPeer, action: "user.export", tenant: "acme",
                            stepUp: Fixture.exportStepUpToken)
        #expect(h.decide(r).isAllowed)
        h.gate.replacePolicy(Fixture.policy())
        if case .rateLimited = h.decide(r) {} else { Issue.record("a reload must not reset the limit") }
        var looser = Fixture.policy()
        looser.controls[2].rateLimit = ActionRateLimit(count: 10, per: .seconds(60))
        h.gate.replacePolicy(looser)
        #expect(h.decide(r).isAllowed)
    }

    // MARK: Concurrency

    @Test func perAgentConcurrencyLimit() throws {
        var h = GateHarness()
        let r = try request(Fixture.invoiceToken, Fixture.invoicePeer, action: "invoice.create", tenant: "acme")
        #expect(h.decide(r).isAllowed)
        #expect(h.decide(r).isAllowed)
        let third = h.decide(r)
        #expect(denialCode(third) == .concurrencyLimit)
        #expect(third.rule == "agents.invoice-agent.max_concurrent_calls")
        h.gate.release(agent: "invoice-agent")
        #expect(h.decide(r).isAllowed)
        // Fallback passes take no slot.
        var fallback = r
        fallback.pass = .fallback
        #expect(h.decide(fallback).isAllowed)
        #expect(h.gate.inFlight(agent: "invoice-agent") == 2)
    }

    // MARK: Approval through the gate

    @Test func approvalGrantedThenAfterApprovalPass() throws {
        var h = GateHarness()
        var r = try request(Fixture.refundToken, Fixture.refundPeer, action: "refund.issue", tenant: "acme")
        let d = h.decide(r)
        guard case .requireApproval(let rule, let timeout, let approvers) = d else {
            Issue.record("expected approval, got \(d)")
            return
        }
        #expect(rule == "conditional_controls.destructive_changes.require_approval")
        #expect(timeout == .seconds(900))
        #expect(approvers.contains(Fixture.financeApprover))
        #expect(h.gate.inFlight(agent: "refund-agent") == 0)

        var queue = ApprovalQueue()
        _ = try queue.request(id: "a1", request: r, requester: Fixture.refundPeer, rule: rule, approvers: approvers,
                              timeout: timeout, now: h.clock.now(), wallNow: Fixture.wallNow)
        h.clock.advance(by: .seconds(30))
        let t = try queue.approve("a1", by: Fixture.financeApprover, now: h.clock.now())
        #expect(t.to == .approved)

        // Resumed: allowed without asking again and without touching the rate limit.
        r.pass = .afterApproval
        #expect(h.decide(r) == .allow(rule: "agents.refund-agent.scopes.actions"))
        #expect(h.gate.inFlight(agent: "refund-agent") == 1)
        // A fallback target with a model outside the scopes is still refused.
        var fallback = r
        fallback.pass = .fallback
        fallback.model = "claude-3.5-sonnet"
        #expect(denialCode(h.decide(fallback)) == .modelNotInScope)
        fallback.model = "gpt-4o"
        fallback.route = "premium"
        #expect(h.decide(fallback).isAllowed)
    }

    // MARK: Dry run

    @Test func explainTracesEveryCheck() {
        let h = GateHarness()
        let e = h.gate.explain(agent: "refund-agent", action: "refund.issue", tenant: "globex", route: "default",
                               model: "gpt-4o-mini", now: h.clock.now(), wallNow: Fixture.wallNow)
        #expect(e.rule == "conditional_controls.destructive_changes.require_approval")
        #expect(e.trace.contains { $0.hasPrefix("tenant: \"globex\" allowed") })
        #expect(e.trace.contains { $0.contains("rate limit: 1/min has room") })
        #expect(e.description.contains("=> require approval"))
        // Nothing was consumed: the same dry run gives the same answer.
        let again = h.gate.explain(agent: "refund-agent", action: "refund.issue", tenant: "globex", route: "default",
                                   model: "gpt-4o-mini", now: h.clock.now(), wallNow: Fixture.wallNow)
        #expect(again.decision == e.decision)
        #expect(h.gate.inFlight(agent: "refund-agent") == 0)
    }
}
