import BreakwaterWire
import Governance
import Logging
import NIOCore
import Resilience
import Systemd

/// Admission: whether a call may start at all, decided by the policy's gate before its first attempt — allowed,
/// refused (with the wire code the app gets), step-up required, rate-limited, or held for a person's approval,
/// after which the gate is asked again. Without a policy every call is admitted at once.
extension CallDriver {
    func admit() {
        guard let governance = shared.governance, let access else { return admitted(agent: nil) }
        handle(governance.authorize(access), governance: governance, afterApproval: false)
    }

    private func handle(_ decision: Decision, governance: GovernanceRegistry, afterApproval: Bool) {
        guard case .admitting = phase, let access else { return }
        let action = access.action ?? "the call"
        if case .requireApproval = decision {} else {
            shared.auditDecision(decision, subject, model: access.model)
        }
        switch decision {
        case .allow:
            admitted(agent: access.principal.agent)
        case .deny(let rule, let code, let reason):
            let wire: ErrorCode = switch code {
            case .concurrencyLimit: .concurrencyLimit
            case .budgetExceeded: .budgetExceeded
            case .stepUpInvalid, .stepUpExpired: .stepUpRequired
            default: .forbidden
            }
            refuse(wire, "\(reason) (rule \(rule))")
        case .requireStepUp(let rule):
            refuse(.stepUpRequired, "\(action) needs step-up authentication (rule \(rule))")
        case .rateLimited(let rule, let wait):
            refuse(.rateLimited, "\(action) is rate-limited for this agent (rule \(rule))",
                   retryAfterMs: UInt32(clamping: wait.nanoseconds / 1_000_000))
        case .requireApproval(let rule, let timeout, let approvers):
            guard !afterApproval else { return refuse(.forbidden, "approval loop in policy (rule \(rule))") }
            waitForApproval(rule: rule, timeout: timeout, approvers: approvers, governance: governance)
        }
    }

    private func waitForApproval(rule: String, timeout: Duration, approvers: PeerSet,
                                 governance: GovernanceRegistry) {
        guard let access else { return }
        var rng = SystemRandomNumberGenerator()
        let fresh = "apr-" + String(rng.next() as UInt64, radix: 36)
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let loop = eventLoop
        let queued: (id: String, deadline: Instant)
        do {
            queued = try governance.requestApproval(
                id: fresh, requestID: requestID, request: access,
                requester: connection?.peer ?? PeerCredentials(uid: .max, gid: .max, pid: 0),
                rule: rule, approvers: approvers, timeout: timeout,
                onOutcome: { outcome in loop.execute { bound.value.approvalDecided(outcome) } },
                onStored: { loop.execute { bound.value.approvalStored() } })
        } catch {
            return refuse(.internalError, "could not queue the approval: \(error.code.rawValue)")
        }
        let id = queued.id
        let remaining = max(.zero, queued.deadline - governance.clock.now())
        let timer = eventLoop.scheduleTask(in: .nanoseconds(remaining.nanoseconds) + .milliseconds(5)) {
            _ = governance.expireDue()
        }
        awaitApproval(id: id, deadline: queued.deadline, timer: timer)
        shared.metrics.policyDecision("require_approval", rule: rule)
        shared.audit(.approvalRequested, subject) { e in
            e.decision = .pending
            e.rule = rule
            e[.approvalID] = id
            e.set(.timeoutMilliseconds, remaining.nanoseconds / 1_000_000)
        }
        shared.logger.notice("approval requested", metadata: [
            "approval_id": "\(id)", "agent": "\(access.principal.agent)", "action": "\(access.action ?? "-")",
            "rule": "\(rule)",
        ])
    }

    /// The approval is in the state store (or there is none): the app hears "pending", with the approval's id
    /// and the time left — unless it was decided meanwhile.
    private func approvalStored() {
        guard case .awaitingApproval(let id, let deadline, _) = phase, let governance = shared.governance else { return }
        let remaining = max(.zero, deadline - governance.clock.now())
        connection?.write([CallNotice(kind: CallNotice.pendingApproval, approvalID: id,
                                      message: "\(access?.action ?? "the call") needs an approval: "
                                          + "breakwater approve \(id)",
                                      timeoutMs: UInt32(clamping: remaining.nanoseconds / 1_000_000))
                              .frame(streamID: streamID)],
                          streamID: streamID)
    }

    private func approvalDecided(_ outcome: GovernanceRegistry.ApprovalOutcome) {
        guard case .awaitingApproval(let id, _, _) = phase, let governance = shared.governance, var access else { return }
        approvalSettled()
        governance.forget(id)
        let waited = shared.resilience.clock.now() - startedAt
        shared.audit(outcome.auditKind, subject) { e in
            e[.approvalID] = id
            e.set(.waitedMilliseconds, waited.nanoseconds / 1_000_000)
            switch outcome {
            case .approved(let by):
                e.decision = .allow
                e.set(.approverUID, by.uid)
            case .denied(let reason):
                e.decision = .deny
                e.reason = reason
            case .expired:
                e.decision = .deny
                e.reason = "approval timeout passed"
            }
        }
        switch outcome {
        case .approved:
            access.pass = .afterApproval
            handle(governance.authorize(access), governance: governance, afterApproval: true)
        case .denied(let reason):
            refuse(.approvalDenied, "an approver denied the call: \(reason)")
        case .expired:
            refuse(.approvalExpired, "nobody approved the call in time")
        }
    }
}

extension GovernanceRegistry.ApprovalOutcome {
    var auditKind: AuditEventKind {
        switch self {
        case .approved: .approvalGranted
        case .denied: .approvalDenied
        case .expired: .approvalExpired
        }
    }
}
