import Fleet
import Foundation
import Governance
import Resilience
import Synchronization

/// The host-wide governance state: the gate (identities, scopes, controls, rate limits, in-flight counts) and the
/// approval queue, behind one lock. Calls waiting for an approval register a callback, run outside the lock.
final class GovernanceRegistry: Sendable {
    enum ApprovalOutcome: Sendable {
        case approved(by: PeerCredentials)
        case denied(reason: String)
        case expired
    }

    private struct State {
        var gate: Gate
        var approvals: ApprovalQueue
        var ledger: BudgetLedger
        var waiters: [String: @Sendable (ApprovalOutcome) -> Void] = [:]
        /// Approvals restored from the state store, by the request id of the call that waited on them: the same
        /// call sent again after a restart waits on its old approval instead of queueing a second one.
        var restored: [String: String] = [:]
        /// Approvals of actions that the policy lets allow the same action again (`approval_reusable_for`), until
        /// when. Not kept across restarts: after one, the next such action asks again.
        var reusable: [ReuseKey: (approvalID: String, until: Instant)] = [:]
        /// The cluster store, for budgets with `scope: cluster` (nil without `cluster:`).
        var cluster: BudgetStore?
    }

    /// The cluster store as the budgets use it.
    struct BudgetStore {
        let client: FleetClient
        /// Makes this process's hold ids unique across daemons and restarts.
        let nonce: String
        /// The share of a budget's remainder this daemon takes while the store is unreachable.
        var share: Double
        var reachable = true
        /// Reservations whose store hold is asked for: who waits for the answer (nil once the call gave up).
        var asking: [UInt64: (@Sendable (BudgetDecision) -> Void)?] = [:]
        /// Settles and charges the store has not taken yet (it was unreachable), sent again when it answers.
        var unsent: [Unsent] = []

        func holdID(_ r: Reservation) -> String { nonce + "-" + String(r.id) }
    }

    /// Something the store must still be told.
    enum Unsent {
        case settle(keys: [ClusterBudget.Key], id: String, used: Usage)
        case charge(keys: [ClusterBudget.Key], id: String, used: Usage)
    }

    /// What `reserveBudget` could say at once.
    enum BudgetStep {
        case decided(BudgetDecision)
        /// Held here; the store's hold is asked for, and `answer` gets the decision.
        case pending(Reservation)
    }

    /// What a reusable approval of an action is valid for: exactly these.
    struct ReuseKey: Hashable {
        var agent: String
        var action: String?
        var tenant: String?
        var argumentHash: String
        var rule: String
    }

    let clock: any ResilienceClock
    private let state: Mutex<State>
    private let store: StateStore?

    /// `store`: where budget usage survives restarts; what it holds is loaded into the ledger here.
    init(policy: GovernancePolicy, clock: any ResilienceClock, store: StateStore? = nil) throws {
        self.clock = clock
        self.store = store
        var queue = ApprovalQueue()
        queue.allowSelfApproval = policy.allowSelfApproval
        var ledger = BudgetLedger(policy: policy)
        var restored: [String: String] = [:]
        if let store {
            _ = ledger.restore(try store.loadBudgets())
            let saved = try store.loadApprovals()
            let expired = queue.restore(saved.map(\.snapshot), now: clock.now(), wallNow: Self.wallNow)
            for t in expired { store.removeApproval(t.id) }
            for (snapshot, requestID) in saved where queue[snapshot.id]?.state == .pending {
                if let requestID { restored[requestID] = snapshot.id }
            }
        }
        state = Mutex(State(gate: Gate(policy: policy), approvals: queue, ledger: ledger, restored: restored))
    }

    static var wallNow: Double { Date().timeIntervalSince1970 }

    /// Budget holds not yet settled, and `agent`'s calls admitted and not yet ended: both zero whenever none of
    /// that agent's calls is in flight.
    func outstandingHolds(agent: String) -> (budgets: Int, inFlight: Int) {
        state.withLock { ($0.ledger.openReservations, $0.gate.inFlight(agent: agent)) }
    }

    func authenticate(token: [UInt8]?, peer: PeerCredentials) -> AuthDecision {
        let wall = Self.wallNow
        return state.withLock { $0.gate.authenticate(token: token, peer: peer, wallNow: wall) }
    }

    func authorize(_ request: AccessRequest) -> Decision {
        let now = clock.now()
        let wall = Self.wallNow
        return state.withLock { $0.gate.authorize(request, now: now, wallNow: wall) }
    }

    /// Holds an attempt's worst-case tokens and cost against the agent's and tenant's budgets, so concurrent calls
    /// cannot overshoot. Budgets kept in the cluster store are held there too, asynchronously: `.pending`, and the
    /// caller asks the store with `holdInStore` at once.
    func reserveBudget(agent: String, tenant: String?, model: String, maxTokens: Int?,
                       promptTokensEstimate: Int) -> BudgetStep {
        let wall = Self.wallNow
        return state.withLock { s -> BudgetStep in
            let d = s.ledger.reserve(agent: agent, tenant: tenant, model: model, maxTokens: maxTokens,
                                     promptTokensEstimate: promptTokensEstimate, wallNow: wall)
            guard case .reserved(let r) = d, r.heldInStore, s.cluster != nil else { return .decided(d) }
            return .pending(r)
        }
    }

    /// Asks the store to hold a `.pending` reservation's cluster budgets; `answer` runs (on the store client's
    /// thread) with the decision — never later than the store's timeout. `lifetime`: how long the store keeps the
    /// hold should this daemon never settle it (it went away).
    func holdInStore(_ r: Reservation, lifetime: Duration, answer: @escaping @Sendable (BudgetDecision) -> Void) {
        let wall = Self.wallNow
        let asked = state.withLock { s -> (FleetClient, String)? in
            guard var store = s.cluster else { return nil }
            store.asking[r.id] = answer
            s.cluster = store
            return (store.client, store.holdID(r))
        }
        guard let (client, id) = asked else { return answer(.reserved(r)) }
        client.holdBudgets(r.cluster, id: id, ask: r.held, lifetime: lifetime, wallNow: wall) { [weak self] result in
            self?.storeAnswered(r, id: id, result)
        }
    }

    /// The store's answer to a budget hold (on its client's thread).
    private func storeAnswered(_ r: Reservation, id: String, _ result: Result<BudgetHoldAnswer, RedisFailure>) {
        let (decision, waiter) = state.withLock { s -> (BudgetDecision?, (@Sendable (BudgetDecision) -> Void)?) in
            guard var store = s.cluster, let entry = store.asking.removeValue(forKey: r.id) else { return (nil, nil) }
            defer { s.cluster = store }
            switch result {
            case .success(.held(let totals)):
                for (b, total) in zip(r.cluster, totals) { s.ledger.storeSaid(b.id, total) }
                return (.reserved(r), entry)
            case .success(.refused(let budget, let unit, let used, let reserved)):
                return (s.ledger.storeRefused(r, budget: budget, unit: unit, used: used, reserved: reserved), entry)
            case .failure:
                // The hold may have reached the store before the answer was lost: it is given back there once
                // the store answers again. Until then this daemon holds its budgets on its own share.
                store.unsent.append(.settle(keys: r.cluster.map { $0.id }, id: id, used: Usage()))
                store.reachable = false
                s.ledger.clusterShare = store.share
                guard entry != nil else { return (nil, nil) }  // the call gave up; its release found no hold here
                return (s.ledger.holdLocally(r), entry)
            }
        }
        if let decision, let waiter { waiter(decision) }
    }

    /// Replaces a hold with the real usage (or frees it when the attempt used nothing). Cluster budgets are
    /// settled in the store; those this daemon held on its own share are charged to it.
    func settleBudget(_ reservation: Reservation, promptTokens: Int?, completionTokens: Int?) {
        let wall = Self.wallNow
        let (settlement, store) = state.withLock { s -> (Settlement?, BudgetStore?) in
            if s.cluster?.asking[reservation.id] != nil { s.cluster?.asking[reservation.id] = .some(nil) }
            let settled = if let p = promptTokens, let c = completionTokens {
                s.ledger.settle(reservation, promptTokens: p, completionTokens: c)
            } else {
                s.ledger.release(reservation)
            }
            return (settled, s.cluster)
        }
        guard let settlement else { return }
        self.store?.saveBudgets(settlement.updated)
        guard let store else { return }
        let r = settlement.reservation
        let keys = r.cluster.map { $0.id }
        if r.heldInStore {
            send(.settle(keys: keys, id: store.holdID(r), used: settlement.usage), store, wallNow: wall)
        } else if r.clusterLocal, !keys.isEmpty {
            send(.charge(keys: keys, id: store.holdID(r) + "c", used: settlement.usage), store, wallNow: wall)
        }
    }

    /// Tells the store (now, if it answers) or keeps it for when it does.
    private func send(_ job: Unsent, _ store: BudgetStore, wallNow: Double) {
        guard store.reachable else {
            state.withLock { $0.cluster?.unsent.append(job) }
            return
        }
        let done: @Sendable (Bool) -> Void = { [weak self] ok in self?.sent(job, ok: ok) }
        switch job {
        case .settle(let keys, let id, let used): store.client.settleBudgets(keys, id: id, used: used, done: done)
        case .charge(let keys, let id, let used):
            store.client.chargeBudgets(keys, id: id, used: used, wallNow: wallNow, done: done)
        }
    }

    private func sent(_ job: Unsent, ok: Bool) {
        state.withLock { s in
            guard ok else {
                s.cluster?.unsent.append(job)
                return
            }
            if case .charge(let keys, _, let used) = job { s.ledger.charged(keys, used) }
        }
    }

    /// The store's client, for budgets with `scope: cluster`.
    func attachClusterStore(_ client: FleetClient, share: Double) {
        var rng = SystemRandomNumberGenerator()
        let nonce = String(rng.next() as UInt64, radix: 36) + String(rng.next() as UInt64, radix: 36)
        state.withLock { $0.cluster = BudgetStore(client: client, nonce: nonce, share: share) }
    }

    /// The store answers or not (every heartbeat): unreachable, cluster budgets are held on this daemon's `share`
    /// of what the store last said was left; back, they are held there again and what waited is sent.
    func clusterHealth(reachable: Bool, share: Double) {
        let wall = Self.wallNow
        let flush = state.withLock { s -> (BudgetStore, [Unsent])? in
            guard var store = s.cluster else { return nil }
            defer { s.cluster = store }
            store.share = share
            guard reachable else {
                store.reachable = false
                s.ledger.clusterShare = share
                return nil
            }
            store.reachable = true
            s.ledger.clusterShare = nil
            defer { store.unsent = [] }
            return (store, store.unsent)
        }
        guard let (store, jobs) = flush else { return }
        for job in jobs { send(job, store, wallNow: wall) }
    }

    /// A new policy (SIGHUP): new and revoked credentials, scopes and limits apply to the next decision; calls in
    /// flight keep what they were admitted with. Rate-limit history survives where the limit is unchanged.
    func replacePolicy(_ policy: GovernancePolicy) {
        state.withLock { s in
            s.gate.replacePolicy(policy)
            s.ledger.replacePolicy(policy)
            s.approvals.allowSelfApproval = policy.allowSelfApproval
        }
    }

    /// The tools among `names` that `agent` may not use, and what the policy does with them.
    func disallowedTools(agent: String, _ names: [String]) -> (tools: [String], mode: GovernancePolicy.DisallowedTools) {
        state.withLock { s in
            (names.filter { !s.gate.policy.toolAllowed(agent: agent, tool: $0) }, s.gate.policy.disallowedTools)
        }
    }

    /// The action a tool stands for under the policy in force.
    func toolAction(_ tool: String) -> String {
        state.withLock { $0.gate.policy.action(forTool: tool) }
    }

    /// The approval control behind a decision's rule (`conditional_controls.NAME.require_approval`).
    func approvalControl(rule: String) -> ApprovalControl? {
        state.withLock { s in
            s.gate.policy.controls.first { $0.rule("require_approval") == rule }?.requireApproval
        }
    }

    /// The approval that allows `key` again, if one does and its window has not passed.
    func reusableApproval(_ key: ReuseKey) -> String? {
        let now = clock.now()
        return state.withLock { s in
            guard let grant = s.reusable[key] else { return nil }
            guard grant.until > now else {
                s.reusable[key] = nil
                return nil
            }
            return grant.approvalID
        }
    }

    /// An approval just granted for `key` allows it again for `window`.
    func keepReusable(_ key: ReuseKey, approvalID: String, for window: Duration) {
        let now = clock.now()
        state.withLock { s in
            s.reusable = s.reusable.filter { $0.value.until > now }  // drop the lapsed ones
            s.reusable[key] = (approvalID, now + window)
        }
    }

    /// Frees the in-flight slot an admitted call held.
    func release(agent: String) {
        state.withLock { $0.gate.release(agent: agent) }
    }

    func explain(agent: String, action: String?, tenant: String?, route: String?, model: String?) -> Explanation {
        let now = clock.now()
        let wall = Self.wallNow
        return state.withLock {
            $0.gate.explain(agent: agent, action: action, tenant: tenant, route: route, model: model, now: now,
                            wallNow: wall)
        }
    }

    /// Queues a call for approval; `onOutcome` runs once, outside the lock, when it is approved, denied or expires.
    /// `onStored` runs once the approval is in the state store (at once when there is none, or nothing new to
    /// write): only then may the caller be told "pending". The write happens on the store's own queue, never on
    /// the caller's thread. A call sent again after a restart (same request id and agent) waits on the approval it
    /// had: returned are the id and deadline in force.
    func requestApproval(id: String, requestID: String, request: AccessRequest, requester: PeerCredentials,
                         rule: String, approvers: PeerSet, timeout: Duration, shownArguments: [String: String]? = nil,
                         onOutcome: @escaping @Sendable (ApprovalOutcome) -> Void,
                         onStored: @escaping @Sendable () -> Void)
        throws(ApprovalRefusal) -> (id: String, deadline: Instant) {
        let now = clock.now()
        let wall = Self.wallNow
        let (used, deadline, snapshot, decided) = try state.withLock {
            (s: inout State) throws(ApprovalRefusal) -> (String, Instant, ApprovalSnapshot?, ApprovalOutcome?) in
            // The request id is the client's: the whole request must match, so an agent cannot re-use an approval
            // given for one action, tenant or route for another.
            if let old = s.restored[requestID], let entry = s.approvals[old], s.waiters[old] == nil,
               entry.subject == ApprovalSubject(request: request, rule: rule, shownArguments: shownArguments) {
                s.restored[requestID] = nil
                switch entry.state {
                case .pending:
                    s.waiters[old] = onOutcome
                    return (old, entry.deadline, nil, nil)
                // Decided while the call was away (the daemon restarted): it learns the outcome at once.
                case .approved(let by):
                    return (old, entry.deadline, nil, .approved(by: by))
                case .denied(_, let reason):
                    return (old, entry.deadline, nil, .denied(reason: reason))
                case .expired:
                    return (old, entry.deadline, nil, .expired)
                case .withdrawn:
                    break
                }
            }
            _ = try s.approvals.request(id: id, request: request, requester: requester, rule: rule,
                                        approvers: approvers, timeout: timeout, now: now, wallNow: wall,
                                        shownArguments: shownArguments)
            s.waiters[id] = onOutcome
            return (id, now + timeout, s.approvals.snapshot(now: now, wallNow: wall).first { $0.id == id }, nil)
        }
        if let decided { onOutcome(decided) }
        if let snapshot, let store {
            store.saveApproval(snapshot, requestID: requestID) { _ in onStored() }
        } else {
            onStored()
        }
        return (used, deadline)
    }

    func approve(_ id: String, by peer: PeerCredentials) throws(ApprovalRefusal) -> ApprovalTransition {
        let now = clock.now()
        let (t, waiter) = try state.withLock {
            (s: inout State) throws(ApprovalRefusal) -> (ApprovalTransition, (@Sendable (ApprovalOutcome) -> Void)?) in
            let t = try s.approvals.approve(id, by: peer, now: now)
            return (t, s.waiters.removeValue(forKey: id))
        }
        store?.removeApproval(id)
        waiter?(.approved(by: peer))
        return t
    }

    func deny(_ id: String, by peer: PeerCredentials, reason: String) throws(ApprovalRefusal) -> ApprovalTransition {
        let now = clock.now()
        let (t, waiter) = try state.withLock {
            (s: inout State) throws(ApprovalRefusal) -> (ApprovalTransition, (@Sendable (ApprovalOutcome) -> Void)?) in
            let t = try s.approvals.deny(id, by: peer, reason: reason, now: now)
            return (t, s.waiters.removeValue(forKey: id))
        }
        store?.removeApproval(id)
        waiter?(.denied(reason: reason))
        return t
    }

    /// Expires every approval whose timeout has passed, telling their callers.
    @discardableResult
    func expireDue() -> [ApprovalTransition] {
        let now = clock.now()
        let (expired, waiters) = state.withLock { s in
            let t = s.approvals.expire(now: now)
            return (t, t.compactMap { s.waiters.removeValue(forKey: $0.id) })
        }
        for t in expired { store?.removeApproval(t.id) }
        for w in waiters { w(.expired) }
        return expired
    }

    /// The caller gave up (CANCEL, disconnect) before anyone decided.
    func withdraw(_ id: String) {
        let now = clock.now()
        state.withLock { s in
            _ = s.approvals.withdraw(id, now: now)
            s.waiters[id] = nil
        }
        store?.removeApproval(id)
    }

    /// The call stops waiting (the daemon is shutting down) but the approval stays pending, here and in the state
    /// store, for the next daemon: the same call sent again finds it there.
    func detach(_ id: String) {
        state.withLock { s in
            s.waiters[id] = nil
        }
    }

    /// Drops a decided approval once its caller has been told.
    func forget(_ id: String) {
        state.withLock { $0.approvals.forget(id) }
    }

    var pending: [ApprovalRequest] { state.withLock { $0.approvals.pending } }
}
