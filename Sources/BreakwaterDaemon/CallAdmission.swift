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
        decisionRule = decision.rule
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
            // An action approved earlier with the very same arguments, within the window the policy allows.
            if let key = reuseKey(rule: rule), let approvalID = governance.reusableApproval(key) {
                approvalUsed = approvalID
                shared.audit(.approvalReused, subject) { e in
                    e.rule = rule
                    e[.approvalID] = approvalID
                    e[.argumentHash] = key.argumentHash
                }
                var again = access
                again.pass = .afterApproval
                return handle(governance.authorize(again), governance: governance, afterApproval: true)
            }
            waitForApproval(rule: rule, timeout: timeout, approvers: approvers, governance: governance)
        }
    }

    /// What a reusable approval of this action would be valid for (nil for an LLM call, which has no arguments).
    private func reuseKey(rule: String) -> GovernanceRegistry.ReuseKey? {
        guard case .action = work, let access, let hash = access.argumentHash else { return nil }
        return GovernanceRegistry.ReuseKey(agent: access.principal.agent, action: access.action,
                                           tenant: access.tenant, argumentHash: hash, rule: rule)
    }

    private func waitForApproval(rule: String, timeout: Duration, approvers: PeerSet,
                                 governance: GovernanceRegistry) {
        guard let access else { return }
        // An action's approver sees the fields the policy shows, and nothing else of its arguments.
        var shown: [String: String]?
        if case .action(let action) = work {
            shown = action.shown(governance.approvalControl(rule: rule)?.shownArguments ?? [])
        }
        var rng = SystemRandomNumberGenerator()
        let fresh = "apr-" + String(rng.next() as UInt64, radix: 36)
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let loop = eventLoop
        let queued: (id: String, deadline: Instant)
        do {
            queued = try governance.requestApproval(
                id: fresh, requestID: requestID, request: access,
                requester: connection?.peer ?? PeerCredentials(uid: .max, gid: .max, pid: 0),
                rule: rule, approvers: approvers, timeout: timeout, shownArguments: shown,
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
            e[.argumentHash] = access.argumentHash
            e[.shownArguments] = shown.map(AuthorizedAction.json)
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
            e[.argumentHash] = access.argumentHash
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
            approvalUsed = id
            // An action's approval bound to its arguments: reusable for the policy's window, else this use only.
            if let rule = decisionRule, let key = reuseKey(rule: rule),
               let window = governance.approvalControl(rule: rule)?.reusableFor, window > .zero {
                governance.keepReusable(key, approvalID: id, for: window)
            }
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
