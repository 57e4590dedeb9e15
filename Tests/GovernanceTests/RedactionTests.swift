import Governance
import Resilience
import Testing

/// No token (agent or step-up) may appear in any decision, refusal, request or error description.
@Suite struct RedactionTests {
    func assertNoToken(_ texts: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        for text in texts {
            for token in Fixture.allTokens {
                #expect(!text.contains(token), "a token leaked into: \(text)", sourceLocation: sourceLocation)
                // Nor its hash, which the policy file holds.
                #expect(!text.contains(CredentialDigest.policyValue(forToken: token)), sourceLocation: sourceLocation)
            }
        }
    }

    @Test func authenticationOutcomes() {
        let policy = Fixture.policy()
        var texts: [String] = []
        for token in Fixture.allTokens {
            for peer in [Fixture.invoicePeer, Fixture.refundPeer, Fixture.stranger] {
                let d = policy.authenticate(token: Array(token.utf8), peer: peer, wallNow: Fixture.wallNow)
                texts += [d.description, String(describing: d), String(reflecting: d)]
                if case .refused(let r) = d { texts += [r.reason, r.rule, "\(r)"] }
                if let p = d.principal { texts += ["\(p)", String(reflecting: p)] }
            }
        }
        assertNoToken(texts)
    }

    @Test func decisionsAndRequests() throws {
        let clock = ManualClock()
        var gate = Gate(policy: Fixture.policy())
        var texts: [String] = []
        let principals = [
            (try Fixture.principal(Fixture.invoiceToken, Fixture.invoicePeer), "invoice.create"),
            (try Fixture.principal(Fixture.refundToken, Fixture.refundPeer), "refund.issue"),
            (try Fixture.principal(Fixture.exportToken, Fixture.exportPeer), "user.export"),
        ]
        for (principal, action) in principals {
            for stepUp in [nil, Fixture.exportStepUpToken, Fixture.unknownToken, Fixture.invoiceToken] {
                for wall in [Fixture.wallNow, Fixture.wallNow + 400, Fixture.wallNow + 90 * 86_400] {
                    let r = AccessRequest(principal: principal, action: action, tenant: "acme", route: "default",
                                          model: "gpt-4o-mini", stepUpToken: stepUp.map(PresentedToken.init))
                    let d = gate.authorize(r, now: clock.now(), wallNow: wall)
                    texts += [d.description, String(reflecting: d), d.rule, r.description, String(reflecting: r),
                              "\(r.stepUpToken as Any)"]
                }
            }
        }
        assertNoToken(texts)
    }

    @Test func stepUpGrantsAndDigests() throws {
        var gate = Gate(policy: Fixture.policy())
        let token = Array(Fixture.exportStepUpToken.utf8)
        let grant = try gate.grantStepUp(agent: "export-agent", token: token, by: Fixture.admin,
                                         wallNow: Fixture.wallNow)
        var texts = [grant.description, String(reflecting: grant)]
        do {
            _ = try gate.grantStepUp(agent: "export-agent", token: token, by: Fixture.stranger,
                                     wallNow: Fixture.wallNow)
        } catch {
            texts += [error.description, String(reflecting: error)]
        }
        let digest = Fixture.digest(Fixture.invoiceToken)
        texts += [digest.description, String(reflecting: digest), "\(PresentedToken(Fixture.invoiceToken))"]
        var dumped = ""
        dump(Fixture.policy().agents["invoice-agent"]!, to: &dumped)
        texts.append(dumped)
        assertNoToken(texts)
    }
}
