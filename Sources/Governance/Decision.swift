import Resilience

/// The gate's answer for one call (or one fallback attempt), with the rule that decided.
public enum Decision: Sendable, Hashable, CustomStringConvertible {
    case allow(rule: String)
    case deny(rule: String, code: DenialCode, reason: String)
    /// The call must wait in the approval queue until one of `approvers` approves it, or `timeout` denies it.
    case requireApproval(rule: String, timeout: Duration, approvers: PeerSet)
    /// The call must carry a step-up credential; the app should obtain one and retry.
    case requireStepUp(rule: String)
    /// The action's rate limit is spent for this agent; nothing was taken, try again after `retryAfter`.
    case rateLimited(rule: String, retryAfter: Duration)

    /// The policy rule that made the decision, as a path into the policy file
    /// (`agents.invoice-agent.scopes.actions`, `conditional_controls.high_risk_actions.rate_limit`).
    public var rule: String {
        switch self {
        case .allow(let rule), .deny(let rule, _, _), .requireApproval(let rule, _, _), .requireStepUp(let rule),
             .rateLimited(let rule, _):
            rule
        }
    }

    public var isAllowed: Bool {
        if case .allow = self { return true }
        return false
    }

    /// A stable name for the audit trail's DECISION field.
    public var name: String {
        switch self {
        case .allow: "allow"
        case .deny: "deny"
        case .requireApproval: "require_approval"
        case .requireStepUp: "require_step_up"
        case .rateLimited: "rate_limited"
        }
    }

    public var description: String {
        switch self {
        case .allow(let rule): "allow by \(rule)"
        case .deny(let rule, let code, let reason): "deny (\(code)) by \(rule): \(reason)"
        case .requireApproval(let rule, let timeout, _): "require approval by \(rule) within \(timeout)"
        case .requireStepUp(let rule): "require step-up by \(rule)"
        case .rateLimited(let rule, let wait): "rate limited by \(rule): retry after \(wait)"
        }
    }
}

/// A stable code for a denial, for programs and the audit trail. A struct so codes can be added without breaking
/// callers' switches.
public struct DenialCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// No rule allows anything for this agent.
    public static let defaultDeny = DenialCode(rawValue: "default_deny")
    /// The agent is not in the policy.
    public static let unknownAgent = DenialCode(rawValue: "unknown_agent")
    /// The connection's credential is no longer valid (its `AuthRefusal` code is in the reason).
    public static let identity = DenialCode(rawValue: "identity")
    public static let actionRequired = DenialCode(rawValue: "action_required")
    public static let outOfScope = DenialCode(rawValue: "out_of_scope")
    public static let routeNotInScope = DenialCode(rawValue: "route_not_in_scope")
    public static let modelNotInScope = DenialCode(rawValue: "model_not_in_scope")
    public static let tenantRequired = DenialCode(rawValue: "tenant_required")
    public static let wrongTenant = DenialCode(rawValue: "wrong_tenant")
    /// A step-up credential was presented but is unknown, revoked, or another agent's.
    public static let stepUpInvalid = DenialCode(rawValue: "step_up_invalid")
    /// A step-up credential was presented but is older than the control's `max_age`.
    public static let stepUpExpired = DenialCode(rawValue: "step_up_expired")
    public static let concurrencyLimit = DenialCode(rawValue: "concurrency_limit")
    /// A budget would be overspent (from `BudgetDecision.decision`).
    public static let budgetExceeded = DenialCode(rawValue: "budget_exceeded")
    /// A cost budget applies but the model has no price.
    public static let unpricedModel = DenialCode(rawValue: "unpriced_model")

    public var description: String { rawValue }
}

/// One call as the gate sees it: who, doing what, for whom, through which route and model.
public struct AccessRequest: Sendable, Hashable, CustomStringConvertible {
    /// Where in a call's life the gate runs. Controls that count or wait (rate limits, approval, concurrency)
    /// apply once per call, not once per attempt.
    public enum Pass: String, Sendable, Hashable {
        /// The first check of a call: everything, including step-up; takes a rate-limit unit and, when allowed,
        /// an in-flight slot.
        case admission
        /// The call was approved in the queue: identity, tenant and scopes again, no approval, no rate limit (it
        /// was taken at admission); takes an in-flight slot when allowed.
        case afterApproval = "after_approval"
        /// A fallback target of a call already admitted: identity, tenant and scopes (the target's route and
        /// model) only. Takes no slot.
        case fallback
    }

    public var principal: Principal
    public var action: String?
    public var tenant: String?
    /// The route of an LLM call; nil for an action the app asks to perform (AUTHORIZE), which has no route or
    /// model to check.
    public var route: String?
    /// The model of the target about to be tried.
    public var model: String?
    /// The step-up credential the call carries, if any.
    public var stepUpToken: PresentedToken?
    public var pass: Pass
    /// An action's arguments, as an approval binds them: the SHA-256 of their canonical JSON (nil for LLM calls).
    public var argumentHash: String?

    public init(principal: Principal, action: String?, tenant: String?, route: String?, model: String?,
                stepUpToken: PresentedToken? = nil, pass: Pass = .admission, argumentHash: String? = nil) {
        self.principal = principal
        self.action = action
        self.tenant = tenant
        self.route = route
        self.model = model
        self.stepUpToken = stepUpToken
        self.pass = pass
        self.argumentHash = argumentHash
    }

    public var description: String {
        "\(principal) action \(action.map { "\"\($0)\"" } ?? "(none)") tenant "
            + "\(tenant.map { "\"\($0)\"" } ?? "(none)") "
            + (route.map { "route \"\($0)\" model \(model ?? "(none)") " } ?? "arguments \(argumentHash ?? "-") ")
            + "(\(pass.rawValue))"
    }
}

/// A dry run's answer (`breakwater policy check`): the decision, and each check on the way to it.
public struct Explanation: Sendable, Hashable, CustomStringConvertible {
    public var decision: Decision
    /// One line per check made, in order, ending with the deciding one.
    public var trace: [String]

    public var rule: String { decision.rule }

    public var description: String {
        (trace.map { "  " + $0 } + ["=> \(decision)"]).joined(separator: "\n")
    }
}
