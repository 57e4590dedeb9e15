import Config
import Fleet
import Foundation
import Logging
import Resilience
import Synchronization
import Systemd

/// The host-wide resilience state every connection shares: a circuit breaker per (provider, model) and a retry
/// budget per provider. Each is a small state machine behind one lock; transitions are logged after the lock is
/// released.
final class ResilienceRegistry: Sendable {
    struct KeyPoolShape: Hashable {
        var keys: Int
        var limits: KeyPool.Limits
        /// The config generation the pool was built for.
        var generation: Int
    }

    struct BreakerKey: Hashable, Sendable {
        var provider: String
        var model: String
        var description: String { provider + "/" + model }
    }

    private struct State {
        var breakers: [BreakerKey: CircuitBreaker] = [:]
        var budgets: [String: RetryBudget] = [:]
        var keyPools: [String: KeyPool] = [:]
        /// What each pool was built for; a reload that changes a provider's keys or limits gets a fresh pool.
        var keyPoolShapes: [String: KeyPoolShape] = [:]
        /// The config generation each breaker's policy comes from.
        var breakerGenerations: [BreakerKey: Int] = [:]
        /// When each target last raised a failure-rate alert (at most one per rolling window).
        var lastAlert: [BreakerKey: Instant] = [:]
        /// What the engine did per provider since start, for `breakwater status` and benchmarks.
        var counters: [String: ProviderCounters] = [:]
        /// Key reservations granted (`acquireKey`, `reserveKey`) and not yet settled, host-wide.
        var keysHeld = 0
        /// The cluster store, when the config has one (`cluster:`).
        var cluster: ClusterLink?
        /// The governance registry, whose cluster budgets hear of the store's health too.
        var clusterBudgets: GovernanceRegistry?
    }

    /// An unused lease to hand back to the cluster store: where, under which key, at which rate, how much.
    private typealias GiveBack = (client: FleetClient, key: String, rate: FleetRate, units: FleetUnits)

    /// Lease requests to send to the cluster store, gathered under the lock and sent after it.
    private struct Refills {
        var client: FleetClient
        var provider: String
        var names: [String]
        var rate: FleetRate
        var due: [(index: Int, refill: ClusterShare.Refill)]
    }

    /// Per-provider counts since start: first attempts, retries made, retries the budget refused, breaker openings.
    struct ProviderCounters: Sendable {
        var firstAttempts = 0
        var retries = 0
        var retriesRefused = 0
        var breakerOpenings = 0
    }

    let clock: any ResilienceClock
    private let state = Mutex(State())
    private let logger: Logger
    private let audit: JournalAuditWriter?
    /// Where open breakers are kept across restarts.
    private let store: StateStore?

    /// Breaker transitions are counted here (the daemon's metrics); nil in tests that do not look.
    let metrics: DaemonMetrics?

    init(clock: any ResilienceClock = SystemClock(), logger: Logger, audit: JournalAuditWriter? = nil,
         store: StateStore? = nil, metrics: DaemonMetrics? = nil) {
        self.metrics = metrics
        self.clock = clock
        self.logger = logger
        self.audit = audit
        self.store = store
    }

    /// At start-up: breakers that were open when the daemon stopped (or crashed) open again with the reopen time
    /// they had, so a dead provider is not hit again just because the daemon restarted. One whose reopen time
    /// passed meanwhile lets a probe in on the next call. Targets no longer configured are dropped.
    func restoreBreakers(router: Router) {
        guard let store else { return }
        let rows: [StateStore.BreakerRow]
        do {
            rows = try store.loadBreakers()
        } catch {
            logger.error("could not read open breakers from the state store", metadata: ["error": "\(error)"])
            return
        }
        let targets = Dictionary(router.routes.values.flatMap(\.chain).map {
            (BreakerKey(provider: $0.provider.name, model: $0.model), $0)
        }, uniquingKeysWith: { a, _ in a })
        let now = clock.now()
        let wall = Date().timeIntervalSince1970
        for row in rows {
            let key = BreakerKey(provider: row.provider, model: row.model)
            guard let target = targets[key] else {
                store.saveBreaker(target: key.description, nil)
                continue
            }
            let until = now + .seconds(row.reopensAt - wall)
            state.withLock { s in
                var breaker = CircuitBreaker(policy: target.provider.breaker)
                breaker.restoreOpen(until: until)
                s.breakers[key] = breaker
            }
            logger.warning("circuit breaker restored open from the state store", metadata: [
                "target": "\(key.description)", "reopens_in_ms": "\(max(0, Int64((row.reopensAt - wall) * 1000)))",
            ])
        }
    }

    /// May an attempt go to `target` now?
    func acquire(_ target: ResolvedTarget) -> CircuitBreaker.Permit {
        let key = BreakerKey(provider: target.provider.name, model: target.model)
        let now = clock.now()
        let (permit, transitions) = state.withLock { s in
            var breaker = Self.breaker(key, target.provider, in: &s)
            defer { s.breakers[key] = breaker }
            return breaker.acquire(now: now)
        }
        log(transitions, key)
        return permit
    }

    /// Why `target` cannot take a call now — no API key, or its breaker open — or nil when it can (rate-limit pacing
    /// only delays a call, so it is not counted). For `GET /healthz`.
    func unavailability(_ target: ResolvedTarget) -> String? {
        guard !target.provider.apiKeys.isEmpty else { return "no API key" }
        let key = BreakerKey(provider: target.provider.name, model: target.model)
        let now = clock.now()
        let allows = state.withLock { s in s.breakers[key]?.wouldAllow(now: now) ?? true }
        return allows ? nil : "circuit breaker open"
    }

    /// Whether `target` could take a call of `tokens` now: its breaker would let it through and one of its keys
    /// is free. Takes nothing; for deciding between waiting here and moving on.
    func isReady(_ target: ResolvedTarget, tokens: Int) -> Bool {
        guard !target.provider.apiKeys.isEmpty else { return false }
        let key = BreakerKey(provider: target.provider.name, model: target.model)
        let now = clock.now()
        return state.withLock { s in
            guard s.breakers[key]?.wouldAllow(now: now) ?? true else { return false }
            guard let pool = s.keyPools[target.provider.name] else { return true }
            return pool.earliest(tokens: tokens, now: now) <= now
        }
    }

    /// Reports an attempt's outcome to the target's breaker; returns whether it counted as a failure there
    /// (a failure that says the provider is unhealthy, or a slow call). `endsCall`: the call leaves the target
    /// with this attempt (its answer), reported under the same lock as `recordCallOutcome` would.
    @discardableResult
    func record(_ target: ResolvedTarget, failed: Bool, duration: Duration, isProbe: Bool,
                endsCall: Bool = false) -> Bool {
        let key = BreakerKey(provider: target.provider.name, model: target.model)
        let now = clock.now()
        let (transitions, alert, counted) = state.withLock { s -> ([BreakerTransition], (Int, Int)?, Bool) in
            var breaker = Self.breaker(key, target.provider, in: &s)
            defer { s.breakers[key] = breaker }
            let counted = breaker.countsAsFailure(failed: failed, duration: duration)
            var t = breaker.record(failed: failed, duration: duration, isProbe: isProbe, now: now)
            if endsCall { t += breaker.recordCall(failed: counted, now: now) }
            Self.countOpenings(t, key, in: &s)
            // A failure rate over the alert threshold, while the breaker is still closed: warn once per window.
            let policy = breaker.policy
            guard counted, t.isEmpty, breaker.stateName == .closed, let threshold = policy.alertFailureRate
            else { return (t, nil, counted) }
            let (calls, failures) = breaker.windowCounts(now: now)
            guard calls >= policy.minimumCalls, Double(failures) / Double(calls) >= threshold,
                  s.lastAlert[key].map({ now - $0 >= policy.rollingWindow }) ?? true else { return (t, nil, counted) }
            s.lastAlert[key] = now
            return (t, (calls, failures), counted)
        }
        log(transitions, key)
        if let (calls, failures) = alert {
            let threshold = target.provider.breaker.alertFailureRate ?? 0
            logger.warning("failure rate over the alert threshold", metadata: [
                "target": "\(key.description)", "failures": "\(failures)", "calls": "\(calls)",
            ])
            var e = AuditEvent(.failureRateAlert)
            e.provider = key.provider
            e.model = key.model
            e[.breaker] = key.description
            e[.failureRate] = String(format: "%.3f", Double(failures) / Double(calls))
            e[.failureRateThreshold] = String(format: "%.3f", threshold)
            e.set(.sampleCount, calls)
            audit?.record(e)
        }
        return counted
    }

    /// Reports how a call left `target` after its retries there (see `CircuitBreaker.recordCall`): `failed` when
    /// its last attempt counted as a failure, false when it got its answer.
    func recordCallOutcome(_ target: ResolvedTarget, failed: Bool) {
        let key = BreakerKey(provider: target.provider.name, model: target.model)
        let now = clock.now()
        let transitions = state.withLock { s in
            var breaker = Self.breaker(key, target.provider, in: &s)
            defer { s.breakers[key] = breaker }
            let t = breaker.recordCall(failed: failed, now: now)
            Self.countOpenings(t, key, in: &s)
            return t
        }
        log(transitions, key)
    }

    private static func countOpenings(_ transitions: [BreakerTransition], _ key: BreakerKey, in s: inout State) {
        let opened = transitions.filter { $0.to == .open }.count
        if opened > 0 { s.counters[key.provider, default: ProviderCounters()].breakerOpenings += opened }
    }

    /// The engine's counts per provider since start, sorted by provider.
    func counterReport() -> [(provider: String, counters: ProviderCounters)] {
        state.withLock { s in s.counters.map { ($0.key, $0.value) }.sorted { $0.provider < $1.provider } }
    }

    /// The target's breaker. After a reload changed its thresholds, the first call on the new config gives it
    /// a fresh breaker with them — once it is closed: an open or half-open one keeps its state (and reopen time)
    /// under the old thresholds until it closes. Calls still on the old config never switch it back.
    private static func breaker(_ key: BreakerKey, _ provider: ProviderRuntime,
                                in s: inout State) -> CircuitBreaker {
        guard let existing = s.breakers[key] else {
            s.breakerGenerations[key] = provider.generation
            return CircuitBreaker(policy: provider.breaker)
        }
        let built = s.breakerGenerations[key] ?? 0
        guard provider.generation > built else { return existing }
        if existing.policy == provider.breaker {
            s.breakerGenerations[key] = provider.generation
            return existing
        }
        guard existing.stateName == .closed else { return existing }
        s.breakerGenerations[key] = provider.generation
        return CircuitBreaker(policy: provider.breaker)
    }

    /// A probe ended without a verdict (cancelled): free its half-open slot.
    func releaseProbe(_ target: ResolvedTarget) {
        let key = BreakerKey(provider: target.provider.name, model: target.model)
        state.withLock { s in s.breakers[key]?.releaseProbe() }
    }

    private static func budget(for provider: ProviderRuntime) -> RetryBudget {
        let settings = provider.retryBudget
        return RetryBudget(ratio: settings.ratio, minRetriesPerSecond: settings.minRetriesPerSecond,
                           window: settings.window)
    }

    /// Counts a call's first attempt at a provider in the provider's retry budget.
    func recordFirstAttempt(_ provider: ProviderRuntime) {
        let now = clock.now()
        state.withLock { s in
            var b = s.budgets[provider.name] ?? Self.budget(for: provider)
            b.recordCall(now: now)
            s.budgets[provider.name] = b
            s.counters[provider.name, default: ProviderCounters()].firstAttempts += 1
        }
    }

    /// Takes back a first attempt counted by `recordFirstAttempt` that never reached the provider (a local
    /// configuration error); `wasFirst` false: nothing to take back.
    func forgetFirstAttempt(_ provider: ProviderRuntime, _ wasFirst: Bool) {
        guard wasFirst else { return }
        let now = clock.now()
        state.withLock { s in
            s.budgets[provider.name]?.forgetCall(now: now)
            s.counters[provider.name, default: ProviderCounters()].firstAttempts -= 1
        }
    }

    /// Takes a retry from the provider's budget, if it has room.
    func tryRetry(_ provider: ProviderRuntime) -> Bool {
        let now = clock.now()
        return state.withLock { s in
            var b = s.budgets[provider.name] ?? Self.budget(for: provider)
            defer { s.budgets[provider.name] = b }
            let allowed = b.tryRetry(now: now)
            if allowed {
                s.counters[provider.name, default: ProviderCounters()].retries += 1
            } else {
                s.counters[provider.name, default: ProviderCounters()].retriesRefused += 1
            }
            return allowed
        }
    }

    /// Picks the provider key for an attempt, under the key's RPM/TPM limits.
    func acquireKey(_ provider: ProviderRuntime, tokens: Int) -> KeyPool.Grant {
        let now = clock.now()
        // A call that finds a cluster lease short goes on to `reserveKey`, whose lease request carries how long
        // it may wait (so the store can grant it the next slot): none is sent from here.
        return withKeyPool(provider, now: now, refillUnless: { if case .wait = $0 { true } else { false } }) {
            pool, held in
            let grant = pool.acquire(tokens: tokens, now: now)
            if case .key = grant { held += 1 }
            return grant
        }
    }

    /// Reserves the provider key that is free soonest, at the earliest time its limits allow, if no later than
    /// `notAfter`: the call's place in the queue for the provider's rate limit.
    /// With cluster limits, a key whose lease is short holds nothing: `.lookAgain`.
    func reserveKey(_ provider: ProviderRuntime, tokens: Int, notAfter: Instant) -> KeyPool.Place? {
        let now = clock.now()
        return withKeyPool(provider, now: now) { pool, held in
            let place = pool.reserve(tokens: tokens, now: now, notAfter: notAfter)
            if case .held = place { held += 1 }
            return place
        }
    }

    /// What calls hold and have not given back: key reservations, and half-open probe slots over all breakers.
    /// Both are zero whenever no call is in flight; a call that gave something back twice shows as negative keys.
    func outstandingHolds() -> (keys: Int, probes: Int) {
        state.withLock { s in (s.keysHeld, s.breakers.values.reduce(0) { $0 + $1.probesInFlight }) }
    }

    private func withKeyPool<T>(_ provider: ProviderRuntime, now: Instant, refillUnless skip: (T) -> Bool = { _ in false },
                                _ body: (inout KeyPool, inout Int) -> T) -> T {
        let (result, refills) = state.withLock { s -> (T, Refills?) in
            let shape = KeyPoolShape(keys: provider.apiKeys.count, limits: provider.config.rateLimits,
                                     generation: provider.generation)
            var pool: KeyPool
            var built = false
            if let made = s.keyPoolShapes[provider.name], let existing = s.keyPools[provider.name],
               made.generation >= shape.generation
                || (made.keys == shape.keys && made.limits == shape.limits) {
                // Built for this config (or a newer one: a call still on the old config keeps the new pool).
                pool = existing
                if shape.generation > made.generation { s.keyPoolShapes[provider.name] = shape }
            } else {
                s.keyPoolShapes[provider.name] = shape
                pool = KeyPool(keyCount: shape.keys, limits: shape.limits)
                built = true
            }
            if built, pool.isCluster { Self.joinCluster(&pool, provider, &s, now: now) }
            defer { s.keyPools[provider.name] = pool }
            let result = body(&pool, &s.keysHeld)
            guard !skip(result), pool.isCluster, let link = s.cluster, link.reachable, let keys = link.keys[provider.name] else {
                return (result, nil)
            }
            let due = pool.dueRefills(now: now)
            return (result, due.isEmpty ? nil : Refills(client: link.client, provider: provider.name,
                                                        names: keys.names, rate: keys.rate, due: due))
        }
        if let refills { send(refills) }
        return result
    }

    // MARK: Cluster limits (`rate_limits: {scope: cluster}`)

    /// Connects to the cluster store (`cluster:`): a thread of its own, whose heartbeat reports here.
    /// `budgets`: where budgets with `scope: cluster` are kept (they share the store's client and health).
    func attachCluster(_ config: ClusterConfig, environment: [String: String],
                       budgets: GovernanceRegistry? = nil) throws {
        let link = try ClusterLink.start(config, environment: environment) { [weak self] health in
            self?.clusterHealth(health)
        }
        budgets?.attachClusterStore(link.client, share: link.share)
        state.withLock {
            $0.cluster = link
            $0.clusterBudgets = budgets
        }
        logger.info("cluster store configured", metadata: ["store": "\(link.store)"])
    }

    /// At shutdown: gives every lease back to the store, leaves its set of live daemons, stops the thread.
    func detachCluster() {
        let (link, idle) = state.withLock { s -> (ClusterLink?, [GiveBack]) in
            defer { s.cluster = nil }
            return (s.cluster, Self.takeIdleLeases(&s, idleSince: Instant(nanoseconds: .max)))
        }
        Self.giveBack(idle)
        link?.client.shutdown()
    }

    /// A new cluster pool: its keys' names in the store, and the local share if the store is down now.
    private static func joinCluster(_ pool: inout KeyPool, _ provider: ProviderRuntime, _ s: inout State,
                                    now: Instant) {
        guard var link = s.cluster else {
            pool.fallBack(share: 1, now: now)  // not reached: the config loader requires cluster: for scope cluster
            return
        }
        let limits = provider.config.rateLimits
        let names = provider.apiKeys.map { link.client.rateKey(provider: provider.name, apiKey: $0.value) }
        link.keys[provider.name] = (names, FleetRate(limits))
        if !link.reachable { pool.fallBack(share: link.share, now: now) }
        s.cluster = link
    }

    private func send(_ r: Refills) {
        for (index, refill) in r.due where r.names.indices.contains(index) {
            let provider = r.provider
            let debt = refill.debtTokens
            r.client.acquire(r.names[index], rate: r.rate, need: refill.need, want: refill.want, debtTokens: debt,
                             maxWait: refill.maxWait) { [weak self, rate = r.rate] result in
                self?.leaseAnswered(provider: provider, index: index, result, debtTokens: debt, rate: rate)
            }
        }
    }

    /// The store's answer to a lease request (on the cluster client's thread).
    private func leaseAnswered(provider: String, index: Int, _ result: Result<FleetGrant, RedisFailure>,
                               debtTokens: Int, rate: FleetRate) {
        let now = clock.now()
        state.withLock { s in
            guard var pool = s.keyPools[provider] else { return }
            switch result {
            case .success(let grant):
                var wait = grant.wait
                if grant.granted.requests == 0, grant.granted.tokens == 0, wait > .zero {
                    // Refused until `wait`: every daemon refused now was told the same time, and the first to ask
                    // again would win it every time. Up to one slot of jitter makes the winner a draw.
                    let slot = min(50_000, Int64(rate.requestInterval > 0 ? rate.requestInterval : 1000))
                    wait += .microseconds(Int64.random(in: 0...max(1, slot)))
                }
                pool.leaseGranted(index: index, requests: grant.granted.requests, tokens: grant.granted.tokens,
                                  wait: wait, now: now)
            case .failure:
                pool.leaseFailed(index: index, debtTokens: debtTokens)
            }
            s.keyPools[provider] = pool
        }
    }

    /// Leases unused for 2 s, emptied, with where to give them back.
    private static func takeIdleLeases(_ s: inout State, idleSince: Instant) -> [GiveBack] {
        guard let link = s.cluster else { return [] }
        var back: [GiveBack] = []
        for (provider, keys) in link.keys {
            guard var pool = s.keyPools[provider], pool.isCluster else { continue }
            for (index, r, t) in pool.takeIdleLeases(idleSince: idleSince) where keys.names.indices.contains(index) {
                back.append((link.client, keys.names[index], keys.rate, FleetUnits(requests: r, tokens: t)))
            }
            s.keyPools[provider] = pool
        }
        return back
    }

    private static func giveBack(_ leases: [GiveBack]) {
        for l in leases { l.client.giveBack(l.key, rate: l.rate, l.units) }
    }

    /// The cluster client's heartbeat, or a command that failed: the store answers (with the live daemons'
    /// count) or does not. Losing it moves every cluster key to its local share; its return moves them back.
    private func clusterHealth(_ health: FleetHealth) {
        let now = clock.now()
        enum Change { case lost(String, ClusterLink), back(Duration, ClusterLink) }
        let (change, idle, budgets) = state.withLock { s -> (Change?, [GiveBack], (GovernanceRegistry, Bool, Double)?) in
            guard var link = s.cluster else { return (nil, [], nil) }
            var change: Change?
            switch health {
            case .reachable(let live):
                link.liveDaemons = live
                if !link.reachable {
                    link.reachable = true
                    let since = link.degradedSince ?? now
                    link.degradedSince = nil
                    for (name, var pool) in s.keyPools where pool.isCluster {
                        pool.rejoin()
                        s.keyPools[name] = pool
                    }
                    change = .back(now - since, link)
                }
            case .unreachable(let failure):
                if link.reachable {
                    link.reachable = false
                    link.degradedSince = now
                    link.outages += 1
                    for (name, var pool) in s.keyPools where pool.isCluster {
                        pool.fallBack(share: link.share, now: now)
                        s.keyPools[name] = pool
                    }
                    change = .lost(failure.description, link)
                }
            }
            s.cluster = link
            let idle = link.reachable ? Self.takeIdleLeases(&s, idleSince: now - .seconds(2)) : []
            return (change, idle, s.clusterBudgets.map { ($0, link.reachable, link.share) })
        }
        Self.giveBack(idle)
        if let (governance, reachable, share) = budgets { governance.clusterHealth(reachable: reachable, share: share) }
        switch change {
        case .lost(let why, let link):
            logger.warning("cluster store unreachable: cluster rate limits and budgets run on this daemon's local share", metadata: [
                "store": "\(link.store)", "error": "\(why)", "share": "\(Self.format(link.share))",
                "live_daemons": "\(link.liveDaemons)",
            ])
            var e = AuditEvent(.clusterDegraded)
            e[.clusterStore] = link.store
            e.set(.liveDaemons, link.liveDaemons)
            e[.fallbackShare] = Self.format(link.share)
            e.reason = why
            audit?.record(e)
        case .back(let down, let link):
            let ms = down.nanoseconds / 1_000_000
            logger.notice("cluster store reachable again: cluster rate limits and budgets are shared again", metadata: [
                "store": "\(link.store)", "degraded_ms": "\(ms)", "live_daemons": "\(link.liveDaemons)",
            ])
            var e = AuditEvent(.clusterRestored)
            e[.clusterStore] = link.store
            e.set(.liveDaemons, link.liveDaemons)
            e.set(.degradedMilliseconds, ms)
            audit?.record(e)
        case nil:
            break
        }
    }

    private static func format(_ share: Double) -> String { String(format: "%.3f", share) }

    /// For `breakwater status`: the store, whether it answers, and what each cluster key holds.
    func clusterReport() -> [String: Any]? {
        let now = clock.now()
        return state.withLock { s -> [String: Any]? in
            guard let link = s.cluster else { return nil }
            var report: [String: Any] = [
                "store": link.store, "reachable": link.reachable, "live_daemons": link.liveDaemons,
                "outages": link.outages, "fallback_share": (link.share * 1000).rounded() / 1000,
            ]
            if let since = link.degradedSince {
                report["unreachable_for_ms"] = (now - since).nanoseconds / 1_000_000
            }
            report["leases"] = link.keys.keys.sorted().flatMap { provider -> [[String: Any]] in
                (s.keyPools[provider]?.leases ?? []).enumerated().map { i, l in
                    ["provider": provider, "key": i + 1, "requests": l.requests, "tokens": l.tokens,
                     "local_share": l.fallingBack]
                }
            }
            return report
        }
    }

    /// Whether the cluster store is configured and unreachable now (STATUS=).
    var clusterDegraded: Bool { state.withLock { $0.cluster.map { !$0.reachable } ?? false } }

    /// After an attempt: corrects the token reservation, learns from the rate-limit headers, and rests a key the
    /// provider rate-limited without saying how much quota is left (`KeyPool.shouldRest`).
    func settleKey(_ provider: ProviderRuntime, index: Int, reserved: Int, actual: Int?, info: RateLimitInfo,
                   rateLimited: Bool) {
        let now = clock.now()
        let fleet = state.withLock { s -> (() -> Void)? in
            s.keysHeld -= 1
            guard var pool = s.keyPools[provider.name], index < pool.keyCount else { return nil }
            pool.settle(index: index, reservedTokens: reserved, actualTokens: actual ?? reserved, now: now)
            pool.learn(index: index, from: info, now: now)
            let rest = rateLimited && KeyPool.shouldRest(after: info)
            if rest { pool.rest(index: index, until: now + (info.suggestedWait ?? .seconds(1))) }
            s.keyPools[provider.name] = pool
            guard pool.isCluster, var link = s.cluster, link.reachable, let keys = link.keys[provider.name],
                  keys.names.indices.contains(index) else { return nil }
            // A remaining count is told at most every 100 ms per key (each telling is a store round trip; one
            // per call would put the store back on the common path); a rest always.
            let name = keys.names[index]
            let told = link.remainingToldAt[name]
            let mayTell = told.map { now - $0 >= .milliseconds(100) } ?? true
            let share = Self.shareWithFleet(link.client, name, keys.rate, provider.config.rateLimits, info,
                                            rest: rest ? info.suggestedWait ?? .seconds(1) : nil,
                                            remaining: mayTell)
            if share != nil, !rest {
                link.remainingToldAt[name] = now
                s.cluster = link
            }
            return share
        }
        fleet?()
    }

    /// What one daemon learned about a cluster key that the others should know too: the provider rested it (a
    /// bare 429), or said little is left of its quota (`x-ratelimit-remaining-*` at or under a tenth of the
    /// limit; above that the cluster's own count binds first). Nil when there is nothing to say, or when a
    /// remaining count was told too recently (`mayTell`).
    private static func shareWithFleet(_ client: FleetClient, _ name: String, _ rate: FleetRate,
                                       _ limits: KeyPool.Limits, _ info: RateLimitInfo, rest: Duration?,
                                       remaining mayTell: Bool) -> (() -> Void)? {
        if let rest { return { client.rest(name, rate: rate, for: rest) } }
        guard mayTell else { return nil }
        let requests = info.remainingRequests.flatMap { r in limits.rpm.flatMap { r * 10 <= $0 ? r : nil } }
        let tokens = info.remainingTokens.flatMap { r in limits.tpm.flatMap { r * 10 <= $0 ? r : nil } }
        guard requests != nil || tokens != nil else { return nil }
        return { client.remaining(name, rate: rate, requests: requests, tokens: tokens) }
    }

    /// Every breaker that has seen a call: state, failure rate in the window, and when an open one lets probes in.
    func breakerReport() -> [(target: String, state: String, failureRate: Double, calls: Int, reopensInMs: Int64?)] {
        let now = clock.now()
        return state.withLock { s in
            s.breakers.map { key, b in
                (key.description, b.stateName.rawValue, b.failureRate(now: now), b.windowCounts(now: now).calls,
                 b.reopensAt.map { max(0, ($0 - now).nanoseconds / 1_000_000) })
            }.sorted { $0.target < $1.target }
        }
    }

    /// An admin reset: the breaker for "provider/model" closes with its counts cleared. False if there is none.
    func resetBreaker(_ target: String) -> Bool {
        let now = clock.now()
        let result = state.withLock { s -> (BreakerKey, [BreakerTransition])? in
            guard let key = s.breakers.keys.first(where: { $0.description == target }) else { return nil }
            return (key, s.breakers[key]!.reset(now: now))
        }
        guard let (key, transitions) = result else { return false }
        log(transitions, key)
        return true
    }

    /// Open breakers, for status displays.
    var openBreakers: [(String, Instant?)] {
        state.withLock { s in
            s.breakers.filter { $0.value.stateName != .closed }.map { ($0.key.description, $0.value.reopensAt) }
        }
    }

    private func log(_ transitions: [BreakerTransition], _ key: BreakerKey) {
        guard !transitions.isEmpty else { return }
        persist(key)
        for t in transitions {
            // Openings are warnings, so an alert can hang off them.
            logger.log(level: t.to == .open ? .warning : .notice, "circuit breaker \(t.from) → \(t.to)", metadata: [
                "target": "\(key.description)", "reason": "\(t.reason)",
            ])
            metrics?.breakerTransition(provider: key.provider, model: key.model, to: t.to.rawValue)
            var e = AuditEvent(.breakerTransition)
            e.provider = key.provider
            e.model = key.model
            e[.breaker] = key.description
            e.breakerFrom = AuditBreakerState(rawValue: t.from.rawValue)
            e.breakerTo = AuditBreakerState(rawValue: t.to.rawValue)
            e.reason = t.reason
            audit?.record(e)
        }
    }

    /// Queues the breaker's state for the state store: open with its reopen time, or gone once closed. Half-open
    /// keeps the stored row, so a crash mid-probe comes back open with its (past) reopen time and probes again.
    private func persist(_ key: BreakerKey) {
        guard let store else { return }
        let now = clock.now()
        let wallNow = Date().timeIntervalSince1970
        // Read and queued under the registry's lock, so two quick transitions are queued in the order they made.
        state.withLock { s in
            switch s.breakers[key]?.stateName {
            case .open:
                guard let reopens = s.breakers[key]?.reopensAt else { return }
                let wall = wallNow + (reopens - now).seconds
                store.saveBreaker(target: key.description,
                                  StateStore.BreakerRow(provider: key.provider, model: key.model, reopensAt: wall))
            case .closed, nil:
                store.saveBreaker(target: key.description, nil)
            case .halfOpen:
                break
            }
        }
    }
}
