import Resilience

/// The whole runtime-enforcement policy: who the agents are, what each may do and for whom, which actions carry
/// conditional controls, and the budgets and prices. Default deny: anything no rule allows is refused.
public struct GovernancePolicy: Sendable, Hashable {
    /// What a connection that presents no token becomes (`anonymous:`).
    public var anonymous: AnonymousAccess
    public var agents: [String: AgentPolicy]
    /// `conditional_controls:`, in file order (the first approval control that applies decides the timeout).
    public var controls: [ConditionalControl]
    /// Who approves and issues step-up credentials where a control names no one of its own (`approvers:`).
    public var approvers: PeerSet
    /// Whether an approver may approve a call made from their own uid (`allow_self_approval:`, default false).
    public var allowSelfApproval: Bool
    /// Budgets per tenant (`tenants: NAME: budgets:`).
    public var tenants: [String: TenantPolicy]
    /// USD per million tokens, by model name (`prices:`).
    public var prices: [String: ModelPrice]
    /// Tokens reserved for a call that names no `max_tokens` (`default_max_tokens:`).
    public var defaultMaxTokens: Int
    /// `tool_actions:` — the action each tool (function) name stands for; a tool not listed is its own action.
    public var toolActions: [String: String] = [:]
    /// `disallowed_tools:` — what a call listing tools its agent may not use gets.
    public var disallowedTools = DisallowedTools.remove

    /// The budgets kept in the cluster store (`scope: cluster`), as their rules name them (`agents.X.budgets`).
    public var clusterBudgets: [String] {
        (agents.filter { $0.value.budgets.scope == .cluster }.keys.map { "agents.\($0).budgets" }
            + tenants.filter { $0.value.budgets.scope == .cluster }.keys.map { "tenants.\($0).budgets" }).sorted()
    }

    public enum DisallowedTools: String, Sendable, Hashable, CaseIterable {
        /// They are taken out of the request's `tools` (audited); the call goes on with the rest.
        case remove
        /// The call is refused (`FORBIDDEN`).
        case refuse
    }

    /// The action a tool stands for.
    public func action(forTool name: String) -> String { toolActions[name] ?? name }

    /// The rule that decides which tools an agent may use: its action scopes.
    public static func scopeRule(agent: String) -> String { "agents.\(agent).scopes.actions" }

    /// Whether `agent` may use tool `name`: its action is in the agent's scopes.
    public func toolAllowed(agent: String, tool name: String) -> Bool {
        agents[agent]?.scopes.pattern(allowing: action(forTool: name)) != nil
    }

    public init(anonymous: AnonymousAccess = .deny, agents: [String: AgentPolicy] = [:],
                controls: [ConditionalControl] = [], approvers: PeerSet = PeerSet(), allowSelfApproval: Bool = false,
                tenants: [String: TenantPolicy] = [:], prices: [String: ModelPrice] = [:],
                defaultMaxTokens: Int = 4096) {
        self.anonymous = anonymous
        self.agents = agents
        self.controls = controls
        self.approvers = approvers
        self.allowSelfApproval = allowSelfApproval
        self.tenants = tenants
        self.prices = prices
        self.defaultMaxTokens = defaultMaxTokens
    }

    /// The conditional controls that apply to `agent` doing `action`, in file order.
    public func controls(agent: String, action: String?) -> [ConditionalControl] {
        controls.filter { $0.applies(agent: agent, action: action) }
    }
}

/// `anonymous: deny` (the default), or `anonymous: AGENT`: connections without a token act as that agent.
public enum AnonymousAccess: Sendable, Hashable {
    case deny
    case agent(String)
}

/// One agent: its identity (`agent_identity:`), `scopes:`, `relationships:`, concurrency and budgets.
public struct AgentPolicy: Sendable, Hashable {
    public var id: String
    /// The owning entity (a team, a service): who answers for what the agent does.
    public var owner: String?
    public var credentials: [AgentCredential]
    /// Step-up credentials written into the policy (each needs `issued_at`; a control's `max_age` bounds it).
    public var stepUpCredentials: [AgentCredential]
    /// The Unix users and groups allowed to present this agent's credentials.
    public var peers: PeerRestriction
    public var scopes: Scopes
    /// Tenants the agent may act for (`relationships: - agent_to_tenant: NAME`); `*` means any.
    public var tenants: Set<String>
    /// Most calls in flight at once (`max_concurrent_calls:`); nil means no limit.
    public var maxConcurrentCalls: Int?
    public var budgets: BudgetLimits

    public init(id: String, owner: String? = nil, credentials: [AgentCredential] = [],
                stepUpCredentials: [AgentCredential] = [], peers: PeerRestriction = .none, scopes: Scopes = Scopes(),
                tenants: Set<String> = [], maxConcurrentCalls: Int? = nil, budgets: BudgetLimits = BudgetLimits()) {
        self.id = id
        self.owner = owner
        self.credentials = credentials
        self.stepUpCredentials = stepUpCredentials
        self.peers = peers
        self.scopes = scopes
        self.tenants = tenants
        self.maxConcurrentCalls = maxConcurrentCalls
        self.budgets = budgets
    }
}

/// One credential of an agent: a name (for audit and rotation), the token's SHA-256, and its validity window.
public struct AgentCredential: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var digest: CredentialDigest
    /// Valid from (`not_before:`, or `issued_at:`); nil: no lower bound.
    public var notBefore: Double?
    /// Valid until (`not_after:`, or `issued_at:` + `validity_window:`); nil: no upper bound.
    public var notAfter: Double?
    public var revoked: Bool

    public init(name: String, digest: CredentialDigest, notBefore: Double? = nil, notAfter: Double? = nil,
                revoked: Bool = false) {
        self.name = name
        self.digest = digest
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.revoked = revoked
    }

    /// A credential issued at `issuedAt` and valid for `validityWindow` (the `validity_window: 24h` form).
    public init(name: String, digest: CredentialDigest, issuedAt: Double, validityWindow: Duration,
                revoked: Bool = false) {
        self.init(name: name, digest: digest, notBefore: issuedAt, notAfter: issuedAt + validityWindow.seconds,
                  revoked: revoked)
    }

    /// Whether the credential may be used at a given time, and if not, why.
    public enum Validity: Sendable, Hashable {
        case valid
        case revoked
        case notYetValid(from: Double)
        case expired(at: Double)
    }

    public func validity(at wallNow: Double) -> Validity {
        if revoked { return .revoked }
        if let notBefore, wallNow < notBefore { return .notYetValid(from: notBefore) }
        if let notAfter, wallNow >= notAfter { return .expired(at: notAfter) }
        return .valid
    }

    public var description: String { "credential \"\(name)\"" }
}

/// What an agent may do: named actions (`invoice.create`, or `invoice.*`), and which routes and models it may use.
/// `*` in any list allows everything of that kind; an empty list allows nothing.
public struct Scopes: Sendable, Hashable {
    public var actions: [ActionPattern]
    public var routes: Set<String>
    public var models: Set<String>

    public init(actions: [ActionPattern] = [], routes: Set<String> = [], models: Set<String> = []) {
        self.actions = actions
        self.routes = routes
        self.models = models
    }

    /// The first pattern that allows `action`; a request naming no action is allowed only by `*`.
    public func pattern(allowing action: String?) -> ActionPattern? {
        actions.first { $0.matches(action) }
    }

    public func allows(route: String) -> Bool { routes.contains("*") || routes.contains(route) }

    /// A request whose model is not known yet (nil) is allowed only by `*`.
    public func allows(model: String?) -> Bool {
        if models.contains("*") { return true }
        guard let model else { return false }
        return models.contains(model)
    }
}

/// An action name or a pattern: `invoice.create` (exactly), `invoice.*` (anything under `invoice.`), `*` (any
/// action, including none).
public struct ActionPattern: Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let text: String

    public init(_ text: String) { self.text = text }

    public init(stringLiteral value: String) { self.init(value) }

    public func matches(_ action: String?) -> Bool {
        if text == "*" { return true }
        guard let action else { return false }
        if text.hasSuffix(".*") { return action.hasPrefix(text.dropLast()) }
        return action == text
    }

    public var description: String { text }
}

/// One named group under `conditional_controls:` (e.g. `destructive_changes`): the actions it covers and the
/// controls it puts on them. A group may combine approval, step-up and a rate limit.
public struct ConditionalControl: Sendable, Hashable {
    public var name: String
    public var actions: [ActionPattern]
    /// Limits the group to some agents; nil: every agent.
    public var agents: Set<String>?
    public var requireApproval: ApprovalControl?
    public var stepUpAuth: StepUpControl?
    public var rateLimit: ActionRateLimit?

    public init(name: String, actions: [ActionPattern], agents: Set<String>? = nil,
                requireApproval: ApprovalControl? = nil, stepUpAuth: StepUpControl? = nil,
                rateLimit: ActionRateLimit? = nil) {
        self.name = name
        self.actions = actions
        self.agents = agents
        self.requireApproval = requireApproval
        self.stepUpAuth = stepUpAuth
        self.rateLimit = rateLimit
    }

    public func applies(agent: String, action: String?) -> Bool {
        if let agents, !agents.contains(agent) { return false }
        return actions.contains { $0.matches(action) }
    }

    /// The rule name decisions carry, e.g. `conditional_controls.destructive_changes.require_approval`.
    public func rule(_ control: String) -> String { "conditional_controls.\(name).\(control)" }
}

/// `require_approval: true` with `approval_timeout:` and, optionally, the group's own `approvers:`.
public struct ApprovalControl: Sendable, Hashable {
    public var timeout: Duration
    /// Nil: the policy's top-level approvers.
    public var approvers: PeerSet?
    /// `approval_reusable_for`: how long an approval of an action (AUTHORIZE) also allows the same action, tenant,
    /// agent and arguments again; zero (the default): single-use.
    public var reusableFor: Duration
    /// `show_arguments`: the argument fields approvers see (`breakwater approvals`) and the audit trail records;
    /// the others are redacted.
    public var shownArguments: [String]

    public init(timeout: Duration = .seconds(900), approvers: PeerSet? = nil, reusableFor: Duration = .zero,
                shownArguments: [String] = []) {
        self.timeout = timeout
        self.approvers = approvers
        self.reusableFor = reusableFor
        self.shownArguments = shownArguments
    }
}

/// `step_up_auth: true` with `max_age:`: a second credential, issued at most `maxAge` ago, must accompany the call.
public struct StepUpControl: Sendable, Hashable {
    public var maxAge: Duration
    /// Who may issue step-up credentials for this group; nil: the policy's top-level approvers.
    public var issuers: PeerSet?

    public init(maxAge: Duration = .seconds(300), issuers: PeerSet? = nil) {
        self.maxAge = maxAge
        self.issuers = issuers
    }
}

/// `rate_limit: 1/min` (or `10/hour`, `5/s`, `100/day`), per agent per action, enforced with GCRA. The burst
/// defaults to the whole rate.
public struct ActionRateLimit: Sendable, Hashable, CustomStringConvertible {
    public var count: Int
    public var period: Duration
    public var burst: Int?

    public init(count: Int, per period: Duration, burst: Int? = nil) {
        self.count = count
        self.period = period
        self.burst = burst
    }

    /// Reads `N/unit` with unit one of s, sec, second, m, min, minute, h, hour, d, day (plural forms too).
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let n = Int(parts[0].trimmingSpaces), n > 0 else { return nil }
        let unit = parts[1].trimmingSpaces.lowercased()
        let seconds: Int64
        switch unit {
        case "s", "sec", "second", "seconds": seconds = 1
        case "m", "min", "minute", "minutes": seconds = 60
        case "h", "hr", "hour", "hours": seconds = 3600
        case "d", "day", "days": seconds = 86_400
        default: return nil
        }
        self.init(count: n, per: .seconds(seconds))
    }

    func limiter() -> GCRALimiterShape { GCRALimiterShape(count: count, period: period, burst: burst) }

    public var description: String {
        let unit: String
        switch period {
        case .seconds(1): unit = "s"
        case .seconds(60): unit = "min"
        case .seconds(3600): unit = "hour"
        case .seconds(86_400): unit = "day"
        default: unit = "\(period)"
        }
        let base = "\(count)/\(unit)"
        return burst.map { base + " (burst \($0))" } ?? base
    }
}

/// The settings a GCRA limiter is built from, as a dictionary key so changed limits start fresh after a reload.
struct GCRALimiterShape: Sendable, Hashable {
    var count: Int
    var period: Duration
    var burst: Int?
}

extension Substring {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

/// A tenant's own entry (`tenants: NAME:`): its budgets, shared by every agent acting for it.
public struct TenantPolicy: Sendable, Hashable {
    public var budgets: BudgetLimits

    public init(budgets: BudgetLimits = BudgetLimits()) { self.budgets = budgets }
}

/// `budgets: {daily: ..., monthly: ..., scope: host|cluster}` over UTC calendar days and months.
public struct BudgetLimits: Sendable, Hashable {
    public var daily: BudgetAmount?
    public var monthly: BudgetAmount?
    /// `host`: this daemon's own ledger (each host may spend the cap); `cluster`: held and settled in the
    /// cluster store, one cap for every daemon sharing it.
    public var scope: BudgetScope

    public init(daily: BudgetAmount? = nil, monthly: BudgetAmount? = nil, scope: BudgetScope = .host) {
        self.daily = daily
        self.monthly = monthly
        self.scope = scope
    }

    public subscript(window: BudgetWindow) -> BudgetAmount? {
        switch window {
        case .daily: daily
        case .monthly: monthly
        }
    }

    public var hasCostLimit: Bool { daily?.microUSD != nil || monthly?.microUSD != nil }
}

/// Where a budget is kept (`budgets: {scope: ...}`).
public enum BudgetScope: String, Sendable, Hashable {
    case host, cluster
}

/// A budget in tokens (`tokens:`) and/or in cost (`cost_usd:`, kept in millionths of a dollar).
public struct BudgetAmount: Sendable, Hashable {
    public var tokens: Int64?
    public var microUSD: Int64?

    public init(tokens: Int64? = nil, microUSD: Int64? = nil) {
        self.tokens = tokens
        self.microUSD = microUSD
    }
}

/// A model's price (`prices: MODEL: {input_usd_per_1m:, output_usd_per_1m:}`).
public struct ModelPrice: Sendable, Hashable {
    public var inputUSDPerMillion: Double
    public var outputUSDPerMillion: Double

    public init(inputUSDPerMillion: Double, outputUSDPerMillion: Double) {
        self.inputUSDPerMillion = inputUSDPerMillion
        self.outputUSDPerMillion = outputUSDPerMillion
    }

    /// The cost in millionths of a dollar, rounded up (a dollar per million tokens is a micro-dollar per token).
    public func microUSD(inputTokens: Int64, outputTokens: Int64) -> Int64 {
        let cost = Double(max(0, inputTokens)) * inputUSDPerMillion + Double(max(0, outputTokens)) * outputUSDPerMillion
        return Int64(cost.rounded(.up))
    }
}
