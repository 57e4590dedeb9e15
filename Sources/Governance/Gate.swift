import Resilience

/// The runtime-enforcement gate: the policy plus the little state its controls keep (action rate limiters,
/// in-flight calls per agent, issued step-up credentials). A value-type state machine like `CircuitBreaker`: the
/// daemon keeps one behind a lock, asks it, and does the audit and any waiting outside the lock.
///
/// Per call: `authorize(.admission)`; on `.requireApproval` queue the call in an `ApprovalQueue` and, once
/// approved, `authorize(.afterApproval)`; every fallback target `authorize(.fallback)`; when the call ends,
/// `release(agent:)` once if an admission or after-approval pass returned `.allow`.
public struct Gate: Sendable {
    public private(set) var policy: GovernancePolicy
    private var limiters: [RateKey: GCRALimiter] = [:]
    private var inFlight: [String: Int] = [:]
    private var stepUpGrants: [StepUpGrant] = []
    private var limiterSweepThreshold = 4096

    struct RateKey: Hashable, Sendable {
        var agent: String
        var control: String
        var action: String
        var shape: GCRALimiterShape
    }

    public init(policy: GovernancePolicy) {
        self.policy = policy
    }

    /// Swaps in a reloaded policy (credential rotation, new scopes) without losing state: rate limiters whose
    /// limit is unchanged keep their history, in-flight counts and step-up grants carry over.
    public mutating func replacePolicy(_ new: GovernancePolicy) {
        policy = new
    }

    /// Checks a connection's token and peer at HELLO. See `GovernancePolicy.authenticate`.
    public func authenticate(token: [UInt8]?, peer: PeerCredentials, wallNow: Double) -> AuthDecision {
        policy.authenticate(token: token, peer: peer, wallNow: wallNow)
    }

    /// Decides one pass of one call. `now` is the monotonic clock (rate limits), `wallNow` Unix seconds
    /// (credential windows, step-up age).
    public mutating func authorize(_ request: AccessRequest, now: Instant, wallNow: Double) -> Decision {
        var trace = DecisionTrace(recording: false)
        return decide(request, now: now, wallNow: wallNow, trace: &trace)
    }

    /// A dry run for `breakwater policy check`: what `authorize(.admission)` would answer for `agent` now, with
    /// every check on the way, changing nothing. Identity is not checked (no token is presented); a control that
    /// needs a step-up credential answers `.requireStepUp`.
    public func explain(agent: String, action: String?, tenant: String?, route: String?, model: String?,
                        now: Instant, wallNow: Double) -> Explanation {
        var scratch = self
        var trace = DecisionTrace(recording: true)
        let request = AccessRequest(principal: Principal(agent: agent, proof: .dryRun), action: action,
                                    tenant: tenant, route: route, model: model, pass: .admission)
        let decision = scratch.decide(request, now: now, wallNow: wallNow, trace: &trace)
        return Explanation(decision: decision, trace: trace.lines)
    }

    /// Ends a call that an admission or after-approval pass allowed: frees its in-flight slot.
    public mutating func release(agent: String) {
        guard let n = inFlight[agent] else { return }
        inFlight[agent] = n > 1 ? n - 1 : nil
    }

    /// Calls in flight for `agent` (for status displays).
    public func inFlight(agent: String) -> Int { inFlight[agent] ?? 0 }

    // MARK: - Step-up credentials

    /// Registers a step-up credential an approver issued for `agent` (the daemon makes the random token and hands
    /// it to the approver; only its digest is kept). Refused unless `issuer` may issue step-ups for that agent.
    public mutating func grantStepUp(agent: String, token: [UInt8], by issuer: PeerCredentials,
                                     wallNow: Double) throws(StepUpRefusal) -> StepUpGrant {
        guard policy.agents[agent] != nil else {
            throw StepUpRefusal(code: .unknownAgent, reason: "agent \"\(agent)\" is not in the policy")
        }
        let controls = policy.controls.filter { $0.stepUpAuth != nil && ($0.agents?.contains(agent) ?? true) }
        guard !controls.isEmpty else {
            throw StepUpRefusal(code: .notRequired, reason: "no step_up_auth control applies to agent \"\(agent)\"")
        }
        let issuers = controls.compactMap { $0.stepUpAuth?.issuers ?? policy.approvers }
        guard issuers.contains(where: { $0.contains(issuer) }) else {
            throw StepUpRefusal(code: .notAnIssuer,
                                reason: "\(issuer) may not issue step-up credentials for agent \"\(agent)\"")
        }
        guard token.count >= 16 else {
            throw StepUpRefusal(code: .weakToken, reason: "a step-up token needs at least 16 bytes")
        }
        // Grants older than every control's max_age can never pass again.
        let longest = policy.controls.compactMap { $0.stepUpAuth?.maxAge.seconds }.max() ?? 0
        stepUpGrants.removeAll { wallNow - $0.issuedAt > longest }
        let grant = StepUpGrant(agent: agent, issuedBy: issuer, issuedAt: wallNow,
                                digest: CredentialDigest(hashing: token))
        stepUpGrants.append(grant)
        return grant
    }

    // MARK: - The decision

    private mutating func decide(_ r: AccessRequest, now: Instant, wallNow: Double,
                                 trace: inout DecisionTrace) -> Decision {
        let id = r.principal.agent
        guard let agent = policy.agents[id] else {
            return .deny(rule: "agents", code: .unknownAgent, reason: "agent \"\(id)\" is not in the policy")
        }
        let base = "agents.\(id)"

        // Identity, again: the credential may have expired or been revoked since HELLO.
        if let refusal = policy.recheck(r.principal, wallNow: wallNow) {
            return .deny(rule: refusal.rule, code: .identity, reason: "\(refusal.code): \(refusal.reason)")
        }
        trace.append(r.principal.proof == .dryRun ? "identity: not checked (dry run)" : "identity: \(r.principal)")

        // Default deny: an agent with no actions may do nothing.
        guard !agent.scopes.actions.isEmpty else {
            return .deny(rule: "default_deny", code: .defaultDeny,
                         reason: "agent \"\(id)\" has no scopes; nothing is allowed by default")
        }

        // Relationships: the tenant the call acts for.
        if let tenant = r.tenant {
            guard agent.tenants.contains("*") || agent.tenants.contains(tenant) else {
                return .deny(rule: "\(base).relationships", code: .wrongTenant,
                             reason: "agent \"\(id)\" may not act for tenant \"\(tenant)\"")
            }
            trace.append("tenant: \"\(tenant)\" allowed by \(base).relationships")
        } else {
            guard agent.tenants.contains("*") else {
                return .deny(rule: "\(base).relationships", code: .tenantRequired,
                             reason: "the call names no tenant, and agent \"\(id)\" acts only for named tenants")
            }
            trace.append("tenant: none named, allowed by \(base).relationships (*)")
        }

        // Scopes: the action, the route, the model.
        guard let pattern = agent.scopes.pattern(allowing: r.action) else {
            if let action = r.action {
                return .deny(rule: "\(base).scopes.actions", code: .outOfScope,
                             reason: "action \"\(action)\" is not in the scopes of agent \"\(id)\"")
            }
            return .deny(rule: "\(base).scopes.actions", code: .actionRequired,
                         reason: "the call names no action, and agent \"\(id)\" may only perform named actions")
        }
        trace.append("action: \(r.action.map { "\"\($0)\"" } ?? "none named") allowed by \(base).scopes.actions "
            + "(\(pattern))")
        if let route = r.route {
            guard agent.scopes.allows(route: route) else {
                return .deny(rule: "\(base).scopes.routes", code: .routeNotInScope,
                             reason: "route \"\(route)\" is not in the scopes of agent \"\(id)\"")
            }
            trace.append("route: \"\(route)\" allowed by \(base).scopes.routes")
            guard agent.scopes.allows(model: r.model) else {
                return .deny(rule: "\(base).scopes.models", code: .modelNotInScope,
                             reason: "model \(r.model.map { "\"\($0)\"" } ?? "(unknown)") is not in the scopes of "
                                 + "agent \"\(id)\"")
            }
            trace.append("model: \(r.model.map { "\"\($0)\"" } ?? "any") allowed by \(base).scopes.models")
        } else {
            trace.append("route and model: none (an action, not an LLM call)")
        }

        let allowRule = "\(base).scopes.actions"
        if r.pass == .fallback { return .allow(rule: allowRule) }

        let controls = policy.controls(agent: id, action: r.action)
        if controls.isEmpty { trace.append("conditional controls: none apply") }

        if r.pass == .admission {
            // Step-up first: it is the app's to fix, and costs the agent no rate-limit unit.
            for control in controls {
                guard let stepUp = control.stepUpAuth else { continue }
                let rule = control.rule("step_up_auth")
                if let refusal = checkStepUp(r.stepUpToken, agent: agent, control: stepUp, rule: rule,
                                             wallNow: wallNow) {
                    return refusal
                }
                trace.append("step-up: valid for \(rule)")
            }
            let approval = controls.first { $0.requireApproval != nil }
            if approval == nil, let refusal = concurrencyRefusal(agent) { return refusal }
            // Rate limits: every limit that applies must have room before any unit is taken.
            var taken: [(RateKey, GCRALimiter)] = []
            var longestWait: (rule: String, wait: Duration)?
            for control in controls {
                guard let limit = control.rateLimit else { continue }
                let key = RateKey(agent: id, control: control.name, action: r.action ?? "", shape: limit.limiter())
                var limiter = limiters[key]
                    ?? GCRALimiter(rate: limit.count, per: limit.period, burst: limit.burst)
                switch limiter.reserve(now: now) {
                case .allowed:
                    taken.append((key, limiter))
                    trace.append("rate limit: \(limit) has room (\(control.rule("rate_limit")))")
                case .wait(let until):
                    let wait = until - now
                    if wait > (longestWait?.wait ?? .zero) { longestWait = (control.rule("rate_limit"), wait) }
                }
            }
            if let longestWait { return .rateLimited(rule: longestWait.rule, retryAfter: longestWait.wait) }
            for (key, limiter) in taken { limiters[key] = limiter }
            if limiters.count > limiterSweepThreshold { sweepLimiters(now: now) }
            if let approval, let control = approval.requireApproval {
                return .requireApproval(rule: approval.rule("require_approval"), timeout: control.timeout,
                                        approvers: control.approvers ?? policy.approvers)
            }
        } else {
            trace.append("approval: granted")
            if let refusal = concurrencyRefusal(agent) { return refusal }
        }
        inFlight[id, default: 0] += 1
        return .allow(rule: allowRule)
    }

    private func concurrencyRefusal(_ agent: AgentPolicy) -> Decision? {
        guard let limit = agent.maxConcurrentCalls else { return nil }
        let current = inFlight[agent.id] ?? 0
        guard current >= limit else { return nil }
        return .deny(rule: "agents.\(agent.id).max_concurrent_calls", code: .concurrencyLimit,
                     reason: "agent \"\(agent.id)\" already has \(current) calls in flight (limit \(limit))")
    }

    private func checkStepUp(_ token: PresentedToken?, agent: AgentPolicy, control: StepUpControl, rule: String,
                             wallNow: Double) -> Decision? {
        guard let token, !token.bytes.isEmpty else { return .requireStepUp(rule: rule) }
        let digest = token.digest
        // Every candidate is compared (constant time), the agent's own and everyone else's, without early exit.
        var issuedAt: Double?
        var notAfter: Double?
        var valid = false
        for credential in policy.agents.values.flatMap(\.stepUpCredentials) where credential.digest == digest {
            let own = agent.stepUpCredentials.contains { $0.name == credential.name && $0.digest == digest }
            if own, issuedAt == nil, !credential.revoked, credential.notBefore.map({ wallNow >= $0 }) ?? false {
                issuedAt = credential.notBefore
                notAfter = credential.notAfter
                valid = true
            }
        }
        for grant in stepUpGrants where grant.digest == digest {
            if grant.agent == agent.id, issuedAt == nil {
                issuedAt = grant.issuedAt
                valid = true
            }
        }
        guard valid, let issuedAt else {
            return .deny(rule: rule, code: .stepUpInvalid,
                         reason: "the step-up credential is not valid for agent \"\(agent.id)\"")
        }
        let age = wallNow - issuedAt
        if age > control.maxAge.seconds || notAfter.map({ wallNow >= $0 }) == true {
            return .deny(rule: rule, code: .stepUpExpired,
                         reason: "the step-up credential was issued \(Int(age.rounded()))s ago; "
                             + "\(rule) accepts at most \(control.maxAge)")
        }
        return nil
    }

    /// Drops limiters that are back to full burst: a fresh one behaves the same, so memory stays bounded however
    /// many distinct actions a wildcard scope lets through.
    private mutating func sweepLimiters(now: Instant) {
        limiters = limiters.filter { key, limiter in
            var probe = limiter
            return probe.reserve(cost: key.shape.burst ?? key.shape.count, now: now) != .allowed
        }
        limiterSweepThreshold = max(4096, limiters.count * 2)
    }
}

extension GovernancePolicy {
    /// A dry run against this policy with fresh state (no rate limit spent, nothing in flight): what
    /// `breakwater policy check` prints when it reads the policy file itself rather than asking the daemon.
    public func explain(agent: String, action: String?, tenant: String?, route: String?, model: String?,
                        wallNow: Double) -> Explanation {
        Gate(policy: self).explain(agent: agent, action: action, tenant: tenant, route: route, model: model,
                                   now: .zero, wallNow: wallNow)
    }
}

/// A step-up credential issued at run time by an approver, kept as a digest only.
public struct StepUpGrant: Sendable, Hashable, CustomStringConvertible {
    public var agent: String
    public var issuedBy: PeerCredentials
    /// Unix seconds.
    public var issuedAt: Double
    let digest: CredentialDigest

    public var description: String {
        "step-up for agent \"\(agent)\" issued by \(issuedBy) at \(RFC3339.format(issuedAt))"
    }
}

/// Why a step-up credential could not be issued.
public struct StepUpRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let unknownAgent = Code(rawValue: "unknown_agent")
        public static let notRequired = Code(rawValue: "step_up_not_required")
        public static let notAnIssuer = Code(rawValue: "not_an_issuer")
        public static let weakToken = Code(rawValue: "weak_token")
        public var description: String { rawValue }
    }

    public var code: Code
    public var reason: String

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// The steps of a decision in words, for `explain` (`breakwater policy check`). `authorize` keeps none, and
/// builds none of the strings: a line is an autoclosure, made only when recording.
struct DecisionTrace {
    let recording: Bool
    private(set) var lines: [String] = []

    init(recording: Bool) {
        self.recording = recording
    }

    mutating func append(_ line: @autoclosure () -> String) {
        if recording { lines.append(line()) }
    }
}
