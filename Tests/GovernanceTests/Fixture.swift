import Governance
import Resilience
import Testing

/// The invoice / refund / user-export agents, built in code, and the tokens and peers the tests present.
enum Fixture {
    /// 2025-06-15T12:00:00Z: "now" on the wall clock for every test that does not move it.
    static let wallNow = RFC3339.parse("2025-06-15T12:00:00Z")!

    static let invoiceToken = "bw-test-invoice-current-5f2c9a71"
    static let invoiceOldToken = "bw-test-invoice-old-0c1d2e3f"
    static let invoiceRevokedToken = "bw-test-invoice-revoked-77aa88bb"
    static let invoiceNextToken = "bw-test-invoice-next-99cc00dd"
    static let refundToken = "bw-test-refund-current-a1b2c3d4"
    static let exportToken = "bw-test-export-current-e5f6a7b8"
    static let exportStepUpToken = "bw-test-export-stepup-pager-1234"
    static let unknownToken = "bw-test-nobody-has-this-token-00"
    /// Every token the tests use, to check none leaks into a description.
    static let allTokens = [invoiceToken, invoiceOldToken, invoiceRevokedToken, invoiceNextToken, refundToken,
                            exportToken, exportStepUpToken, unknownToken]

    static let invoicePeer = PeerCredentials(uid: 1001, gid: 1001, pid: 4001)
    static let refundPeer = PeerCredentials(uid: 1002, gid: 2002, pid: 4002)
    static let exportPeer = PeerCredentials(uid: 1003, gid: 1003, pid: 4003)
    static let admin = PeerCredentials(uid: 0, gid: 0, pid: 100)
    static let financeApprover = PeerCredentials(uid: 1500, gid: 1500, pid: 200, groups: [990])
    static let stranger = PeerCredentials(uid: 1999, gid: 1999, pid: 300)

    static func digest(_ token: String) -> CredentialDigest { CredentialDigest(hashing: Array(token.utf8)) }

    static func policy() -> GovernancePolicy {
        let june1 = RFC3339.parse("2025-06-01T00:00:00Z")!
        let invoice = AgentPolicy(
            id: "invoice-agent", owner: "billing-service",
            credentials: [
                AgentCredential(name: "current", digest: digest(invoiceToken), issuedAt: june1,
                                validityWindow: .seconds(30 * 86_400)),
                AgentCredential(name: "old", digest: digest(invoiceOldToken),
                                issuedAt: RFC3339.parse("2025-05-01T00:00:00Z")!, validityWindow: .seconds(86_400)),
                AgentCredential(name: "leaked", digest: digest(invoiceRevokedToken), issuedAt: june1,
                                validityWindow: .seconds(30 * 86_400), revoked: true),
                AgentCredential(name: "next", digest: digest(invoiceNextToken),
                                notBefore: RFC3339.parse("2025-07-01T00:00:00Z")!),
            ],
            peers: PeerRestriction(uids: [1001]),
            scopes: Scopes(actions: ["invoice.*"], routes: ["default"], models: ["gpt-4o-mini"]),
            tenants: ["acme"], maxConcurrentCalls: 2,
            budgets: BudgetLimits(daily: BudgetAmount(tokens: 10_000)))
        let refund = AgentPolicy(
            id: "refund-agent", owner: "support-desk",
            credentials: [AgentCredential(name: "current", digest: digest(refundToken), issuedAt: june1,
                                          validityWindow: .seconds(30 * 86_400))],
            peers: PeerRestriction(gids: [2002]),
            scopes: Scopes(actions: ["refund.issue", "invoice.read"], routes: ["default", "premium"],
                           models: ["gpt-4o-mini", "gpt-4o"]),
            tenants: ["acme", "globex"])
        let export = AgentPolicy(
            id: "export-agent", owner: "privacy-team",
            credentials: [AgentCredential(name: "current", digest: digest(exportToken), issuedAt: june1,
                                          validityWindow: .seconds(30 * 86_400))],
            stepUpCredentials: [AgentCredential(name: "pager", digest: digest(exportStepUpToken),
                                                notBefore: wallNow - 60)],
            scopes: Scopes(actions: ["user.export"], routes: ["*"], models: ["*"]),
            tenants: ["*"])
        let idle = AgentPolicy(id: "idle-agent", credentials: [], tenants: ["acme"])
        return GovernancePolicy(
            agents: [invoice.id: invoice, refund.id: refund, export.id: export, idle.id: idle],
            controls: [
                ConditionalControl(name: "destructive_changes", actions: ["refund.issue"],
                                   requireApproval: ApprovalControl(timeout: .seconds(900),
                                                                    approvers: PeerSet(uids: [0], gids: [990]))),
                ConditionalControl(name: "sensitive_data", actions: ["user.export"],
                                   stepUpAuth: StepUpControl(maxAge: .seconds(300))),
                ConditionalControl(name: "high_risk_actions", actions: ["refund.issue", "user.export"],
                                   rateLimit: ActionRateLimit(count: 1, per: .seconds(60))),
            ],
            approvers: PeerSet(uids: [0]),
            tenants: ["acme": TenantPolicy(budgets: BudgetLimits(monthly: BudgetAmount(microUSD: 5_000_000)))],
            prices: ["gpt-4o-mini": ModelPrice(inputUSDPerMillion: 0.15, outputUSDPerMillion: 0.60),
                     "gpt-4o": ModelPrice(inputUSDPerMillion: 2.50, outputUSDPerMillion: 10.00)])
    }

    /// Authenticates `token` from `peer`, failing the test when refused.
    static func principal(_ token: String, _ peer: PeerCredentials, policy: GovernancePolicy = policy(),
                          sourceLocation: SourceLocation = #_sourceLocation) throws -> Principal {
        let decision = policy.authenticate(token: Array(token.utf8), peer: peer, wallNow: wallNow)
        return try #require(decision.principal, "\(decision)", sourceLocation: sourceLocation)
    }
}
