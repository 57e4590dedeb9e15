/// What an audit event records. Each kind has its own `MESSAGE_ID`, explained by `systemd/breakwater.catalog`,
/// so `journalctl MESSAGE_ID=...` selects one kind and `journalctl -x` explains it.
public enum AuditEventKind: String, CaseIterable, Hashable, Sendable, CustomStringConvertible {
    /// An agent presented a credential: accepted (`DECISION=allow`) or refused (`DECISION=deny`).
    case identityCheck = "identity_check"
    /// The policy allowed or denied an action, naming the rule that decided.
    case policyDecision = "policy_decision"
    /// A call was put in the approval queue.
    case approvalRequested = "approval_requested"
    /// An approver allowed a queued call.
    case approvalGranted = "approval_granted"
    /// An approver refused a queued call.
    case approvalDenied = "approval_denied"
    /// A queued call was refused because nobody decided in time.
    case approvalExpired = "approval_expired"
    /// A sensitive action was refused until the caller presents a step-up credential.
    case stepUpDemanded = "step_up_demanded"
    /// The per-agent, per-action rate limit refused a call.
    case rateLimitRefused = "rate_limit_refused"
    /// The per-agent concurrency limit (calls in flight) refused a call.
    case concurrencyLimitRefused = "concurrency_limit_refused"
    /// An agent or tenant budget refused a call.
    case budgetRefused = "budget_refused"
    /// One request to an upstream provider finished (successfully or not).
    case upstreamAttempt = "upstream_attempt"
    /// The resilience engine will try the same route step again after a pause.
    case retry = "retry"
    /// The resilience engine moved to the next step of the route's fallback chain.
    case fallback = "fallback"
    /// A circuit breaker changed state.
    case breakerTransition = "breaker_transition"
    /// A provider's failure rate crossed the configured threshold.
    case failureRateAlert = "failure_rate_alert"
    /// A call finished and its outcome was sent to the app.
    case callCompleted = "call_completed"
    /// An app asked to perform an action (AUTHORIZE), with the hash of its arguments.
    case actionRequested = "action_requested"
    /// The policy allowed an action: the app may execute it now.
    case actionAllowed = "action_allowed"
    /// The policy refused an action (scope, tenant, step-up, rate limit, approval denied or expired, ...).
    case actionDenied = "action_denied"
    /// An earlier approval of the same action, tenant, agent and arguments allowed it again, within the window
    /// the policy sets (`approval_reusable_for`).
    case approvalReused = "approval_reused"
    /// A tool (function) outside the agent's scopes: removed from a request's `tools`, or the call refused for it.
    case toolCallBlocked = "tool_call_blocked"
    /// The writer itself could not record some entries (queue full, or journald not taking them).
    case auditLoss = "audit_loss"
    /// The cluster store stopped answering: limits and budgets with `scope: cluster` run on local shares.
    case clusterDegraded = "cluster_degraded"
    /// The cluster store answers again: cluster limits and budgets are enforced across the fleet once more.
    case clusterRestored = "cluster_restored"

    /// The kind's `MESSAGE_ID`, generated once with `systemd-id128 new`. Never change one: admins' filters and
    /// the catalog depend on it.
    public var messageID: String {
        switch self {
        case .identityCheck: "74dd06e1e3784b888107e7c15a87f4f9"
        case .policyDecision: "34340cbcb98844868ddc65a13a700ff8"
        case .approvalRequested: "8353bc8d838348eaa049b1ef2df0b64a"
        case .approvalGranted: "2475c642fa3c431085a41a37f0e0a365"
        case .approvalDenied: "4e77d9c54fb04d4cb9bf18eecbf0d97c"
        case .approvalExpired: "fb11bb6745ff40ef8bdc4deebf928cbc"
        case .stepUpDemanded: "0332ccb51bfb445f857f870367c5df99"
        case .rateLimitRefused: "5a01b30b36674301be457c7b6dc79cc7"
        case .concurrencyLimitRefused: "b143d4138c6f4bf5b45c70448b9347be"
        case .budgetRefused: "df98f06572684cca89710f4ce720605e"
        case .upstreamAttempt: "e50044f9b4c545e2a09b4927ea5b02eb"
        case .retry: "ed4ebe4b38dd46f8b08fe465ab9d1d0d"
        case .fallback: "b61db148d5d040ea81f43714100575bf"
        case .breakerTransition: "1f979a8598b64c5588d8a5ef26f7152d"
        case .failureRateAlert: "374e785366e546d7aba94dc3f85592b5"
        case .callCompleted: "f91d955ff15343e4b82e60d0aa363d11"
        case .auditLoss: "b1911874625647e68267122ccace6e9e"
        case .clusterDegraded: "93fdd636161a4f3d8bc2e57709596bc3"
        case .clusterRestored: "fd9c98069b9143ce96b025a8eab46408"
        case .actionRequested: "cfbd6982332d46dd9d03936c097340fd"
        case .actionAllowed: "49aaba552a1d4a448bbc53bc8387c1bc"
        case .actionDenied: "fb205ea05474400589747e74ddb60c9a"
        case .approvalReused: "1c7038dd8141426982aa335795056b89"
        case .toolCallBlocked: "ccbde119e9d441009f2b997fae28ac8e"
        }
    }

    /// The kind in words, as `AUDIT_KIND` carries it.
    public var description: String { rawValue }
}
