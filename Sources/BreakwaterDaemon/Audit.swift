import Governance
import Resilience
import Systemd

/// Who and what a call is about, stamped on each of its audit events.
struct AuditSubject: Sendable {
    var requestID: String
    var agent: String?
    var tenant: String?
    var action: String?
    var route: String?
    var peer: PeerCredentials?
    var clientName: String?
}

extension DaemonContext {
    /// Records one audit event in the journal (off the hot path: the writer queues it). Never give it prompts,
    /// completions, tokens, keys or provider error bodies: only names, codes, counts and readable reasons.
    func audit(_ kind: AuditEventKind, _ subject: AuditSubject?, _ fill: (inout AuditEvent) -> Void = { _ in }) {
        guard let writer = auditWriter else { return }
        var e = AuditEvent(kind, requestID: subject?.requestID)
        if let s = subject {
            e.agent = s.agent
            e.tenant = s.tenant
            e.action = s.action
            e[.route] = s.route
            e[.clientName] = s.clientName
            if let p = s.peer {
                e.set(.peerUID, p.uid)
                e.set(.peerGID, p.gid)
                e.set(.peerPID, p.pid)
            }
        }
        fill(&e)
        writer.record(e)
    }

    /// The audit kind and fields of a policy refusal.
    func auditDecision(_ decision: Decision, _ subject: AuditSubject, model: String?) {
        metrics.policyDecision(decision.metricName, rule: decision.rule)
        let kind: AuditEventKind
        switch decision {
        case .rateLimited: kind = .rateLimitRefused
        case .requireStepUp: kind = .stepUpDemanded
        case .deny(_, let code, _) where code == .concurrencyLimit: kind = .concurrencyLimitRefused
        case .deny(_, let code, _) where code == .budgetExceeded: kind = .budgetRefused
        default: kind = .policyDecision
        }
        audit(kind, subject) { e in
            e.decision = switch decision {
            case .allow: .allow
            case .requireApproval: .pending
            default: .deny
            }
            e.rule = decision.rule
            e.model = model
            switch decision {
            case .deny(_, let code, let reason): e.reason = "\(code.rawValue): \(reason)"
            case .rateLimited(_, let wait): e.set(.retryAfterMilliseconds, wait.nanoseconds / 1_000_000)
            default: break
            }
        }
    }
}

extension Decision {
    /// The `decision` label of `breakwater_policy_decisions_total`.
    var metricName: String {
        switch self {
        case .allow: "allow"
        case .deny: "deny"
        case .requireStepUp: "require_step_up"
        case .rateLimited: "rate_limited"
        case .requireApproval: "require_approval"
        }
    }
}
