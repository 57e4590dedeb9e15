import Systemd

/// One realistic event of every kind, with the fields the daemon would give it.
enum AuditEventSamples {
    static let peer = AuditPeer(uid: 1000, gid: 100, pid: 4242)

    static func all(requestID: String = "r-1") -> [AuditEvent] {
        AuditEventKind.allCases.map { sample($0, requestID: requestID) }
    }

    static func sample(_ kind: AuditEventKind, requestID: String = "r-1") -> AuditEvent {
        var e = AuditEvent(kind, requestID: [.auditLoss, .clusterDegraded, .clusterRestored].contains(kind) ? nil : requestID)
        func call() {
            e.agent = "refund-bot"
            e.tenant = "acme"
            e.action = "refund.issue"
        }
        func upstream() {
            e.provider = "openai"
            e.model = "gpt-4o-mini"
        }
        switch kind {
        case .identityCheck:
            e.agent = "refund-bot"
            e.decision = .deny
            e.reason = "token expired"
            e[.credentialID] = "refund-bot#2"
            e.peer = peer
        case .policyDecision:
            call()
            e.decision = .allow
            e.rule = "scopes.refund-bot"
        case .approvalRequested:
            call()
            e[.approvalID] = "ap-17"
            e.set(.timeoutMilliseconds, 300_000)
        case .approvalGranted:
            call()
            e[.approvalID] = "ap-17"
            e.set(.approverUID, 0)
            e.set(.waitedMilliseconds, 1500)
        case .approvalDenied:
            call()
            e[.approvalID] = "ap-18"
            e.set(.approverUID, 0)
            e.reason = "not during the audit"
        case .approvalExpired:
            call()
            e[.approvalID] = "ap-19"
            e.set(.waitedMilliseconds, 300_000)
        case .stepUpDemanded:
            call()
            e.reason = "step-up credential missing"
        case .rateLimitRefused:
            call()
            e[.limit] = "1/min"
            e.set(.retryAfterMilliseconds, 59_000)
        case .concurrencyLimitRefused:
            call()
            e[.limit] = "4 in flight"
        case .budgetRefused:
            call()
            e[.budgetScope] = "tenant"
            e[.budgetWindow] = "day"
            e[.budgetUnit] = "tokens"
            e.set(.budgetLimit, 100_000)
            e.set(.budgetUsed, 99_000)
            e.set(.budgetRequested, 4096)
        case .upstreamAttempt:
            call()
            upstream()
            e.attempt = 1
            e.status = 429
            e.errorClass = "rate_limited"
            e.latency = .milliseconds(87)
        case .retry:
            upstream()
            e.attempt = 1
            e.errorClass = "rate_limited"
            e.set(.delayMilliseconds, 250)
        case .fallback:
            upstream()
            e[.fallbackFrom] = "openai/gpt-4o-mini"
            e[.fallbackTo] = "anthropic/claude-3-5-haiku"
            e.reason = "retries exhausted"
        case .breakerTransition:
            e.provider = "openai"
            e[.breaker] = "openai"
            e.breakerFrom = .closed
            e.breakerTo = .open
            e.reason = "5 failures in 10s"
        case .failureRateAlert:
            e.provider = "openai"
            e[.failureRate] = "0.42"
            e[.failureRateThreshold] = "0.25"
            e.set(.sampleCount, 40)
        case .actionRequested:
            call()
            e[.argumentHash] = String(repeating: "ab", count: 32)
            e[.shownArguments] = #"{"amount":40,"invoice":"1182"}"#
        case .actionAllowed:
            call()
            e.rule = "conditional_controls.destructive_changes.require_approval"
            e[.argumentHash] = String(repeating: "ab", count: 32)
            e[.decisionID] = "dec-1"
        case .actionDenied:
            call()
            e.rule = "agents.refund-bot.scopes.actions"
            e.reason = "out_of_scope"
            e[.argumentHash] = String(repeating: "ab", count: 32)
        case .approvalReused:
            call()
            e[.approvalID] = "ap-17"
            e[.argumentHash] = String(repeating: "ab", count: 32)
        case .toolCallBlocked:
            call()
            e[.toolName] = "delete_account"
            e.rule = "agents.refund-bot.scopes.actions"
            e.reason = "removed from the request's tools"
        case .callCompleted:
            call()
            upstream()
            e.outcome = .ok
            e.set(.attempts, 2)
            e.status = 200
            e.latency = .milliseconds(340)
            e.set(.inputTokens, 812)
            e.set(.outputTokens, 95)
            e.set(.costMicros, 180)
            e.peer = peer
        case .auditLoss:
            e.set(.droppedCount, 3)
            e.set(.unwrittenCount, 0)
        case .clusterDegraded:
            e[.clusterStore] = "redis://10.0.0.5:6379/0"
            e.set(.liveDaemons, 3)
            e[.fallbackShare] = "0.333"
            e.reason = "cannot connect to the cluster store: Connection refused"
        case .clusterRestored:
            e[.clusterStore] = "redis://10.0.0.5:6379/0"
            e.set(.liveDaemons, 3)
            e.set(.degradedMilliseconds, 12_400)
        }
        return e
    }
}
