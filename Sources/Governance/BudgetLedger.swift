import Resilience

/// Token and cost budgets per agent and per tenant over UTC calendar days and months. Before a call, `reserve`
/// holds its worst case (prompt estimate + `max_tokens`); after it, `settle` replaces that with the real usage.
/// A reservation is refused when used + reserved + requested would pass a limit, so concurrent calls can never
/// overshoot together. A value-type state machine: the daemon keeps it behind a lock and persists `snapshot()`.
public struct BudgetLedger: Sendable {
    public private(set) var policy: GovernancePolicy
    private var used: [BudgetKey: Usage] = [:]
    private var held: [BudgetKey: Usage] = [:]
    private var open: [UInt64: Reservation] = [:]
    private var nextID: UInt64 = 1
    /// Per cluster budget: what the store last said was used and held.
    private var lastSeen: [BudgetKey: Usage] = [:]
    /// Set while the cluster store is unreachable: the share of each cluster budget's remainder this daemon
    /// may spend on its own (`cluster.fallback_share`, or one over the daemons it last saw).
    public var clusterShare: Double?

    public init(policy: GovernancePolicy) {
        self.policy = policy
    }

    /// Swaps in a reloaded policy; usage and open reservations carry over.
    public mutating func replacePolicy(_ new: GovernancePolicy) {
        policy = new
    }

    /// Holds the worst case of one attempt against every budget that applies to `agent` and `tenant`.
    /// `maxTokens` nil means the policy's `default_max_tokens` (the daemon should then send that as the
    /// upstream `max_tokens`, so the hold is really the worst case).
    ///
    /// Budgets with `scope: cluster` are not checked here while the store answers: the reservation lists them
    /// (`cluster`) for the daemon to hold in the store, and only its host budgets are held here. While the store
    /// is unreachable (`clusterShare` set) they are held here too, against this daemon's share of what the store
    /// last said was left.
    public mutating func reserve(agent: String, tenant: String?, model: String, maxTokens: Int?,
                                 promptTokensEstimate: Int, wallNow: Double) -> BudgetDecision {
        let completion = Int64(max(0, maxTokens ?? policy.defaultMaxTokens))
        let prompt = Int64(max(0, promptTokensEstimate))
        let price = policy.prices[model]
        let cost = price?.microUSD(inputTokens: prompt, outputTokens: completion) ?? 0
        let ask = Usage(tokens: prompt + completion, microUSD: cost)
        var local: [BudgetKey] = []
        var cluster: [ClusterBudget] = []
        for key in Self.keys(agent: agent, tenant: tenant, wallNow: wallNow) {
            let limits = limits(for: key.subject)
            let amount = limits[key.window]
            if amount?.microUSD != nil, price == nil {
                return .unpriced(model: model, rule: key.rule + ".cost_usd")
            }
            // Host budgets count usage even without a limit (one added by a reload knows the day so far).
            if limits.scope == .host {
                local.append(key)
            } else if let amount {
                cluster.append(ClusterBudget(key: key, limit: amount))
            }
        }
        var reservation = Reservation(id: nextID, agent: agent, tenant: tenant, model: model, keys: local,
                                      held: ask, cluster: cluster, clusterLocal: false)
        if let refusal = check(local.compactMap { k in limits(for: k.subject)[k.window].map { (k, $0) } }, ask) {
            return .exceeded(refusal)
        }
        if let share = clusterShare, !cluster.isEmpty {
            if let refusal = check(localShares(cluster, share), ask) { return .exceeded(refusal) }
            reservation.clusterLocal = true
        }
        nextID += 1
        for key in reservation.heldHere { held[key, default: Usage()] += ask }
        open[reservation.id] = reservation
        return .reserved(reservation)
    }

    /// The first of `budgets` that `ask` would overspend, with what is used and held here.
    private func check(_ budgets: [(BudgetKey, BudgetAmount)], _ ask: Usage) -> BudgetExceeded? {
        for (key, amount) in budgets {
            let u = used[key] ?? Usage()
            let h = held[key] ?? Usage()
            if let limit = amount.tokens, u.tokens + h.tokens + ask.tokens > limit {
                return BudgetExceeded(key, .tokens, limit: limit, used: u.tokens, reserved: h.tokens,
                                      requested: ask.tokens)
            }
            if let limit = amount.microUSD, u.microUSD + h.microUSD + ask.microUSD > limit {
                return BudgetExceeded(key, .microUSD, limit: limit, used: u.microUSD, reserved: h.microUSD,
                                      requested: ask.microUSD)
            }
        }
        return nil
    }

    /// Cluster budgets as this daemon holds them while the store is unreachable: `share` of what the store last
    /// said was left (of the whole cap, for a budget it has not answered for yet), against what this daemon has
    /// used and held since.
    private func localShares(_ budgets: [ClusterBudget], _ share: Double) -> [(BudgetKey, BudgetAmount)] {
        budgets.map { b in
            let seen = lastSeen[b.key] ?? Usage()
            func part(_ limit: Int64?, _ taken: Int64) -> Int64? {
                limit.map { Int64((Double(max(0, $0 - taken)) * share).rounded(.down)) }
            }
            return (b.key, BudgetAmount(tokens: part(b.limit.tokens, seen.tokens),
                                        microUSD: part(b.limit.microUSD, seen.microUSD)))
        }
    }

    /// The store could not be asked for `reservation`'s cluster budgets (unreachable, or too slow): they are held
    /// here instead, against this daemon's share (`clusterShare`, which the caller sets first). Refused: the
    /// reservation's host holds are given back too.
    public mutating func holdLocally(_ reservation: Reservation) -> BudgetDecision {
        guard var r = open[reservation.id], !r.clusterLocal else { return .reserved(reservation) }
        if let refusal = check(localShares(r.cluster, clusterShare ?? 1), r.held) {
            release(r)
            return .exceeded(refusal)
        }
        r.clusterLocal = true
        for b in r.cluster { held[b.key, default: Usage()] += r.held }
        open[r.id] = r
        return .reserved(r)
    }

    /// The store refused `reservation`'s cluster hold: `budget` (its index in `cluster`) would pass its cap in
    /// `unit`, with `used` and `reserved` there. The host holds are given back.
    public mutating func storeRefused(_ reservation: Reservation, budget: Int, unit: BudgetExceeded.Unit,
                                      used: Int64, reserved: Int64) -> BudgetDecision {
        release(reservation)
        guard reservation.cluster.indices.contains(budget) else {
            return .exceeded(BudgetExceeded(reservation.cluster[0].key, unit, limit: 0, used: used, reserved: reserved,
                                            requested: 0))
        }
        let b = reservation.cluster[budget]
        let limit = (unit == .tokens ? b.limit.tokens : b.limit.microUSD) ?? 0
        let requested = unit == .tokens ? reservation.held.tokens : reservation.held.microUSD
        return .exceeded(BudgetExceeded(b.key, unit, limit: limit, used: used, reserved: reserved,
                                        requested: requested))
    }

    /// What the store said a cluster budget has used and held (after a hold there): the base of this daemon's
    /// share should the store become unreachable.
    public mutating func storeSaid(_ key: ClusterBudget.Key, _ total: Usage) {
        lastSeen[key.key] = total
    }

    /// Usage taken here while the store was unreachable reached the store: it is no longer this daemon's alone.
    public mutating func charged(_ keys: [ClusterBudget.Key], _ usage: Usage) {
        for k in keys {
            guard var u = used[k.key] else { continue }
            u -= usage
            used[k.key] = u.isZero ? nil : u
            lastSeen[k.key, default: Usage()] += usage
        }
    }

    /// Replaces a reservation's hold with what the attempt really used (from the provider's usage, or the
    /// daemon's count for a stream cut short), charged to the day and month it was reserved in. Settling twice,
    /// or a reservation this ledger does not hold, returns nil and changes nothing. Cluster budgets held here
    /// (the store was unreachable) keep the usage until it is `charged` to the store: the settlement's `charge`.
    @discardableResult
    public mutating func settle(_ reservation: Reservation, promptTokens: Int,
                               completionTokens: Int) -> Settlement? {
        guard let reservation = open.removeValue(forKey: reservation.id) else { return nil }
        let prompt = Int64(max(0, promptTokens))
        let completion = Int64(max(0, completionTokens))
        let cost = policy.prices[reservation.model]?.microUSD(inputTokens: prompt, outputTokens: completion) ?? 0
        let actual = Usage(tokens: prompt + completion, microUSD: cost)
        var entries: [BudgetSnapshot.Entry] = []
        for key in reservation.heldHere {
            var h = held[key] ?? Usage()
            h -= reservation.held
            held[key] = h.isZero ? nil : h
            used[key, default: Usage()] += actual
        }
        for key in reservation.keys {
            entries.append(BudgetSnapshot.Entry(key: key, usage: used[key] ?? actual))
        }
        return Settlement(reservation: reservation, tokens: actual.tokens, microUSD: actual.microUSD,
                          updated: entries)
    }

    /// Gives back a reservation whose attempt never reached the provider (refused, skipped, failed to connect).
    @discardableResult
    public mutating func release(_ reservation: Reservation) -> Settlement? {
        settle(reservation, promptTokens: 0, completionTokens: 0)
    }

    /// What is used and held now in one budget (for status displays and `breakwater status`).
    public func usage(_ subject: BudgetSubject, _ window: BudgetWindow, wallNow: Double) -> (used: Usage, held: Usage) {
        let key = BudgetKey(subject: subject, window: window, period: window.period(at: wallNow))
        return (used[key] ?? Usage(), held[key] ?? Usage())
    }

    /// Reservations not yet settled.
    public var openReservations: Int { open.count }

    /// All recorded usage (not holds: calls in flight do not outlive the daemon), for the state store.
    public func snapshot() -> BudgetSnapshot {
        // Cluster budgets live in the store; what this daemon took while it was unreachable is charged there.
        BudgetSnapshot(entries: used.filter { limits(for: $0.key.subject).scope == .host }
            .map { BudgetSnapshot.Entry(key: $0.key, usage: $0.value) }.sorted())
    }

    /// Loads usage saved by `snapshot()` (after a restart), replacing what is recorded for the same budgets.
    /// Entries that cannot be read are skipped and returned.
    @discardableResult
    public mutating func restore(_ snapshot: BudgetSnapshot) -> [BudgetSnapshot.Entry] {
        var skipped: [BudgetSnapshot.Entry] = []
        for entry in snapshot.entries {
            guard let key = entry.key else {
                skipped.append(entry)
                continue
            }
            used[key] = Usage(tokens: entry.tokens, microUSD: entry.microUSD)
        }
        return skipped
    }

    /// Forgets usage of days and months that have ended (they can no longer refuse anything).
    public mutating func prune(wallNow: Double) {
        used = used.filter { $0.key.period >= $0.key.window.period(at: wallNow) }
    }

    private func limits(for subject: BudgetSubject) -> BudgetLimits {
        switch subject {
        case .agent(let id): policy.agents[id]?.budgets ?? BudgetLimits()
        case .tenant(let id): policy.tenants[id]?.budgets ?? BudgetLimits()
        }
    }

    static func keys(agent: String, tenant: String?, wallNow: Double) -> [BudgetKey] {
        var subjects: [BudgetSubject] = [.agent(agent)]
        if let tenant { subjects.append(.tenant(tenant)) }
        return subjects.flatMap { s in
            BudgetWindow.allCases.map { BudgetKey(subject: s, window: $0, period: $0.period(at: wallNow)) }
        }
    }
}

/// Tokens and cost (millionths of a dollar) together.
public struct Usage: Sendable, Hashable, CustomStringConvertible {
    public var tokens: Int64
    public var microUSD: Int64

    public init(tokens: Int64 = 0, microUSD: Int64 = 0) {
        self.tokens = tokens
        self.microUSD = microUSD
    }

    var isZero: Bool { tokens == 0 && microUSD == 0 }

    public static func += (a: inout Usage, b: Usage) {
        a.tokens += b.tokens
        a.microUSD += b.microUSD
    }

    static func -= (a: inout Usage, b: Usage) {
        a.tokens = max(0, a.tokens - b.tokens)
        a.microUSD = max(0, a.microUSD - b.microUSD)
    }

    public var description: String { "\(tokens) tokens, \(formatUSD(microUSD))" }
}

/// Whose budget: an agent's or a tenant's.
public enum BudgetSubject: Sendable, Hashable, CustomStringConvertible {
    case agent(String)
    case tenant(String)

    var rule: String {
        switch self {
        case .agent(let id): "agents.\(id)"
        case .tenant(let id): "tenants.\(id)"
        }
    }

    /// `agent` or `tenant`, and the name: how the state store's rows and the cluster store's keys name it.
    var kindAndName: (kind: String, name: String) {
        switch self {
        case .agent(let id): ("agent", id)
        case .tenant(let id): ("tenant", id)
        }
    }

    public var description: String {
        switch self {
        case .agent(let id): "agent \"\(id)\""
        case .tenant(let id): "tenant \"\(id)\""
        }
    }
}

/// A UTC calendar window.
public enum BudgetWindow: String, Sendable, Hashable, CaseIterable {
    case daily, monthly

    /// The number of the day (days since 1970-01-01) or month (year × 12 + month − 1) that `wallNow` falls in.
    func period(at wallNow: Double) -> Int64 {
        let day = floorDivide(Int64(wallNow.rounded(.down)), 86_400).0
        switch self {
        case .daily: return day
        case .monthly:
            let date = CivilDate(daysSinceEpoch: day)
            return Int64(date.year) * 12 + Int64(date.month - 1)
        }
    }

    /// When `period` ends, in Unix seconds.
    func end(of period: Int64) -> Double {
        switch self {
        case .daily: return Double((period + 1) * 86_400)
        case .monthly:
            let next = period + 1
            let date = CivilDate(year: Int(next / 12), month: Int(next % 12) + 1, day: 1)
            return Double(date.daysSinceEpoch * 86_400)
        }
    }

    func label(_ period: Int64) -> String {
        switch self {
        case .daily: return CivilDate(daysSinceEpoch: period).description
        case .monthly:
            let m = Int(period % 12) + 1
            return "\(period / 12)-\(m < 10 ? "0" : "")\(m)"
        }
    }

    func parse(_ label: String) -> Int64? {
        switch self {
        case .daily:
            guard let t = RFC3339.parse(label + "T00:00:00Z") else { return nil }
            return period(at: t)
        case .monthly:
            guard let t = RFC3339.parse(label + "-01T00:00:00Z") else { return nil }
            return period(at: t)
        }
    }
}

struct BudgetKey: Sendable, Hashable {
    var subject: BudgetSubject
    var window: BudgetWindow
    var period: Int64

    var rule: String { subject.rule + ".budgets.\(window.rawValue)" }
}

/// A budget held in the cluster store (`scope: cluster`) in one calendar period, and its cap.
public struct ClusterBudget: Sendable, Hashable {
    /// Which budget and period, opaque outside the ledger but for its name in the store.
    public struct Key: Sendable, Hashable {
        let key: BudgetKey

        /// `budget:tenant:acme:daily:2026-12-02` (after the store's key prefix). Agent and tenant names are the
        /// policy's identifiers, not secrets.
        public var storeName: String {
            let (kind, name) = key.subject.kindAndName
            return "budget:\(kind):\(name):\(key.window.rawValue):\(key.window.label(key.period))"
        }

        /// When the period ends (Unix seconds): the store may forget the budget a while after.
        public var endsAt: Double { key.window.end(of: key.period) }
    }

    let key: BudgetKey
    public let limit: BudgetAmount

    public var id: Key { Key(key: key) }
}

/// An attempt's hold on the budgets, to be settled (or released) exactly once.
public struct Reservation: Sendable, Hashable, CustomStringConvertible {
    public let id: UInt64
    public let agent: String
    public let tenant: String?
    public let model: String
    /// The host budgets held in this ledger.
    let keys: [BudgetKey]
    /// What is held: the prompt estimate plus `max_tokens`, and its cost.
    public let held: Usage
    /// The cluster budgets that apply, to be held in the store (or here, when `clusterLocal`).
    public let cluster: [ClusterBudget]
    /// The store was unreachable: the cluster budgets are held in this ledger, on this daemon's share.
    public internal(set) var clusterLocal: Bool

    /// Whether the store holds part of this reservation (its cluster budgets).
    public var heldInStore: Bool { !cluster.isEmpty && !clusterLocal }

    var heldHere: [BudgetKey] { clusterLocal ? keys + cluster.map(\.key) : keys }

    public var description: String { "reservation \(id) for agent \"\(agent)\" on \(model): \(held)" }
}

/// The outcome of `reserve`.
public enum BudgetDecision: Sendable, Hashable, CustomStringConvertible {
    case reserved(Reservation)
    case exceeded(BudgetExceeded)
    /// A cost budget applies, but `model` has no price in `prices:`, so its cost cannot be bounded.
    case unpriced(model: String, rule: String)

    /// The same outcome as a gate decision, for one audit path: `.allow` or `.deny(budget_exceeded /
    /// unpriced_model)`.
    public var decision: Decision {
        switch self {
        case .reserved: .allow(rule: "budgets")
        case .exceeded(let e): .deny(rule: e.rule, code: .budgetExceeded, reason: e.description)
        case .unpriced(let model, let rule):
            .deny(rule: rule, code: .unpricedModel,
                  reason: "model \"\(model)\" has no price in prices:, so a cost budget cannot be checked")
        }
    }

    public var description: String {
        switch self {
        case .reserved(let r): "reserved: \(r)"
        case .exceeded(let e): "exceeded: \(e)"
        case .unpriced(let model, let rule): "unpriced model \"\(model)\" (\(rule))"
        }
    }
}

/// Which budget a reservation would overspend, and by how much.
public struct BudgetExceeded: Sendable, Hashable, CustomStringConvertible {
    public enum Unit: String, Sendable, Hashable {
        case tokens
        case microUSD = "micro_usd"
    }

    public var subject: BudgetSubject
    public var window: BudgetWindow
    public var unit: Unit
    public var limit: Int64
    public var used: Int64
    /// Held by calls in flight.
    public var reserved: Int64
    /// This attempt's worst case.
    public var requested: Int64
    /// Unix seconds at which the window starts afresh.
    public var resetsAt: Double
    public var rule: String

    init(_ key: BudgetKey, _ unit: Unit, limit: Int64, used: Int64, reserved: Int64, requested: Int64) {
        self.init(subject: key.subject, window: key.window, unit: unit, limit: limit, used: used, reserved: reserved,
                  requested: requested, resetsAt: key.window.end(of: key.period),
                  rule: key.rule + (unit == .tokens ? ".tokens" : ".cost_usd"))
    }

    public init(subject: BudgetSubject, window: BudgetWindow, unit: Unit, limit: Int64, used: Int64, reserved: Int64,
                requested: Int64, resetsAt: Double, rule: String) {
        self.subject = subject
        self.window = window
        self.unit = unit
        self.limit = limit
        self.used = used
        self.reserved = reserved
        self.requested = requested
        self.resetsAt = resetsAt
        self.rule = rule
    }

    public var description: String {
        func amount(_ v: Int64) -> String { unit == .tokens ? "\(v) tokens" : formatUSD(v) }
        return "\(subject) \(window.rawValue) budget: \(amount(used)) used + \(amount(reserved)) reserved + "
            + "\(amount(requested)) requested > \(amount(limit)) (resets \(RFC3339.format(resetsAt)))"
    }
}

/// What `settle` charged, and the budget rows that changed (for the state store to upsert).
public struct Settlement: Sendable, Hashable {
    public var reservation: Reservation
    public var tokens: Int64
    public var microUSD: Int64
    public var updated: [BudgetSnapshot.Entry]

    public var usage: Usage { Usage(tokens: tokens, microUSD: microUSD) }
}

/// Recorded usage as plain rows, for the daemon's SQLite state store.
public struct BudgetSnapshot: Sendable, Hashable, Codable {
    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    /// One budget's usage in one calendar period.
    public struct Entry: Sendable, Hashable, Codable, Comparable {
        /// `agent` or `tenant`.
        public var subject: String
        public var name: String
        /// `daily` or `monthly`.
        public var window: String
        /// `2025-06-01` for a day, `2025-06` for a month (UTC).
        public var period: String
        public var tokens: Int64
        public var microUSD: Int64

        public init(subject: String, name: String, window: String, period: String, tokens: Int64, microUSD: Int64) {
            self.subject = subject
            self.name = name
            self.window = window
            self.period = period
            self.tokens = tokens
            self.microUSD = microUSD
        }

        init(key: BudgetKey, usage: Usage) {
            (subject, name) = key.subject.kindAndName
            window = key.window.rawValue
            period = key.window.label(key.period)
            tokens = usage.tokens
            microUSD = usage.microUSD
        }

        var key: BudgetKey? {
            guard let w = BudgetWindow(rawValue: window), let p = w.parse(period) else { return nil }
            switch subject {
            case "agent": return BudgetKey(subject: .agent(name), window: w, period: p)
            case "tenant": return BudgetKey(subject: .tenant(name), window: w, period: p)
            default: return nil
            }
        }

        public static func < (a: Entry, b: Entry) -> Bool {
            (a.subject, a.name, a.window, a.period) < (b.subject, b.name, b.window, b.period)
        }
    }
}

func formatUSD(_ micro: Int64) -> String {
    let cents = (micro + 5_000) / 10_000
    let rest = cents % 100
    return "$\(cents / 100).\(rest < 10 ? "0" : "")\(rest)"
}
