import Dispatch
import Governance
import Resilience
import Synchronization
import Testing

@Suite struct BudgetLedgerTests {
    func reservation(_ d: BudgetDecision, sourceLocation: SourceLocation = #_sourceLocation) throws -> Reservation {
        guard case .reserved(let r) = d else {
            Issue.record("expected a reservation, got \(d)", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        return r
    }

    func exceeded(_ d: BudgetDecision) -> BudgetExceeded? {
        if case .exceeded(let e) = d { return e }
        return nil
    }

    @Test func reserveThenSettleToRealUsage() throws {
        var ledger = BudgetLedger(policy: Fixture.policy())
        // invoice-agent: 10,000 tokens a day. A 1,000-token prompt with max_tokens 2,000 holds 3,000.
        let r = try reservation(ledger.reserve(agent: "invoice-agent", tenant: "acme", model: "gpt-4o-mini",
                                               maxTokens: 2000, promptTokensEstimate: 1000,
                                               wallNow: Fixture.wallNow))
        #expect(r.held.tokens == 3000)
        // 1000 × $0.15/M + 2000 × $0.60/M = $0.00135 = 1350 micro-dollars.
        #expect(r.held.microUSD == 1350)
        var day = ledger.usage(.agent("invoice-agent"), .daily, wallNow: Fixture.wallNow)
        #expect(day.used.tokens == 0)
        #expect(day.held.tokens == 3000)

        let settled = ledger.settle(r, promptTokens: 950, completionTokens: 300)
        let s = try #require(settled)
        #expect(s.tokens == 1250)
        #expect(s.microUSD == 323)  // 950 × 0.15 + 300 × 0.60 = 322.5, rounded up
        day = ledger.usage(.agent("invoice-agent"), .daily, wallNow: Fixture.wallNow)
        #expect(day.used.tokens == 1250)
        #expect(day.held.tokens == 0)
        let month = ledger.usage(.tenant("acme"), .monthly, wallNow: Fixture.wallNow)
        #expect(month.used.microUSD == 323)
        #expect(s.updated.count == 4)  // agent day, agent month, tenant day, tenant month
        // Settling twice changes nothing.
        #expect(ledger.settle(r, promptTokens: 10_000, completionTokens: 0) == nil)
        #expect(ledger.usage(.agent("invoice-agent"), .daily, wallNow: Fixture.wallNow).used.tokens == 1250)
        #expect(ledger.openReservations == 0)
    }

    @Test func reservationsCountAgainstTheLimitUntilSettled() throws {
        var ledger = BudgetLedger(policy: Fixture.policy())
        func reserve() -> BudgetDecision {
            ledger.reserve(agent: "invoice-agent", tenant: "acme", model: "gpt-4o-mini", maxTokens: 3000,
                           promptTokensEstimate: 1000, wallNow: Fixture.wallNow)
        }
        let a = try reservation(reserve())
        let b = try reservation(reserve())
        let refused = try #require(exceeded(reserve()))
        #expect(refused.subject == .agent("invoice-agent"))
        #expect(refused.window == .daily)
        #expect(refused.unit == .tokens)
        #expect(refused.limit == 10_000)
        #expect(refused.used == 0)
        #expect(refused.reserved == 8000)
        #expect(refused.requested == 4000)
        #expect(refused.rule == "agents.invoice-agent.budgets.daily.tokens")
        #expect(refused.resetsAt == RFC3339.parse("2025-06-16T00:00:00Z"))
        #expect(refused.description.contains("resets 2025-06-16T00:00:00Z"))
        let decision = BudgetDecision.exceeded(refused).decision
        if case .deny(_, let code, _) = decision {
            #expect(code == .budgetExceeded)
        } else {
            Issue.record("\(decision)")
        }

        // Settling a call that used little frees the rest of its hold.
        ledger.settle(a, promptTokens: 1000, completionTokens: 500)
        _ = try reservation(reserve())
        ledger.release(b)
        #expect(ledger.usage(.agent("invoice-agent"), .daily, wallNow: Fixture.wallNow).used.tokens == 1500)
    }

    @Test func costBudgetPerTenantAndUnpricedModels() throws {
        var policy = Fixture.policy()
        policy.tenants["acme"] = TenantPolicy(budgets: BudgetLimits(monthly: BudgetAmount(microUSD: 100_000)))
        var ledger = BudgetLedger(policy: policy)
        // refund-agent has no budget of its own; tenant acme has $0.10 a month. gpt-4o: 4000 × $10/M = $0.04.
        func reserve(_ tenant: String, _ model: String = "gpt-4o") -> BudgetDecision {
            ledger.reserve(agent: "refund-agent", tenant: tenant, model: model, maxTokens: 4000,
                           promptTokensEstimate: 0, wallNow: Fixture.wallNow)
        }
        _ = try reservation(reserve("acme"))
        _ = try reservation(reserve("acme"))
        let e = try #require(exceeded(reserve("acme")))
        #expect(e.subject == .tenant("acme"))
        #expect(e.unit == .microUSD)
        #expect(e.rule == "tenants.acme.budgets.monthly.cost_usd")
        #expect(e.description.contains("$0.08 reserved"))
        #expect(e.resetsAt == RFC3339.parse("2025-07-01T00:00:00Z"))
        // Another tenant has no budget.
        _ = try reservation(reserve("globex"))
        // A model without a price cannot be checked against a cost budget.
        #expect(reserve("acme", "mystery-model") == .unpriced(model: "mystery-model",
                                                              rule: "tenants.acme.budgets.monthly.cost_usd"))
        _ = try reservation(reserve("globex", "mystery-model"))
    }

    @Test func calendarWindowsRollOver() throws {
        var ledger = BudgetLedger(policy: Fixture.policy())
        let lateJune30 = RFC3339.parse("2025-06-30T23:59:59Z")!
        let r = try reservation(ledger.reserve(agent: "invoice-agent", tenant: "acme", model: "gpt-4o-mini",
                                               maxTokens: 9000, promptTokensEstimate: 1000, wallNow: lateJune30))
        // The call finishes after midnight: it is charged to the day it was reserved in.
        ledger.settle(r, promptTokens: 1000, completionTokens: 9000)
        #expect(ledger.usage(.agent("invoice-agent"), .daily, wallNow: lateJune30).used.tokens == 10_000)
        let july1 = lateJune30 + 1
        #expect(ledger.usage(.agent("invoice-agent"), .daily, wallNow: july1).used.tokens == 0)
        #expect(ledger.usage(.agent("invoice-agent"), .monthly, wallNow: july1).used.tokens == 0)
        _ = try reservation(ledger.reserve(agent: "invoice-agent", tenant: "acme", model: "gpt-4o-mini",
                                           maxTokens: 9000, promptTokensEstimate: 1000, wallNow: july1))
        ledger.prune(wallNow: july1)
        #expect(ledger.snapshot().entries.allSatisfy { !$0.period.hasPrefix("2025-06") })
    }

    @Test func snapshotRestoresUsageAfterARestart() throws {
        var ledger = BudgetLedger(policy: Fixture.policy())
        let r = try reservation(ledger.reserve(agent: "invoice-agent", tenant: "acme", model: "gpt-4o-mini",
                                               maxTokens: 5000, promptTokensEstimate: 1000,
                                               wallNow: Fixture.wallNow))
        ledger.settle(r, promptTokens: 1000, completionTokens: 5000)
        let saved = try JSONRoundTrip.roundTrip(ledger.snapshot())
        #expect(saved.entries.contains(BudgetSnapshot.Entry(subject: "agent", name: "invoice-agent", window: "daily",
                                                            period: "2025-06-15", tokens: 6000, microUSD: 3150)))
        #expect(saved.entries.contains { $0.subject == "tenant" && $0.window == "monthly" && $0.period == "2025-06" })

        var restarted = BudgetLedger(policy: Fixture.policy())
        #expect(restarted.restore(saved).isEmpty)
        #expect(restarted.usage(.agent("invoice-agent"), .daily, wallNow: Fixture.wallNow).used.tokens == 6000)
        // What is left today is 4,000 tokens.
        #expect(exceeded(restarted.reserve(agent: "invoice-agent", tenant: "acme", model: "gpt-4o-mini",
                                           maxTokens: 4000, promptTokensEstimate: 1,
                                           wallNow: Fixture.wallNow)) != nil)
        let bad = BudgetSnapshot(entries: [BudgetSnapshot.Entry(subject: "agent", name: "x", window: "weekly",
                                                                period: "2025-W24", tokens: 1, microUSD: 0)])
        #expect(restarted.restore(bad).count == 1)
    }

    /// Many threads race one ledger behind a Mutex, as the daemon's event loops would: the sum of what was used
    /// and what is held never passes the limit, at any moment, and every token of the limit can be used.
    @Test func concurrentCallsCannotOvershoot() throws {
        var policy = Fixture.policy()
        policy.agents["invoice-agent"]?.budgets = BudgetLimits(daily: BudgetAmount(tokens: 100_000))
        let ledger = Mutex(BudgetLedger(policy: policy))
        let violations = Atomic<Int>(0)
        let granted = Atomic<Int>(0)
        let refused = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            var held: [Reservation] = []
            var rng = SplitMix(seed: UInt64(worker) &+ 1)
            for i in 0..<400 {
                let decision = ledger.withLock {
                    $0.reserve(agent: "invoice-agent", tenant: "acme", model: "gpt-4o-mini", maxTokens: 900,
                               promptTokensEstimate: 100, wallNow: Fixture.wallNow)
                }
                switch decision {
                case .reserved(let r):
                    granted.add(1, ordering: .relaxed)
                    held.append(r)
                default:
                    refused.add(1, ordering: .relaxed)
                }
                // Settle some of what this worker holds, each with real usage at most its hold.
                if i % 3 == 2 || held.count > 4, !held.isEmpty {
                    let r = held.removeFirst()
                    let completion = Int(rng.next() % 901)
                    ledger.withLock { _ = $0.settle(r, promptTokens: 100, completionTokens: completion) }
                }
                let over = ledger.withLock { l in
                    let u = l.usage(.agent("invoice-agent"), .daily, wallNow: Fixture.wallNow)
                    return u.used.tokens + u.held.tokens > 100_000
                }
                if over { violations.add(1, ordering: .relaxed) }
            }
            for r in held {
                ledger.withLock { _ = $0.settle(r, promptTokens: 100, completionTokens: 900) }
            }
        }
        let final = ledger.withLock { $0.usage(.agent("invoice-agent"), .daily, wallNow: Fixture.wallNow) }
        #expect(violations.load(ordering: .relaxed) == 0)
        #expect(final.held.tokens == 0)
        #expect(final.used.tokens <= 100_000)
        #expect(granted.load(ordering: .relaxed) + refused.load(ordering: .relaxed) == 3200)
        #expect(refused.load(ordering: .relaxed) > 0, "the race must actually reach the limit")
        #expect(ledger.withLock { $0.openReservations } == 0)
    }
}

/// A tiny deterministic generator, so the race's usage figures are reproducible per worker.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Budgets with `scope: cluster`: the ledger leaves them to the store while it answers, and holds them on this
/// daemon's share of what the store last said was left while it does not.
@Suite struct ClusterBudgetLedgerTests {
    static func policy() -> GovernancePolicy {
        var policy = Fixture.policy()
        policy.tenants["acme"] = TenantPolicy(budgets: BudgetLimits(daily: BudgetAmount(tokens: 10_000),
                                                                    scope: .cluster))
        return policy
    }

    func reserve(_ ledger: inout BudgetLedger, maxTokens: Int = 900) -> BudgetDecision {
        ledger.reserve(agent: "refund-agent", tenant: "acme", model: "gpt-4o-mini", maxTokens: maxTokens,
                       promptTokensEstimate: 100, wallNow: Fixture.wallNow)
    }

    @Test func clusterBudgetsAreLeftToTheStoreWhileItAnswers() throws {
        var ledger = BudgetLedger(policy: Self.policy())
        // Far past the cap, yet not refused here: the store decides.
        var holds: [Reservation] = []
        for _ in 0..<20 {
            guard case .reserved(let r) = reserve(&ledger) else { Issue.record("refused locally"); return }
            #expect(r.heldInStore)
            #expect(r.cluster.count == 1)
            #expect(r.cluster[0].id.storeName == "budget:tenant:acme:daily:2025-06-15")
            #expect(r.cluster[0].limit.tokens == 10_000)
            holds.append(r)
        }
        #expect(ledger.usage(.tenant("acme"), .daily, wallNow: Fixture.wallNow).held.tokens == 0)
        let settled = ledger.settle(holds[0], promptTokens: 100, completionTokens: 400)
        let s = try #require(settled)
        #expect(s.usage.tokens == 500)
        // The agent's (host) usage goes to the local state store; the tenant's cluster budget is the store's.
        #expect(s.updated.map(\.subject) == ["agent", "agent"])
        #expect(ledger.snapshot().entries.allSatisfy { $0.subject == "agent" })
    }

    @Test func unreachableStoreHoldsTheShareOfWhatWasLeft() throws {
        var ledger = BudgetLedger(policy: Self.policy())
        guard case .reserved(let first) = reserve(&ledger) else { Issue.record("refused"); return }
        // The store said 6,000 of 10,000 are used and held; then it went away, with three daemons seen.
        ledger.storeSaid(first.cluster[0].id, Usage(tokens: 6_000))
        ledger.clusterShare = 1.0 / 3
        // A third of the 4,000 left is 1,333: one 1,000-token hold fits, a second does not.
        guard case .reserved(let local) = reserve(&ledger) else { Issue.record("refused"); return }
        #expect(local.clusterLocal && !local.heldInStore)
        guard case .exceeded(let e) = reserve(&ledger) else { Issue.record("not refused"); return }
        #expect(e.subject == .tenant("acme") && e.limit == 1_333 && e.reserved == 1_000)
        #expect(e.rule == "tenants.acme.budgets.daily.tokens")
        // Settled here: the usage stays on this daemon until the store takes the charge.
        let settled = ledger.settle(local, promptTokens: 100, completionTokens: 200)
        let s = try #require(settled)
        #expect(s.reservation.clusterLocal)
        #expect(ledger.usage(.tenant("acme"), .daily, wallNow: Fixture.wallNow).used.tokens == 300)
        ledger.charged(s.reservation.cluster.map(\.id), s.usage)
        #expect(ledger.usage(.tenant("acme"), .daily, wallNow: Fixture.wallNow).used.tokens == 0)
        // The store is back: nothing is held here again.
        ledger.clusterShare = nil
        guard case .reserved(let again) = reserve(&ledger) else { Issue.record("refused"); return }
        #expect(again.heldInStore)
    }

    @Test func aFailedStoreHoldFallsBackToTheLocalShare() throws {
        var ledger = BudgetLedger(policy: Self.policy())
        guard case .reserved(let r) = reserve(&ledger, maxTokens: 4_900) else { Issue.record("refused"); return }
        ledger.clusterShare = 0.5
        // Half of the whole cap (the store never answered for it): 5,000 — the 5,000-token hold fits, once.
        guard case .reserved(let local) = ledger.holdLocally(r) else { Issue.record("refused"); return }
        #expect(local.clusterLocal)
        // A second call, with the share set, is checked here from the start: 5,000 + 5,000 > 5,000.
        guard case .exceeded(let e) = reserve(&ledger, maxTokens: 4_900) else { Issue.record("not refused"); return }
        #expect(e.limit == 5_000 && e.reserved == 5_000)
        #expect(ledger.openReservations == 1)
        let settled = ledger.settle(local, promptTokens: 100, completionTokens: 100)
        #expect(settled != nil)
        #expect(ledger.openReservations == 0)
    }

    @Test func theStoresRefusalNamesTheBudget() {
        var ledger = BudgetLedger(policy: Self.policy())
        guard case .reserved(let r) = reserve(&ledger) else { Issue.record("refused"); return }
        guard case .exceeded(let e) = ledger.storeRefused(r, budget: 0, unit: .tokens, used: 9_500, reserved: 0) else {
            Issue.record("not refused")
            return
        }
        #expect(e.limit == 10_000 && e.used == 9_500 && e.requested == 1_000)
        #expect(e.description.contains("tenant \"acme\" daily budget"))
        #expect(ledger.openReservations == 0)
    }
}
