extension AuditEvent {
    /// The entry's `MESSAGE`: one readable line built from the event's own fields, e.g.
    /// `Policy denied refund.issue by agent refund-bot on tenant acme (rule default-deny) [request r-42]`.
    public var summary: String {
        var text = headline
        if let requestID { text += " [request \(requestID)]" }
        return text
    }

    private var headline: String {
        // Looked up only by the kinds that say them (an upstream attempt or a completion says neither).
        var who: String { phrase("by agent", agent) }
        var what: String { action ?? "the call" }
        var forTenant: String { phrase("on tenant", tenant) }
        var step: String { routeStep }
        switch kind {
        case .identityCheck:
            let peerText = peer.map { " (uid \($0.uid), pid \($0.pid))" } ?? ""
            let subject = agent.map { "agent " + $0 } ?? "unknown agent"
            if decision == .deny {
                return "Identity refused for \(subject)\(colon(reason))\(peerText)"
            }
            return "Identity accepted for \(subject)\(peerText)"
        case .policyDecision:
            let verb = decision == .deny ? "denied" : "allowed"
            return "Policy \(verb) \(what)\(who)\(forTenant)\(paren("rule", rule))"
        case .approvalRequested:
            return "Approval\(space(self[.approvalID])) requested for \(what)\(who)\(forTenant)"
        case .approvalGranted:
            return "Approval\(space(self[.approvalID])) granted\(phrase("by uid", self[.approverUID])) "
                + "for \(what)\(who)\(forTenant)"
        case .approvalDenied:
            return "Approval\(space(self[.approvalID])) denied\(phrase("by uid", self[.approverUID])) "
                + "for \(what)\(who)\(forTenant)\(colon(reason))"
        case .approvalExpired:
            return "Approval\(space(self[.approvalID])) expired\(phrase("after", self[.waitedMilliseconds], "ms")) "
                + "for \(what)\(who)\(forTenant)"
        case .stepUpDemanded:
            return "Step-up authentication demanded for \(what)\(who)\(forTenant)\(colon(reason))"
        case .rateLimitRefused:
            let retry = self[.retryAfterMilliseconds].map { "; retry after \($0) ms" } ?? ""
            return "Rate limit\(space(self[.limit])) refused \(what)\(who)\(retry)"
        case .concurrencyLimitRefused:
            return "Concurrency limit\(space(self[.limit])) refused \(what)\(who)"
        case .budgetRefused:
            let scope = [self[.budgetScope], self[.budgetWindow]].compactMap { $0 }.joined(separator: " ")
            let unit = self[.budgetUnit].map { " (\($0))" } ?? ""
            var used = phrase("used", self[.budgetUsed]) + phrase("of", self[.budgetLimit])
            if let requested = self[.budgetRequested] { used += (used.isEmpty ? " " : ", ") + "needs \(requested)" }
            return "Budget\(space(scope))\(unit) refused \(what)\(who)\(forTenant)\(used.isEmpty ? "" : ":" + used)"
        case .upstreamAttempt:
            let result = status.map { "status \($0)" } ?? (errorClass == nil ? "finished" : "failed")
            return "Attempt\(space(attempt.map(String.init))) to \(step): \(result)\(paren(nil, errorClass))"
                + "\(phrase("in", self[.latencyMilliseconds], "ms"))"
        case .retry:
            return "Retrying \(step)\(phrase("after attempt", attempt.map(String.init)))\(paren(nil, errorClass))"
                + "\(phrase("in", self[.delayMilliseconds], "ms"))"
        case .fallback:
            return "Falling back\(phrase("from", self[.fallbackFrom]))\(phrase("to", self[.fallbackTo]))"
                + "\(colon(reason ?? errorClass))"
        case .breakerTransition:
            let name = self[.breaker] ?? provider ?? "?"
            return "Circuit breaker \(name): \(self[.breakerFrom] ?? "?") -> \(self[.breakerTo] ?? "?")"
        case .failureRateAlert:
            return "Failure rate\(phrase("of", provider)) is \(self[.failureRate] ?? "?")"
                + "\(self[.failureRateThreshold].map { ", over the threshold \($0)" } ?? "")"
                + "\(paren(nil, self[.sampleCount].map { "\($0) calls" }))"
        case .callCompleted:
            let attempts = self[.attempts].map { " after \($0) attempt\($0 == "1" ? "" : "s")" } ?? ""
            return "Call finished \(outcome?.rawValue ?? "?")\(attempts)"
                + "\(phrase("in", self[.latencyMilliseconds], "ms"))\(provider == nil ? "" : " (\(step))")"
        case .actionRequested:
            return "Action \(what) requested\(who)\(forTenant)\(phrase("with arguments", self[.argumentHash]))"
        case .actionAllowed:
            return "Action \(what) allowed\(who)\(forTenant)\(paren("rule", rule))"
                + "\(phrase("as", self[.decisionID]))"
        case .actionDenied:
            return "Action \(what) denied\(who)\(forTenant)\(paren("rule", rule))\(colon(reason))"
        case .approvalReused:
            return "Approval reused for \(what)\(who)\(forTenant)\(phrase("with arguments", self[.argumentHash]))"
        case .toolCallBlocked:
            return "Tool \(self[.toolName] ?? "?") blocked\(who)\(forTenant)\(paren("rule", rule))\(colon(reason))"
        case .clusterDegraded:
            return "Cluster store \(self[.clusterStore] ?? "?") unreachable: cluster limits run on local shares"
                + "\(phrase("of", self[.fallbackShare]))\(colon(reason))"
        case .clusterRestored:
            return "Cluster store \(self[.clusterStore] ?? "?") reachable again after "
                + "\(self[.degradedMilliseconds] ?? "?") ms: cluster limits are shared again"
        case .auditLoss:
            return "Audit entries lost: \(self[.droppedCount] ?? "0") dropped (queue full), "
                + "\(self[.unwrittenCount] ?? "0") not taken by journald"
        }
    }

    private var routeStep: String {
        switch (provider, model) {
        case (let p?, let m?): "\(p)/\(m)"
        case (let p?, nil): p
        case (nil, let m?): m
        case (nil, nil): "upstream"
        }
    }

    /// `" label value unit"`, or "" when `value` is nil.
    private func phrase(_ label: String, _ value: String?, _ unit: String = "") -> String {
        guard let value else { return "" }
        return " \(label) \(value)\(unit.isEmpty ? "" : " " + unit)"
    }

    private func space(_ value: String?) -> String {
        value.map { " " + $0 } ?? ""
    }

    private func colon(_ value: String?) -> String {
        value.map { ": " + $0 } ?? ""
    }

    private func paren(_ label: String?, _ value: String?) -> String {
        guard let value else { return "" }
        return " (\(label.map { $0 + " " } ?? "")\(value))"
    }
}
