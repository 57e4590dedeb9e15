import Foundation
import Governance
import Resilience
import Yams

/// Reads the runtime-enforcement policy file (agents, scopes, relationships, conditional controls, budgets,
/// prices) into Governance's types. Like `ConfigLoader` it walks Yams' node tree so every problem is reported at
/// its file:line:column, all at once. Tokens never go in the file, only their SHA-256 (`token_sha256`), and no
/// error ever echoes a value that could be one.
public enum PolicyLoader {
    public static func load(file path: String) throws(ConfigError) -> GovernancePolicy {
        try parse(NodeReader.readFile(path), file: path)
    }

    /// Parses a policy. An empty file is a policy that allows nothing (default deny).
    public static func parse(_ yaml: String, file: String = "<policy>") throws(ConfigError) -> GovernancePolicy {
        var (reader, root) = try NodeReader.compose(yaml, file: file)
        var policy = GovernancePolicy()
        if let root { reader.readPolicy(root, into: &policy) }
        if !reader.issues.isEmpty { throw ConfigError(issues: reader.issues) }
        return policy
    }
}

extension NodeReader {
    mutating func readPolicy(_ root: Node, into policy: inout GovernancePolicy) {
        let keys: Set = ["anonymous", "approvers", "allow_self_approval", "default_max_tokens", "agents", "tenants",
                         "conditional_controls", "prices", "tool_actions", "disallowed_tools"]
        var anonymousNode: Node?
        var digests: [CredentialDigest: String] = [:]
        var agentNodes: [String: Node] = [:]
        var controlNodes: [String: Node] = [:]
        for (key, _, v) in entries(root, "policy", allowed: keys) {
            switch key {
            case "anonymous":
                anonymousNode = v
                guard let s = string(v, key) else { continue }
                policy.anonymous = s == "deny" ? .deny : .agent(s)
            case "approvers":
                policy.approvers = peerSet(v, key)
            case "tool_actions":
                for (tool, _, action) in entries(v, "tool_actions") {
                    if let a = string(action, "tool_actions.\(tool)") { policy.toolActions[tool] = a }
                }
            case "disallowed_tools":
                guard let s = string(v, key) else { continue }
                if let choice = GovernancePolicy.DisallowedTools(rawValue: s) {
                    policy.disallowedTools = choice
                } else {
                    issue(v, "disallowed_tools must be remove or refuse")
                }
            case "allow_self_approval":
                if let b = bool(v, key) { policy.allowSelfApproval = b }
            case "default_max_tokens":
                if let n = count(v, key, min: 1) { policy.defaultMaxTokens = Int(n) }
            case "agents":
                for (id, _, a) in entries(v, "agents") {
                    agentNodes[id] = a
                    policy.agents[id] = readAgent(a, id: id, digests: &digests)
                }
            case "tenants":
                for (id, _, t) in entries(v, "tenants") {
                    var tenant = TenantPolicy()
                    for (k, _, tv) in entries(t, "tenant \"\(id)\"", allowed: ["budgets"]) where k == "budgets" {
                        tenant.budgets = budgets(tv, "tenant \"\(id)\" budgets")
                    }
                    policy.tenants[id] = tenant
                }
            case "conditional_controls":
                for (name, _, c) in entries(v, "conditional_controls") {
                    controlNodes[name] = c
                    if let control = readControl(c, name: name) { policy.controls.append(control) }
                }
            case "prices":
                for (model, _, p) in entries(v, "prices") {
                    if let price = readPrice(p, model: model) { policy.prices[model] = price }
                }
            default:
                break
            }
        }
        crossCheck(policy, anonymousNode: anonymousNode, agentNodes: agentNodes, controlNodes: controlNodes,
                   root: root)
    }

    // MARK: - Agents

    mutating func readAgent(_ node: Node, id: String, digests: inout [CredentialDigest: String]) -> AgentPolicy {
        var agent = AgentPolicy(id: id)
        let keys: Set = ["agent_identity", "scopes", "relationships", "max_concurrent_calls", "budgets"]
        var sawScopes = false
        for (key, _, v) in entries(node, "agent \"\(id)\"", allowed: keys) {
            switch key {
            case "agent_identity":
                readIdentity(v, into: &agent, digests: &digests)
            case "scopes":
                sawScopes = true
                agent.scopes = readScopes(v, agent: id)
            case "relationships":
                agent.tenants = readRelationships(v, agent: id)
            case "max_concurrent_calls":
                if let n = count(v, key, min: 1) { agent.maxConcurrentCalls = Int(n) }
            case "budgets":
                agent.budgets = budgets(v, "agent \"\(id)\" budgets")
            default:
                break
            }
        }
        if !sawScopes, node.mapping != nil {
            issue(node, "agent \"\(id)\" has no scopes, so every call it makes is denied (give it scopes with "
                + "actions, routes and models)")
        }
        return agent
    }

    mutating func readIdentity(_ node: Node, into agent: inout AgentPolicy, digests: inout [CredentialDigest: String]) {
        let what = "agent \"\(agent.id)\" agent_identity"
        let keys: Set = ["owner", "credentials", "step_up_credentials", "uids", "gids"]
        for (key, keyNode, v) in entries(node, what, allowed: keys) {
            switch key {
            case "owner":
                agent.owner = string(v, key)
            case "credentials", "step_up_credentials":
                guard let seq = v.sequence else {
                    // The value may be a token pasted in by mistake: point at the key, never echo the value.
                    issue(keyNode, "\(what) \(key) must be a list of {name, token_sha256, issued_at, "
                        + "validity_window | not_before, not_after, revoked}; tokens never go in the policy file, "
                        + "only their SHA-256")
                    continue
                }
                let stepUp = key == "step_up_credentials"
                var names: Set<String> = []
                for item in seq {
                    guard let c = readCredential(item, agent: agent.id, stepUp: stepUp) else { continue }
                    if !names.insert(c.name).inserted {
                        issue(item, "\(what): two credentials are named \"\(c.name)\"")
                        continue
                    }
                    if let other = digests[c.digest] {
                        issue(item, "\(what): credential \"\(c.name)\" has the same token_sha256 as \(other)")
                        continue
                    }
                    digests[c.digest] = "credential \"\(c.name)\" of agent \"\(agent.id)\""
                    if stepUp { agent.stepUpCredentials.append(c) } else { agent.credentials.append(c) }
                }
            case "uids":
                agent.peers.uids = ids(v, key)
            case "gids":
                agent.peers.gids = ids(v, key)
            default:
                break
            }
        }
    }

    mutating func readCredential(_ node: Node, agent: String, stepUp: Bool) -> AgentCredential? {
        let what = "agent \"\(agent)\" \(stepUp ? "step-up credential" : "credential")"
        let keys: Set = ["name", "token_sha256", "token", "issued_at", "validity_window", "not_before", "not_after",
                         "revoked"]
        var name: String?
        var digest: CredentialDigest?
        var issuedAt: (Double, Node)?
        var window: (Duration, Node)?
        var notBefore: Double?
        var notAfter: (Double, Node)?
        var revoked = false
        var ok = true
        for (key, keyNode, v) in entries(node, what, allowed: keys) {
            switch key {
            case "name":
                name = string(v, key)
            case "token_sha256":
                // Not echoed: an admin may have pasted the token itself here.
                guard let s = v.string, let d = CredentialDigest(hex: s) else {
                    issue(v, "\(what): token_sha256 must be 64 hexadecimal digits (the SHA-256 of the token, "
                        + "e.g. from `printf %s TOKEN | sha256sum`)")
                    ok = false
                    continue
                }
                digest = d
            case "token":
                issue(keyNode, "\(what): tokens never go in the policy file; write token_sha256, the SHA-256 of the "
                    + "token, instead")
                ok = false
            case "issued_at":
                if let t = timestamp(v, key) { issuedAt = (t, v) } else { ok = false }
            case "validity_window":
                if let d = policyDuration(v, key) { window = (d, v) } else { ok = false }
            case "not_before":
                if let t = timestamp(v, key) { notBefore = t } else { ok = false }
            case "not_after":
                if let t = timestamp(v, key) { notAfter = (t, v) } else { ok = false }
            case "revoked":
                if let b = bool(v, key) { revoked = b } else { ok = false }
            default:
                break
            }
        }
        guard node.mapping != nil else { return nil }
        if name == nil, node.mapping?["name"] == nil { issue(node, "\(what) needs a name"); ok = false }
        if digest == nil, node.mapping?["token_sha256"] == nil, node.mapping?["token"] == nil {
            issue(node, "\(what) needs token_sha256")
            ok = false
        }
        if let window, issuedAt == nil {
            issue(window.1, "\(what): validity_window counts from issued_at, which is missing")
            ok = false
        }
        if window != nil, let notAfter {
            issue(notAfter.1, "\(what): give either validity_window or not_after, not both")
            ok = false
        }
        if issuedAt != nil, notBefore != nil {
            issue(node, "\(what): give either issued_at or not_before, not both")
            ok = false
        }
        if stepUp, issuedAt == nil {
            issue(node, "\(what) needs issued_at: a control's max_age counts from it")
            ok = false
        }
        let from = issuedAt?.0 ?? notBefore
        let until = window.map { (issuedAt?.0 ?? 0) + $0.0.seconds } ?? notAfter?.0
        if let from, let until, until <= from, let n = window?.1 ?? notAfter?.1 {
            issue(n, "\(what): the validity window ends before it starts")
            ok = false
        }
        guard ok, let name, let digest else { return nil }
        return AgentCredential(name: name, digest: digest, notBefore: from, notAfter: until, revoked: revoked)
    }

    mutating func readScopes(_ node: Node, agent: String) -> Scopes {
        let what = "agent \"\(agent)\" scopes"
        guard node.mapping != nil else {
            issue(node, "\(what) must be a mapping with actions (e.g. [invoice.create, refund.*]), routes and "
                + "models (use [\"*\"] for any)")
            return Scopes()
        }
        var scopes = Scopes()
        for (key, _, v) in entries(node, what, allowed: ["actions", "routes", "models"]) {
            let list = strings(v, "\(what) \(key)")
            switch key {
            case "actions":
                for (s, item) in list {
                    if s.contains("*"), s != "*", !(s.hasSuffix(".*") && !s.dropLast(2).contains("*")) {
                        issue(item, "\(what): \"\(s)\": a wildcard must be the whole action (*) or end it (invoice.*)")
                        continue
                    }
                    scopes.actions.append(ActionPattern(s))
                }
            case "routes": scopes.routes = Set(list.map(\.0))
            case "models": scopes.models = Set(list.map(\.0))
            default: break
            }
        }
        for key in ["actions", "routes", "models"] where node.mapping?[key] == nil {
            issue(node, "\(what) needs \(key) (list them, or [\"*\"] for any)")
        }
        return scopes
    }

    /// `relationships: [{agent_to_tenant: acme}, {agent_to_tenant: [globex, initech]}]`.
    mutating func readRelationships(_ node: Node, agent: String) -> Set<String> {
        let what = "agent \"\(agent)\" relationships"
        guard let seq = node.sequence else {
            issue(node, "\(what) must be a list of {agent_to_tenant: TENANT}")
            return []
        }
        var tenants: Set<String> = []
        for item in seq {
            for (_, _, v) in entries(item, what, allowed: ["agent_to_tenant"]) {
                if v.sequence != nil {
                    tenants.formUnion(strings(v, "agent_to_tenant").map(\.0))
                } else if let s = string(v, "agent_to_tenant") {
                    tenants.insert(s)
                }
            }
        }
        return tenants
    }

    // MARK: - Controls, budgets, prices

    /// A group is a mapping, or (the shape in many write-ups) a list of one-key mappings, which is merged.
    mutating func readControl(_ node: Node, name: String) -> ConditionalControl? {
        let what = "conditional_controls \"\(name)\""
        let keys: Set = ["actions", "agents", "require_approval", "approval_timeout", "approvers", "step_up_auth",
                         "max_age", "issuers", "rate_limit", "burst", "approval_reusable_for", "show_arguments"]
        var pairs: [(String, Node, Node)] = []
        if let seq = node.sequence {
            for item in seq { pairs += entries(item, what, allowed: keys) }
        } else {
            pairs = entries(node, what, allowed: keys)
        }
        var control = ConditionalControl(name: name, actions: [])
        var approval = false
        var approvalTimeout = Duration.seconds(900)
        var approvers: PeerSet?
        var reusableFor = Duration.zero
        var shown: [String] = []
        var stepUp = false
        var maxAge = Duration.seconds(300)
        var issuers: PeerSet?
        var rate: ActionRateLimit?
        var burst: Int?
        var ok = true
        for (key, _, v) in pairs {
            switch key {
            case "actions":
                control.actions = strings(v, "\(what) actions").map { ActionPattern($0.0) }
            case "agents":
                control.agents = Set(strings(v, "\(what) agents").map(\.0))
            case "require_approval":
                approval = bool(v, key) ?? false
            case "approval_timeout":
                if let d = policyDuration(v, key) { approvalTimeout = d } else { ok = false }
            case "approvers":
                approvers = peerSet(v, key)
            case "approval_reusable_for":
                if let d = policyDuration(v, key) { reusableFor = d } else { ok = false }
            case "show_arguments":
                shown = strings(v, "\(what) show_arguments").map(\.0)
            case "step_up_auth":
                stepUp = bool(v, key) ?? false
            case "max_age":
                if let d = policyDuration(v, key) { maxAge = d } else { ok = false }
            case "issuers":
                issuers = peerSet(v, key)
            case "rate_limit":
                guard let s = v.string, let r = ActionRateLimit(parsing: s) else {
                    issue(v, "\(what): rate_limit must look like 1/min, 10/hour, 5/s or 100/day")
                    ok = false
                    continue
                }
                rate = r
            case "burst":
                if let n = count(v, key, min: 1) { burst = Int(n) } else { ok = false }
            default:
                break
            }
        }
        if control.actions.isEmpty {
            issue(node, "\(what) needs actions: the actions it applies to (e.g. [refund.issue] or [user.*])")
            ok = false
        }
        if !approval, !stepUp, rate == nil, pairs.allSatisfy({ $0.0 != "rate_limit" }) {
            issue(node, "\(what) sets none of require_approval, step_up_auth, rate_limit")
            ok = false
        }
        if burst != nil, rate == nil {
            issue(node, "\(what): burst needs a rate_limit")
            ok = false
        }
        if !approval, reusableFor > .zero || !shown.isEmpty {
            issue(node, "\(what): approval_reusable_for and show_arguments need require_approval: true")
            ok = false
        }
        if approval {
            control.requireApproval = ApprovalControl(timeout: approvalTimeout, approvers: approvers,
                                                      reusableFor: reusableFor, shownArguments: shown)
        }
        if stepUp { control.stepUpAuth = StepUpControl(maxAge: maxAge, issuers: issuers) }
        if var rate {
            rate.burst = burst
            control.rateLimit = rate
        }
        return ok ? control : nil
    }

    mutating func budgets(_ node: Node, _ what: String) -> BudgetLimits {
        var limits = BudgetLimits()
        for (key, _, v) in entries(node, what, allowed: ["daily", "monthly", "scope"]) {
            if key == "scope" {
                if let text = v.string, let scope = BudgetScope(rawValue: text) {
                    limits.scope = scope
                } else {
                    issue(v, "\(what) scope must be host (this daemon's own ledger) or cluster (held in the "
                        + "cluster store, one cap for every daemon)")
                }
                continue
            }
            var amount = BudgetAmount()
            for (k, _, a) in entries(v, "\(what) \(key)", allowed: ["tokens", "cost_usd"]) {
                if k == "tokens" {
                    guard let n = a.int, n >= 0 else {
                        issue(a, "\(what) \(key) tokens must be a whole number ≥ 0")
                        continue
                    }
                    amount.tokens = Int64(n)
                } else {
                    guard let usd = number(a), usd >= 0, usd < 1e12 else {
                        issue(a, "\(what) \(key) cost_usd must be an amount of dollars ≥ 0, such as 25 or 2.50")
                        continue
                    }
                    amount.microUSD = Int64((usd * 1_000_000).rounded())
                }
            }
            if v.mapping?.isEmpty == true { issue(v, "\(what) \(key) needs tokens, cost_usd or both") }
            if key == "daily" { limits.daily = amount } else { limits.monthly = amount }
        }
        return limits
    }

    mutating func readPrice(_ node: Node, model: String) -> ModelPrice? {
        var input: Double?
        var output: Double?
        for (key, _, v) in entries(node, "prices \"\(model)\"", allowed: ["input_usd_per_1m", "output_usd_per_1m"]) {
            guard let x = number(v), x >= 0 else {
                issue(v, "prices \"\(model)\" \(key) must be a number of dollars per million tokens ≥ 0")
                continue
            }
            if key == "input_usd_per_1m" { input = x } else { output = x }
        }
        guard node.mapping != nil else { return nil }
        guard let input, let output else {
            issue(node, "prices \"\(model)\" needs input_usd_per_1m and output_usd_per_1m")
            return nil
        }
        return ModelPrice(inputUSDPerMillion: input, outputUSDPerMillion: output)
    }

    // MARK: - Cross-checks

    mutating func crossCheck(_ policy: GovernancePolicy, anonymousNode: Node?, agentNodes: [String: Node],
                             controlNodes: [String: Node], root: Node) {
        if case .agent(let id) = policy.anonymous, policy.agents[id] == nil {
            issue(anonymousNode, "anonymous names agent \"\(id)\", which is not defined (use deny, or an agent)")
        }
        let anyStepUpCredentials = policy.agents.values.contains { !$0.stepUpCredentials.isEmpty }
        for control in policy.controls {
            let node = controlNodes[control.name]
            for agent in (control.agents ?? []).sorted() where policy.agents[agent] == nil {
                issue(node, "conditional_controls \"\(control.name)\" names agent \"\(agent)\", which is not defined")
            }
            if let approval = control.requireApproval, (approval.approvers ?? policy.approvers).isEmpty {
                issue(node, "conditional_controls \"\(control.name)\" requires approval but nobody may approve: "
                    + "give it approvers, or set the top-level approvers")
            }
            if let stepUp = control.stepUpAuth, (stepUp.issuers ?? policy.approvers).isEmpty, !anyStepUpCredentials {
                issue(node, "conditional_controls \"\(control.name)\" requires step-up but nobody may issue one: "
                    + "give it issuers, set the top-level approvers, or list step_up_credentials")
            }
        }
        // A cost budget can only be checked for models with a price.
        let costBudgets = policy.agents.values.contains { $0.budgets.hasCostLimit }
            || policy.tenants.values.contains { $0.budgets.hasCostLimit }
        guard costBudgets else { return }
        for (id, agent) in policy.agents.sorted(by: { $0.key < $1.key }) {
            let modelsNode = agentNodes[id]?.mapping?["scopes"]?.mapping?["models"]
            for item in modelsNode?.sequence ?? [] {
                guard let model = item.string, model != "*", policy.prices[model] == nil,
                      agent.scopes.models.contains(model)
                else { continue }
                issue(item, "model \"\(model)\" has no price in prices:, so cost budgets cannot be checked for it")
            }
        }
    }

    // MARK: - Values

    mutating func peerSet(_ node: Node, _ what: String) -> PeerSet {
        var set = PeerSet()
        for (key, _, v) in entries(node, what, allowed: ["uids", "gids"]) {
            if key == "uids" { set.uids = ids(v, key) } else { set.gids = ids(v, key) }
        }
        return set
    }

    mutating func ids(_ node: Node, _ key: String) -> Set<UInt32> {
        guard let seq = node.sequence else {
            issue(node, "\(key) must be a list of numeric ids")
            return []
        }
        var out: Set<UInt32> = []
        for item in seq {
            guard let n = item.int, n >= 0, n <= Int(UInt32.max) else {
                issue(item, "\(key): each entry must be a numeric id")
                continue
            }
            out.insert(UInt32(n))
        }
        return out
    }

    mutating func strings(_ node: Node, _ what: String) -> [(String, Node)] {
        guard let seq = node.sequence else {
            issue(node, "\(what) must be a list")
            return []
        }
        var out: [(String, Node)] = []
        for item in seq {
            guard item.scalar != nil, let s = item.string, !s.isEmpty else {
                issue(item, "\(what): each entry must be a non-empty string")
                continue
            }
            out.append((s, item))
        }
        return out
    }

    mutating func timestamp(_ node: Node, _ key: String) -> Double? {
        guard let s = node.string, let t = RFC3339.parse(s) else {
            issue(node, "\(key) must be an RFC 3339 time such as 2025-06-01T00:00:00Z")
            return nil
        }
        return t
    }

    /// Durations as in the config (`500ms`, `5s`, `2m`, `1h`), plus days (`30d`) for validity windows.
    mutating func policyDuration(_ node: Node, _ key: String) -> Duration? {
        if let s = node.string, s.hasSuffix("d"), let days = Double(s.dropLast()), days > 0, days.isFinite {
            return .seconds(days * 86_400)
        }
        return duration(node, key)
    }

    func number(_ node: Node) -> Double? {
        guard node.scalar != nil else { return nil }
        return node.float ?? node.int.map(Double.init)
    }
}
