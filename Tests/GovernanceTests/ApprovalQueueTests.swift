import Foundation
import Governance
import Resilience
import Testing

@Suite struct ApprovalQueueTests {
    let approvers = PeerSet(uids: [0], gids: [990])

    func refundRequest() throws -> AccessRequest {
        AccessRequest(principal: try Fixture.principal(Fixture.refundToken, Fixture.refundPeer),
                      action: "refund.issue", tenant: "acme", route: "default", model: "gpt-4o-mini")
    }

    func queued(_ ids: [String], clock: ManualClock, timeout: Duration = .seconds(900)) throws -> ApprovalQueue {
        var q = ApprovalQueue()
        for id in ids {
            let t = try q.request(id: id, request: try refundRequest(), requester: Fixture.refundPeer,
                                  rule: "conditional_controls.destructive_changes.require_approval",
                                  approvers: approvers, timeout: timeout, now: clock.now(), wallNow: Fixture.wallNow)
            #expect(t.from == nil)
            #expect(t.to == .pending)
            #expect(t.by == Fixture.refundPeer)
        }
        return q
    }

    func refusalCode(_ body: () throws(ApprovalRefusal) -> ApprovalTransition) -> ApprovalRefusal.Code? {
        do {
            _ = try body()
            return nil
        } catch {
            return error.code
        }
    }

    @Test func approvalGranted() throws {
        let clock = ManualClock()
        var q = try queued(["a1"], clock: clock)
        #expect(q.pending.map(\.id) == ["a1"])
        clock.advance(by: .seconds(60))
        let t = try q.approve("a1", by: Fixture.financeApprover, now: clock.now())
        #expect(t.from == .pending)
        #expect(t.to == .approved)
        #expect(t.by == Fixture.financeApprover)
        #expect(t.agent == "refund-agent")
        #expect(t.action == "refund.issue")
        #expect(q["a1"]?.state == .approved(by: Fixture.financeApprover))
        #expect(q.pending.isEmpty)
        // Decided once: a second decision is refused, and expiry leaves it alone.
        #expect(refusalCode { () throws(ApprovalRefusal) in
            try q.deny("a1", by: Fixture.admin, reason: "late", now: clock.now())
        } == .alreadyDecided)
        clock.advance(by: .seconds(3600))
        #expect(q.expire(now: clock.now()).isEmpty)
        q.forget("a1")
        #expect(q["a1"] == nil)
    }

    @Test func approvalDenied() throws {
        let clock = ManualClock()
        var q = try queued(["a1"], clock: clock)
        let t = try q.deny("a1", by: Fixture.admin, reason: "refund exceeds policy", now: clock.now())
        #expect(t.to == .denied)
        #expect(t.reason.contains("refund exceeds policy"))
        #expect(q["a1"]?.state == .denied(by: Fixture.admin, reason: "refund exceeds policy"))
    }

    @Test func approvalTimedOut() throws {
        let clock = ManualClock()
        var q = try queued(["a1", "a2"], clock: clock, timeout: .seconds(60))
        clock.advance(by: .seconds(30))
        _ = try q.request(id: "a3", request: try refundRequest(), requester: Fixture.refundPeer, rule: "r",
                          approvers: approvers, timeout: .seconds(60), now: clock.now(), wallNow: Fixture.wallNow)
        #expect(q.nextDeadline == clock.now() + .seconds(30))
        clock.advance(by: .seconds(29))
        #expect(q.expire(now: clock.now()).isEmpty)
        clock.advance(by: .seconds(1))
        let expired = q.expire(now: clock.now())
        #expect(expired.map(\.id) == ["a1", "a2"])
        #expect(expired.allSatisfy { $0.to == .expired && $0.by == nil })
        #expect(q.pending.map(\.id) == ["a3"])
        // Too late to approve, even before the next expire(now:) runs.
        clock.advance(by: .seconds(31))
        #expect(refusalCode { () throws(ApprovalRefusal) in
            try q.approve("a3", by: Fixture.admin, now: clock.now())
        } == .expired)
        #expect(q.expire(now: clock.now()).map(\.id) == ["a3"])
        #expect(q.nextDeadline == nil)
    }

    @Test func onlyApproversMayDecide() throws {
        let clock = ManualClock()
        var q = try queued(["a1"], clock: clock)
        #expect(refusalCode { () throws(ApprovalRefusal) in
            try q.approve("a1", by: Fixture.stranger, now: clock.now())
        } == .notAnApprover)
        #expect(refusalCode { () throws(ApprovalRefusal) in
            try q.deny("a1", by: Fixture.stranger, reason: "", now: clock.now())
        } == .notAnApprover)
        #expect(refusalCode { () throws(ApprovalRefusal) in
            try q.approve("nope", by: Fixture.admin, now: clock.now())
        } == .unknownRequest)
        #expect(q["a1"]?.state == .pending)
    }

    @Test func selfApprovalIsOffByDefault() throws {
        let clock = ManualClock()
        var q = try queued(["a1"], clock: clock)
        // The requester's uid is in the approvers' group, but it made the call.
        let sameUser = PeerCredentials(uid: Fixture.refundPeer.uid, gid: 990, pid: 77)
        #expect(refusalCode { () throws(ApprovalRefusal) in
            try q.approve("a1", by: sameUser, now: clock.now())
        } == .selfApproval)
        q.allowSelfApproval = true
        #expect(try q.approve("a1", by: sameUser, now: clock.now()).to == .approved)
    }

    @Test func duplicateIdsAndWithdrawal() throws {
        let clock = ManualClock()
        var q = try queued(["a1"], clock: clock)
        #expect(throws: ApprovalRefusal.self) {
            try q.request(id: "a1", request: try refundRequest(), requester: Fixture.refundPeer, rule: "r",
                          approvers: approvers, timeout: .seconds(5), now: clock.now(), wallNow: Fixture.wallNow)
        }
        #expect(q.withdraw("a1", now: clock.now())?.to == .withdrawn)
        #expect(q.withdraw("a1", now: clock.now()) == nil)
        #expect(q.pending.isEmpty)
    }

    @Test func snapshotSurvivesARestartAndDowntimeCounts() throws {
        let clock = ManualClock()
        var q = try queued(["a1"], clock: clock, timeout: .seconds(600))
        _ = try q.request(id: "a2", request: try refundRequest(), requester: Fixture.refundPeer, rule: "r",
                          approvers: approvers, timeout: .seconds(60), now: clock.now(), wallNow: Fixture.wallNow)
        clock.advance(by: .seconds(10))
        let saved = try JSONRoundTrip.roundTrip(q.snapshot(now: clock.now(), wallNow: Fixture.wallNow + 10))
        #expect(saved.count == 2)

        // A new daemon: another monotonic clock, and two minutes of wall time passed while it was down.
        let rebooted = ManualClock(Instant(nanoseconds: 5_000_000_000))
        var restored = ApprovalQueue()
        let expired = restored.restore(saved, now: rebooted.now(), wallNow: Fixture.wallNow + 130)
        #expect(expired.map(\.id) == ["a2"])
        #expect(restored.pending.map(\.id) == ["a1"])
        // a1 had 600 s from wallNow; 130 s are gone.
        #expect(restored.nextDeadline == rebooted.now() + .seconds(470))
        #expect(try restored.approve("a1", by: Fixture.admin, now: rebooted.now()).to == .approved)
    }
    /// The state store keeps snapshots as JSON with the subject's fields at the top level: a row written before
    /// `ApprovalSubject` existed still loads, and a new one is written the same way.
    @Test func snapshotJSONKeepsItsFlatShape() throws {
        let old = #"{"id":"apr-1","agent":"refund-agent","action":"refund.issue","tenant":"acme","route":"default","#
            + #""rule":"r","requester":{"uid":1,"gid":2,"pid":3,"groups":[]},"approvers":{"uids":[0],"gids":[]},"#
            + #""requestedAt":100,"deadline":700,"timeoutSeconds":600}"#
        let snapshot = try JSONDecoder().decode(ApprovalSnapshot.self, from: Data(old.utf8))
        #expect(snapshot.subject == ApprovalSubject(agent: "refund-agent", action: "refund.issue", tenant: "acme",
                                                    route: "default", model: nil, rule: "r"))
        #expect(snapshot.deadline == 700 && snapshot.requester.uid == 1)
        let written = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(snapshot))
            as? [String: Any])
        #expect(written["agent"] as? String == "refund-agent" && written["rule"] as? String == "r")
        #expect(written["subject"] == nil)
        #expect(try JSONDecoder().decode(ApprovalSnapshot.self, from: JSONEncoder().encode(snapshot)) == snapshot)
    }
}
