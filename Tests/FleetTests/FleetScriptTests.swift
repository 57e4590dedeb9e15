import Fleet
import Governance
import Foundation
import RedisTestKit
import Resilience
import Synchronization
import Testing

extension RedisUnderTest {
    func settings(id: String, timeout: Duration = .milliseconds(200)) -> FleetSettings {
        FleetSettings(endpoint: .unix(path: socket, database: 0), password: nil, keyPrefix: "t:", timeout: timeout,
                      daemonID: id, heartbeat: .milliseconds(100))
    }
}

/// A value several tasks and threads update.
final class Shared<T: Sendable>: Sendable {
    private let m: Mutex<T>
    init(_ value: T) { m = Mutex(value) }
    func withLock<R>(_ body: (inout T) -> R) -> R { m.withLock { body(&$0) } }
}

/// Waits for one answer from the fleet client's thread.
func answer<T: Sendable>(_ body: (@escaping @Sendable (T) -> Void) -> Void) async -> T {
    await withCheckedContinuation { c in body { c.resume(returning: $0) } }
}

/// The cluster store's scripts against a real Redis: exact under concurrency, all-or-nothing, and a store
/// that goes away is reported, not waited on.
@Suite(.serialized) struct FleetScriptTests {
    /// Three clients (three daemons) asking for one request at a time as fast as they can, for 2 s, against
    /// 600 requests a minute with a 1 s burst: together they are granted no more than the burst plus 2 s of the
    /// rate, and each got a share.
    @Test func leasesNeverPassTheLimitAcrossClients() async throws {
        let redis = try RedisUnderTest()
        let rate = FleetRate(rpm: 600, tpm: nil, burstSeconds: 1)
        let clients = try (0..<3).map { i in try FleetClient(settings: redis.settings(id: "d\(i)"), onHealth: { _ in }) }
        let granted = Shared([0, 0, 0])
        let start = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for (i, client) in clients.enumerated() {
                group.addTask {
                    while ContinuousClock.now - start < .seconds(2) {
                        let r: Result<FleetGrant, RedisFailure> = await answer { done in
                            client.acquire("t:k", rate: rate, need: FleetUnits(requests: 1, tokens: 0),
                                           want: FleetUnits(requests: 1, tokens: 0), debtTokens: 0, done: done)
                        }
                        if case .success(let g) = r { granted.withLock { $0[i] += g.granted.requests } }
                    }
                }
            }
        }
        let elapsed = (ContinuousClock.now - start).components.seconds + 1  // rounding up
        let counts = granted.withLock { $0 }
        #expect(counts.reduce(0, +) <= 10 + Int(elapsed) * 10, "\(counts)")
        #expect(counts.reduce(0, +) >= 20, "\(counts)")
        #expect(counts.allSatisfy { $0 > 0 }, "\(counts)")
        clients.forEach { $0.shutdown() }
    }

    /// Requests and tokens are taken together or not at all: a need that fits requests but not tokens takes
    /// neither, and says how long until it fits. A lease given back can be taken again.
    @Test func allOrNothingAndGiveBack() async throws {
        let redis = try RedisUnderTest()
        let client = try FleetClient(settings: redis.settings(id: "d"), onHealth: { _ in })
        defer { client.shutdown() }
        let rate = FleetRate(rpm: 60, tpm: 6000, burstSeconds: 10)  // bursts of 10 requests, 1000 tokens
        func ask(_ r: Int, _ t: Int) async -> FleetGrant? {
            let result: Result<FleetGrant, RedisFailure> = await answer { done in
                client.acquire("t:k2", rate: rate, need: FleetUnits(requests: r, tokens: t),
                               want: FleetUnits(requests: r, tokens: t), debtTokens: 0, done: done)
            }
            return try? result.get()
        }
        let first = await ask(1, 900)
        #expect(first?.granted == FleetUnits(requests: 1, tokens: 900))
        let refused = await ask(1, 200)
        #expect(refused?.granted == FleetUnits(requests: 0, tokens: 0))
        // 100 tokens short at 100 tokens a second: about a second.
        #expect((refused?.wait ?? .zero) > .milliseconds(900) && (refused?.wait ?? .zero) <= .milliseconds(1000))
        client.giveBack("t:k2", rate: rate, FleetUnits(requests: 1, tokens: 900))
        let again = await ask(1, 1000)
        #expect(again?.granted == FleetUnits(requests: 1, tokens: 1000))
    }

    /// A need that does not fit now is granted the next slot, up to the caller's wait: slots follow one another
    /// at the limit's rate, and while later slots are out nothing is granted for now (a queue, never a burst).
    @Test func laterSlotsQueueAtTheRate() async throws {
        let redis = try RedisUnderTest()
        let client = try FleetClient(settings: redis.settings(id: "d"), onHealth: { _ in })
        defer { client.shutdown() }
        // A second a request, one at a time: the milliseconds the asking takes are small beside the slots.
        let rate = FleetRate(rpm: 60, tpm: nil, burstSeconds: 1)
        func ask(maxWait: Duration) async -> FleetGrant? {
            let result: Result<FleetGrant, RedisFailure> = await answer { done in
                client.acquire("t:q", rate: rate, need: FleetUnits(requests: 1, tokens: 0),
                               want: FleetUnits(requests: 5, tokens: 0), debtTokens: 0, maxWait: maxWait, done: done)
            }
            return try? result.get()
        }
        let t0 = ContinuousClock.now
        #expect(await ask(maxWait: .zero)?.granted.requests == 1)  // the burst
        var waits: [Duration] = []
        for _ in 0..<3 {
            let g = await ask(maxWait: .seconds(5))
            #expect(g?.granted.requests == 1)  // the need only, not the lease wanted
            waits.append(g?.wait ?? .zero)
        }
        let took = ContinuousClock.now - t0
        // The slots are 1, 2 and 3 s after the first grant: each wait is that, less the time since it, and the
        // waits are a second apart.
        #expect(waits[0] > .seconds(1) - took && waits[0] <= .seconds(1), "\(waits), asking took \(took)")
        #expect(zip(waits, waits.dropFirst()).allSatisfy { a, b in
            b - a > .milliseconds(1000) - took && b - a <= .milliseconds(1000) + took }, "\(waits), took \(took)")
        let refused = await ask(maxWait: .zero)
        #expect(refused?.granted.requests == 0 && (refused?.wait ?? .zero) > waits[2] + .seconds(1) - took,
                "\(String(describing: refused))")
        #expect(await ask(maxWait: .milliseconds(500))?.granted.requests == 0)  // the next slot is seconds off
    }

    /// Another daemon learned that only 2 requests are left: a third is refused everywhere. A rest set by one
    /// daemon holds every daemon back.
    @Test func learnedLimitsAndRestsAreShared() async throws {
        let redis = try RedisUnderTest()
        let a = try FleetClient(settings: redis.settings(id: "a"), onHealth: { _ in })
        let b = try FleetClient(settings: redis.settings(id: "b"), onHealth: { _ in })
        defer { a.shutdown(); b.shutdown() }
        let rate = FleetRate(rpm: 60, tpm: nil, burstSeconds: 60)
        func ask(_ c: FleetClient, _ key: String) async -> FleetGrant? {
            let result: Result<FleetGrant, RedisFailure> = await answer { done in
                c.acquire(key, rate: rate, need: FleetUnits(requests: 1, tokens: 0),
                          want: FleetUnits(requests: 1, tokens: 0), debtTokens: 0, done: done)
            }
            return try? result.get()
        }
        // Each client runs its commands in order: a's own ask comes back after its report was applied.
        a.remaining("t:r", rate: rate, requests: 2, tokens: nil)
        #expect(await ask(a, "t:r")?.granted.requests == 1)
        #expect(await ask(b, "t:r")?.granted.requests == 1)
        #expect(await ask(b, "t:r")?.granted.requests == 0)
        a.rest("t:s", rate: rate, for: .seconds(5))
        #expect(await ask(a, "t:s")?.granted.requests == 0)
        let rested = await ask(b, "t:s")
        #expect(rested?.granted.requests == 0 && (rested?.wait ?? .zero) > .seconds(4))
    }

    /// The heartbeat counts live daemons; the store stopped is reported unreachable within a heartbeat and a
    /// timeout, a lease request then fails at once, and the store started again is reachable again.
    @Test func anUnreachableStoreIsReportedAndRejoined() async throws {
        let redis = try RedisUnderTest()
        let seen = Shared<[FleetHealth]>([])
        let a = try FleetClient(settings: redis.settings(id: "a"), onHealth: { h in seen.withLock { $0.append(h) } })
        let b = try FleetClient(settings: redis.settings(id: "b"), onHealth: { _ in })
        defer { a.shutdown(); b.shutdown() }
        func waitFor(_ what: String, _ ok: @escaping ([FleetHealth]) -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while !ok(seen.withLock { $0 }) {
                guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        try await waitFor("two live daemons") { $0.last == .reachable(liveDaemons: 2) }
        redis.stop()
        let stopped = ContinuousClock.now
        try await waitFor("unreachable") { if case .unreachable? = $0.last { true } else { false } }
        #expect(ContinuousClock.now - stopped < .seconds(2))
        let failed: Result<FleetGrant, RedisFailure> = await answer { done in
            a.acquire("t:k", rate: FleetRate(rpm: 60, tpm: nil, burstSeconds: 1),
                      need: FleetUnits(requests: 1, tokens: 0), want: FleetUnits(requests: 1, tokens: 0),
                      debtTokens: 0, done: done)
        }
        #expect(throws: RedisFailure.self) { try failed.get() }
        try redis.start()
        try await waitFor("reachable again") { if case .reachable? = $0.last { true } else { false } }
    }

    struct TimedOut: Error { let what: String }

    @Test func endpoints() throws {
        #expect(try RedisEndpoint.parse("redis://10.0.0.5:6380/2").get() == .tcp(host: "10.0.0.5", port: 6380, database: 2))
        #expect(try RedisEndpoint.parse("redis://redis").get() == .tcp(host: "redis", port: 6379, database: 0))
        #expect(try RedisEndpoint.parse("redis://[::1]:7000").get() == .tcp(host: "::1", port: 7000, database: 0))
        #expect(try RedisEndpoint.parse("unix:///run/redis/redis.sock?db=3").get() == .unix(path: "/run/redis/redis.sock", database: 3))
        #expect(RedisEndpoint.problem("redis://:hunter2@host:6379")?.contains("hunter2") == false)
        #expect(RedisEndpoint.problem("redis://:hunter2@host:6379")?.contains("password_credential") == true)
        #expect(RedisEndpoint.problem("rediss://host:6379")?.contains("TLS") == true)
        #expect(RedisEndpoint.problem("redis://host:99999") != nil)
        #expect(RedisEndpoint.problem("http://host") != nil)
    }
}

/// Cluster budgets' scripts against a real Redis: holds across daemons never pass the cap together, lapsed holds
/// are charged in full, a settle or charge sent twice counts once.
@Suite(.serialized) struct FleetBudgetScriptTests {
    static let wallNow = Date().timeIntervalSince1970

    /// A tenant's daily cluster budget of `tokens`, as the ledger hands it to the store.
    static func budgets(tokens: Int64) -> [ClusterBudget] {
        let policy = GovernancePolicy(
            agents: ["a": AgentPolicy(id: "a", tenants: ["acme"])],
            tenants: ["acme": TenantPolicy(budgets: BudgetLimits(daily: BudgetAmount(tokens: tokens),
                                                                 monthly: BudgetAmount(tokens: tokens * 10),
                                                                 scope: .cluster))])
        var ledger = BudgetLedger(policy: policy)
        guard case .reserved(let r) = ledger.reserve(agent: "a", tenant: "acme", model: "m", maxTokens: 1,
                                                     promptTokensEstimate: 0, wallNow: wallNow) else { return [] }
        return r.cluster
    }

    func hold(_ c: FleetClient, _ b: [ClusterBudget], _ id: String, _ tokens: Int64,
              lifetime: Duration = .seconds(60)) async -> BudgetHoldAnswer? {
        let r: Result<BudgetHoldAnswer, RedisFailure> = await answer { done in
            c.holdBudgets(b, id: id, ask: Usage(tokens: tokens), lifetime: lifetime, wallNow: Self.wallNow, done: done)
        }
        return try? r.get()
    }

    func settle(_ c: FleetClient, _ b: [ClusterBudget], _ id: String, _ tokens: Int64) async -> Bool {
        await answer { done in c.settleBudgets(b.map(\.id), id: id, used: Usage(tokens: tokens), done: done) }
    }

    /// Used + held the store reports for the day's budget after a probe hold of 0 tokens (given back).
    func total(_ c: FleetClient, _ b: [ClusterBudget]) async -> Int64? {
        guard case .held(let totals) = await hold(c, b, "probe-\(UUID())", 0) else { return nil }
        return totals.first?.tokens
    }

    /// Three daemons holding 1,000 tokens at a time against a 20,000-token cap, settling each at a random
    /// usage up to its hold: at no point do used + held pass the cap, and the cap is reached.
    @Test func holdsAcrossDaemonsNeverPassTheCap() async throws {
        let redis = try RedisUnderTest()
        let budgets = Self.budgets(tokens: 20_000)
        #expect(budgets.count == 2)
        let clients = try (0..<3).map { i in try FleetClient(settings: redis.settings(id: "d\(i)"), onHealth: { _ in }) }
        let spent = Shared(Int64(0))
        let refusals = Shared(0)
        await withTaskGroup(of: Void.self) { group in
            for (i, client) in clients.enumerated() {
                group.addTask {
                    for n in 0..<40 {
                        let id = "d\(i)-\(n)"
                        switch await hold(client, budgets, id, 1_000) {
                        case .held(let totals)?:
                            #expect(totals[0].tokens <= 20_000, "used + held \(totals[0].tokens) past the cap")
                            let used = Int64.random(in: 200...1_000)
                            spent.withLock { $0 += used }
                            #expect(await settle(client, budgets, id, used))
                        case .refused(let budget, let unit, let used, let reserved)?:
                            #expect(budget == 0 && unit == .tokens)
                            #expect(used + reserved + 1_000 > 20_000)
                            refusals.withLock { $0 += 1 }
                        case nil:
                            Issue.record("no answer")
                        }
                    }
                }
            }
        }
        let used = await total(clients[0], budgets)
        #expect(used == spent.withLock { $0 })
        #expect(used ?? 0 <= 20_000 && used ?? 0 > 19_000, "the cap was reached: \(String(describing: used))")
        #expect(refusals.withLock { $0 } > 0)
        clients.forEach { $0.shutdown() }
    }

    /// A hold whose daemon never settles it lapses and is charged in full; settling it later, or settling any
    /// hold twice, changes nothing; a charge is taken once per id.
    @Test func lapsedHoldsAreChargedAndSettlesAreIdempotent() async throws {
        let redis = try RedisUnderTest()
        let budgets = Self.budgets(tokens: 10_000)
        let c = try FleetClient(settings: redis.settings(id: "d"), onHealth: { _ in })
        defer { c.shutdown() }
        guard case .held = await hold(c, budgets, "gone", 3_000, lifetime: .milliseconds(200)) else {
            Issue.record("not held")
            return
        }
        guard case .held = await hold(c, budgets, "kept", 2_000) else { Issue.record("not held"); return }
        #expect(await total(c, budgets) == 5_000)
        try await Task.sleep(for: .milliseconds(400))  // past the first hold's lifetime (the store's clock decides)
        #expect(await settle(c, budgets, "kept", 500))
        #expect(await settle(c, budgets, "kept", 500))  // again: no change
        #expect(await settle(c, budgets, "gone", 10))  // lapsed and charged at 3,000 already
        #expect(await total(c, budgets) == 3_500)
        let charged: Bool = await answer { done in
            c.chargeBudgets(budgets.map(\.id), id: "degraded-1", used: Usage(tokens: 700), wallNow: Self.wallNow,
                            done: done)
        }
        #expect(charged)
        let again: Bool = await answer { done in
            c.chargeBudgets(budgets.map(\.id), id: "degraded-1", used: Usage(tokens: 700), wallNow: Self.wallNow,
                            done: done)
        }
        #expect(again)
        #expect(await total(c, budgets) == 4_200)
        // All-or-nothing across budgets: 5,900 more fits the day (4,200 + 5,800 = 10,000), 5,801 does not, and a
        // refusal holds nothing.
        guard case .refused(0, .tokens, 4_200, 0) = await hold(c, budgets, "big", 5_801) else {
            Issue.record("not refused")
            return
        }
        guard case .held = await hold(c, budgets, "fits", 5_800) else { Issue.record("not held"); return }
    }
}
