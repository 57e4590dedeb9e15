import Governance
import Resilience
import Testing

@Suite struct AuthenticationTests {
    let policy = Fixture.policy()

    func refusal(_ token: String?, _ peer: PeerCredentials, wallNow: Double = Fixture.wallNow,
                 policy: GovernancePolicy? = nil) -> AuthRefusal? {
        let p = policy ?? self.policy
        if case .refused(let r) = p.authenticate(token: token.map { Array($0.utf8) }, peer: peer, wallNow: wallNow) {
            return r
        }
        return nil
    }

    @Test func validTokenFromTheRightUid() throws {
        let decision = policy.authenticate(token: Array(Fixture.invoiceToken.utf8), peer: Fixture.invoicePeer,
                                           wallNow: Fixture.wallNow)
        guard case .authenticated(let p, let rule) = decision else {
            Issue.record("expected authenticated, got \(decision)")
            return
        }
        #expect(p.agent == "invoice-agent")
        #expect(p.credential == "current")
        #expect(rule == "agents.invoice-agent.agent_identity.credentials.current")
    }

    @Test func unknownToken() {
        let r = refusal(Fixture.unknownToken, Fixture.invoicePeer)
        #expect(r?.code == .unknownCredential)
        #expect(r?.agent == nil)
    }

    @Test func expiredToken() {
        let r = refusal(Fixture.invoiceOldToken, Fixture.invoicePeer)
        #expect(r?.code == .expiredCredential)
        #expect(r?.reason.contains("expired at 2025-05-02T00:00:00Z") == true)
        #expect(r?.rule == "agents.invoice-agent.agent_identity.credentials.old")
    }

    @Test func validityWindowEndsExactly() {
        // "current" was issued 2025-06-01 with a 30-day window.
        let end = RFC3339.parse("2025-07-01T00:00:00Z")!
        #expect(refusal(Fixture.invoiceToken, Fixture.invoicePeer, wallNow: end - 1) == nil)
        #expect(refusal(Fixture.invoiceToken, Fixture.invoicePeer, wallNow: end)?.code == .expiredCredential)
    }

    @Test func notYetValidToken() {
        #expect(refusal(Fixture.invoiceNextToken, Fixture.invoicePeer)?.code == .credentialNotYetValid)
        let july = RFC3339.parse("2025-07-01T00:00:00Z")!
        #expect(refusal(Fixture.invoiceNextToken, Fixture.invoicePeer, wallNow: july) == nil)
    }

    @Test func revokedToken() {
        #expect(refusal(Fixture.invoiceRevokedToken, Fixture.invoicePeer)?.code == .revokedCredential)
    }

    @Test func wrongUid() {
        let r = refusal(Fixture.invoiceToken, Fixture.stranger)
        #expect(r?.code == .uidNotAllowed)
        #expect(r?.agent == "invoice-agent")
        #expect(r?.rule == "agents.invoice-agent.agent_identity.uids")
    }

    @Test func wrongGidAndSupplementaryGroups() {
        #expect(refusal(Fixture.refundToken, Fixture.stranger)?.code == .gidNotAllowed)
        #expect(refusal(Fixture.refundToken, Fixture.refundPeer) == nil)
        let viaGroup = PeerCredentials(uid: 1999, gid: 1999, pid: 5, groups: [2002])
        #expect(refusal(Fixture.refundToken, viaGroup) == nil)
    }

    @Test func noTokenIsRefusedByDefault() {
        #expect(refusal(nil, Fixture.invoicePeer)?.code == .missingCredential)
        #expect(refusal("", Fixture.invoicePeer)?.code == .missingCredential)
    }

    @Test func anonymousMapsToAnAgentWhenThePolicySaysSo() throws {
        var p = policy
        p.anonymous = .agent("invoice-agent")
        let decision = p.authenticate(token: nil, peer: Fixture.invoicePeer, wallNow: Fixture.wallNow)
        #expect(decision.principal?.isAnonymous == true)
        #expect(decision.principal?.agent == "invoice-agent")
        // The agent's uid restriction still holds for anonymous connections.
        #expect(refusal(nil, Fixture.stranger, policy: p)?.code == .uidNotAllowed)
    }

    @Test func rotationWithoutRestart() throws {
        let principal = try Fixture.principal(Fixture.invoiceToken, Fixture.invoicePeer)
        #expect(policy.recheck(principal, wallNow: Fixture.wallNow) == nil)
        // The admin revokes "current" and reloads: the open connection's next call is refused.
        var reloaded = policy
        reloaded.agents["invoice-agent"]?.credentials[0].revoked = true
        #expect(reloaded.recheck(principal, wallNow: Fixture.wallNow)?.code == .revokedCredential)
        // Or replaces its hash under the same name: the old token no longer proves anything.
        var rotated = policy
        rotated.agents["invoice-agent"]?.credentials[0].digest = Fixture.digest("bw-test-brand-new-token-000000")
        #expect(rotated.recheck(principal, wallNow: Fixture.wallNow)?.code == .credentialWithdrawn)
        // And a credential that expires while the connection is open stops working then.
        #expect(policy.recheck(principal, wallNow: RFC3339.parse("2025-07-02T00:00:00Z")!)?.code
            == .expiredCredential)
    }

    @Test func digestHexRoundTripAndConstantTimeEquality() throws {
        let hex = CredentialDigest.policyValue(forToken: "abc")
        #expect(hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let d = try #require(CredentialDigest(hex: hex.uppercased()))
        #expect(d == CredentialDigest(hashing: Array("abc".utf8)))
        #expect(d != CredentialDigest(hashing: Array("abd".utf8)))
        #expect(CredentialDigest(hex: String(hex.dropLast())) == nil)
        #expect(CredentialDigest(hex: String(hex.dropLast()) + "g") == nil)
    }
}
