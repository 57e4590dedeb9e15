import BreakwaterWire
import Config
import CurlTransport
import Governance
import Logging
import NIOCore
import Providers
import Resilience
import Systemd

/// One call's walk along its route: each target in order, retries with backoff on transient failures, skipping
/// targets whose breaker is open, until an answer reaches the app or every target has failed.
///
/// Lives on the connection's event loop; upstream attempts report back to it there. Every attempt passes through
/// the same breaker, budget and planner path: the first is not special.
final class CallDriver {
    /// One attempt, for the final error and the logs.
    struct AttemptRecord {
        var target: String
        var what: String
    }

    let streamID: StreamID
    let requestID: String
    let chat: ChatRequest
    let stream: Bool
    let chain: [ResolvedTarget]
    let fallback: FallbackPolicy
    let deadline: Instant
    private let shared: DaemonContext
    private let eventLoop: any EventLoop
    private weak var connection: ConnectionHandler?

    private var targetIndex = 0
    private var retriesOnTarget = 0
    /// Re-attempts after a wait a rate-limiting provider asked for: pacing, not bounded by retry_count.
    private var pacedRetriesOnTarget = 0
    private var attemptCount = 0
    private var attempts: [AttemptRecord] = []
    private var current: UpstreamCall?
    private var currentIsProbe = false
    private var currentKey = 0
    /// Time spent waiting for a free key on the current target; bounded by max_retry_wait while another target
    /// could take the call, by the deadline otherwise.
    private var pacedOnTarget: Duration = .zero
    /// A key reserved for later (the call's place in the queue for the provider's rate limit), used when the
    /// call wakes instead of asking for a key again.
    private var queuedKey: (index: Int, tokens: Int)?
    private var reservedTokens = 0
    private var retryTimer: Scheduled<Void>?
    /// Bytes of this call reached the app: no retry or fallback from here on.
    private var committed = false
    private var finished = false
    /// The first upstream request went out: from here the call may have reached a provider.
    private(set) var startedUpstream = false
    private var lastFailure: (code: ErrorCode, status: Int?, provider: String?, retryAfter: Duration?)?
    /// What policy checks for this call; nil when no policy is in force.
    private let access: AccessRequest?
    /// The agent whose in-flight slot this call holds, released exactly once when it ends.
    private var admittedAgent: String?
    private var approvalID: String?
    private var approvalTimer: Scheduled<Void>?
    /// The budget hold of the attempt in flight.
    private var budgetHold: Reservation?
    /// Stamped on every audit event of this call.
    private let subject: AuditSubject
    private let startedAt = ContinuousClock.now

    init(streamID: StreamID, requestID: String, chat: ChatRequest, stream: Bool, chain: [ResolvedTarget],
         fallback: FallbackPolicy, deadline: Instant, shared: DaemonContext, eventLoop: any EventLoop,
         connection: ConnectionHandler, access: AccessRequest? = nil, subject: AuditSubject) {
        self.access = access
        self.subject = subject
        self.streamID = streamID
        self.requestID = requestID
        self.chat = chat
        self.stream = stream
        self.chain = chain
        self.fallback = fallback
        self.deadline = deadline
        self.shared = shared
        self.eventLoop = eventLoop
        self.connection = connection
    }

    func start() {
        tryNextTarget()
    }

    /// The gate: policy decides before the first attempt. Without a policy the call starts at once.
    func admit() {
        guard let governance = shared.governance, let access else { return start() }
        handle(governance.authorize(access), governance: governance, afterApproval: false)
    }

    private func handle(_ decision: Decision, governance: GovernanceRegistry, afterApproval: Bool) {
        guard !finished, let access else { return }
        let action = access.action ?? "the call"
        if case .requireApproval = decision {} else {
            shared.auditDecision(decision, subject, model: access.model)
        }
        switch decision {
        case .allow:
            admittedAgent = access.principal.agent
            start()
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
                rule: rule, approvers: approvers, timeout: timeout) { outcome in
                    loop.execute { bound.value.approvalDecided(outcome) }
                }
        } catch {
            return refuse(.internalError, "could not queue the approval: \(error.code.rawValue)")
        }
        let id = queued.id
        let remaining = max(.zero, queued.deadline - governance.clock.now())
        approvalID = id
        let ms = UInt32(clamping: remaining.nanoseconds / 1_000_000)
        connection?.write([CallNotice(kind: CallNotice.pendingApproval, approvalID: id,
                                      message: "\(access.action ?? "the call") needs an approval: "
                                          + "breakwater approve \(id)",
                                      timeoutMs: ms).frame(streamID: streamID)],
                          streamID: streamID, final: false)
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
        approvalTimer = eventLoop.scheduleTask(in: .nanoseconds(remaining.nanoseconds) + .milliseconds(5)) {
            governance.expireDue()
        }
    }

    fileprivate func approvalDecided(_ outcome: GovernanceRegistry.ApprovalOutcome) {
        guard !finished, let id = approvalID, let governance = shared.governance, var access else { return }
        approvalTimer?.cancel()
        approvalTimer = nil
        approvalID = nil
        governance.forget(id)
        let waited = ContinuousClock.now - startedAt
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

    /// Ends the call before any attempt, with `code`.
    private func refuse(_ code: ErrorCode, _ message: String, retryAfterMs: UInt32? = nil) {
        guard !finished else { return }
        end([ErrorMessage(code: code, message: message, retryAfterMs: retryAfterMs).frame(streamID: streamID)])
    }

    /// The call's last frames: frees its policy slot and hands them to the connection.
    private func end(_ frames: [Frame]) {
        releaseQueuedKey()
        finished = true
        releaseSlot()
        auditCompletion(frames)
        connection?.write(frames, streamID: streamID, final: true)
    }

    /// Settles the attempt's budget hold with the usage the provider reported, or frees it.
    private func settleBudget(usage: Providers.Usage?) {
        guard let hold = budgetHold else { return }
        budgetHold = nil
        shared.governance?.settleBudget(hold, promptTokens: usage?.promptTokens,
                                        completionTokens: usage?.completionTokens)
    }

    private func auditCompletion(_ frames: [Frame]) {
        let last = frames.last
        let trailers = last?.type == .trailers ? try? CallTrailers(frame: last!) : nil
        let error = last?.type == .error ? try? ErrorMessage(frame: last!) : nil
        let elapsed = ContinuousClock.now - startedAt
        shared.audit(.callCompleted, subject) { e in
            e.outcome = trailers?.succeeded == true ? .ok : .error
            e.set(.attempts, attemptCount)
            e.errorClass = error?.code.name ?? trailers?.error?.name
            if let t = trailers {
                if let p = t.promptTokens { e.set(.inputTokens, p) }
                if let c = t.completionTokens { e.set(.outputTokens, c) }
            }
            e.set(.latencyMilliseconds, elapsed.nanoseconds / 1_000_000)
        }
    }

    private func releaseSlot() {
        if let agent = admittedAgent {
            admittedAgent = nil
            shared.governance?.release(agent: agent)
        }
    }

    /// CANCEL or a closed connection: stop the attempt in flight and any sleeping retry, at once.
    func cancel() {
        guard !finished else { return }
        stop(reason: nil, withdrawApproval: true)
    }

    /// At a graceful stop (GOAWAY): a call whose first upstream request has not gone out goes back to the client
    /// with NOT_ACCEPTED — it never started, so the shim sends it to the next daemon — instead of holding the drain
    /// open while it waits for an approval, a rate-limit slot or a backoff. An approval it waits for stays in the
    /// state store, for the next daemon and the same call sent again. False: the call started; it finishes here.
    func handBack() -> Bool {
        guard !finished, !startedUpstream else { return false }
        stop(reason: "handed back at shutdown before it started", withdrawApproval: false)
        connection?.write([ErrorMessage(code: .notAccepted, message: "daemon is restarting; the call had not "
                              + "started, send it again").frame(streamID: streamID)],
                          streamID: streamID, final: true)
        return true
    }

    private func stop(reason: String?, withdrawApproval: Bool) {
        finished = true
        releaseSlot()
        shared.audit(.callCompleted, subject) { e in
            e.outcome = .cancelled
            e.set(.attempts, attemptCount)
            if let reason { e.reason = reason }
        }
        if let id = approvalID {
            if withdrawApproval { shared.governance?.withdraw(id) } else { shared.governance?.detach(id) }
            approvalTimer?.cancel()
            approvalID = nil
        }
        retryTimer?.cancel()
        retryTimer = nil
        if let current {
            // No transfer id yet: cancelled while STARTED was being written, before the request went out.
            if let id = current.transferID { shared.engine.cancel(id) }
            giveBack(current.target, probe: currentIsProbe, key: currentKey, tokens: reservedTokens)
        }
        releaseQueuedKey()
        settleBudget(usage: nil)
        current = nil
    }

    /// An attempt that took a probe slot and a key reservation but sent nothing (or was stopped): both go back.
    private func giveBack(_ target: ResolvedTarget, probe: Bool, key: Int, tokens: Int) {
        if probe { shared.resilience.releaseProbe(target) }
        shared.resilience.settleKey(target.provider, index: key, reserved: tokens, actual: 0, info: RateLimitInfo(),
                                    rateLimited: false)
    }

    private enum Begin { case started, scheduled, skipped }

    /// Starts an attempt at the current target or, when it is skipped, at the next ones; fails when none is left.
    private func tryNextTarget() {
        while targetIndex < chain.count {
            let target = chain[targetIndex]
            if begin(target) != .skipped { return }
            auditFallback(from: target, reason: attempts.last?.what ?? "skipped", errorClass: nil)
            advanceTarget()
        }
        fail()
    }

    /// A move along the chain, audited: after a failure, or because a target was skipped (breaker open, policy,
    /// budget, rate limits).
    private func auditFallback(from target: ResolvedTarget, reason: String, errorClass: String?) {
        let next = targetIndex + 1 < chain.count ? chain[targetIndex + 1].label : nil
        shared.audit(.fallback, subject) { e in
            e[.fallbackFrom] = target.label
            e[.fallbackTo] = next
            e.reason = reason
            e.errorClass = errorClass
        }
    }

    /// A place in a key's queue the call will not use (it moves on, ends or is stopped) goes back.
    private func releaseQueuedKey() {
        guard let queued = queuedKey else { return }
        queuedKey = nil
        if targetIndex < chain.count {
            giveBack(chain[targetIndex], probe: false, key: queued.index, tokens: queued.tokens)
        }
    }

    private func advanceTarget() {
        releaseQueuedKey()
        targetIndex += 1
        retriesOnTarget = 0
        pacedRetriesOnTarget = 0
        pacedOnTarget = .zero
    }

    /// The tokens an attempt reserves against the key's TPM limit: the most the answer may use plus the prompt.
    private var tokenEstimate: Int { (chat.maxTokens ?? 1024) + chat.bytes.count / 4 }

    /// Whether a later target of the chain could take the call now: only then is moving on better than waiting.
    private func laterTargetReady() -> Bool {
        chain[(targetIndex + 1)...].contains { shared.resilience.isReady($0, tokens: tokenEstimate) }
    }

    /// After a retry wait or a pacing wait: try the same target again, or move on if it is now skipped.
    private func resume(_ target: ResolvedTarget) {
        retryTimer = nil
        guard !finished else { return }
        if begin(target) == .skipped {
            auditFallback(from: target, reason: attempts.last?.what ?? "skipped", errorClass: nil)
            advanceTarget()
            tryNextTarget()
        }
    }

    private func schedule(after wait: Duration, _ target: ResolvedTarget) {
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        retryTimer = eventLoop.scheduleTask(in: .nanoseconds(wait.nanoseconds)) { bound.value.resume(target) }
    }

    /// One attempt at `target`, through the same gates every time: deadline, circuit breaker, key and rate limits.
    private func begin(_ target: ResolvedTarget) -> Begin {
        guard !finished else { return .started }
        let now = shared.resilience.clock.now()
        guard now < deadline else {
            attempts.append(AttemptRecord(target: target.label, what: "not tried: the call's deadline passed"))
            lastFailure = (.timeout, nil, target.provider.name, nil)
            releaseQueuedKey()
            targetIndex = chain.count
            return .skipped
        }
        if targetIndex > 0, let governance = shared.governance, var pass = access {
            // Every fallback target passes the same policy check as the first (its model may be out of scope).
            pass.pass = .fallback
            pass.model = target.model
            if case .deny(let rule, _, let reason) = governance.authorize(pass) {
                attempts.append(AttemptRecord(target: target.label, what: "skipped by policy: \(reason) (\(rule))"))
                lastFailure = lastFailure ?? (.forbidden, nil, target.provider.name, nil)
                return .skipped
            }
        }
        var probe = false
        switch shared.resilience.acquire(target) {
        case .rejected:
            attempts.append(AttemptRecord(target: target.label, what: "skipped: circuit breaker open"))
            lastFailure = lastFailure ?? (.upstreamUnavailable, nil, target.provider.name, nil)
            return .skipped
        case .probe:
            probe = true
        case .allowed:
            break
        }
        guard !target.provider.apiKeys.isEmpty else {
            attempts.append(AttemptRecord(target: target.label, what: "no API key configured"))
            lastFailure = (.noCredential, nil, target.provider.name, nil)
            if probe { shared.resilience.releaseProbe(target) }
            return .skipped
        }
        let tokens = tokenEstimate
        let keyIndex: Int
        if let queued = queuedKey {
            queuedKey = nil
            keyIndex = queued.index
        } else {
            switch shared.resilience.acquireKey(target.provider, tokens: tokens) {
            case .key(let index, _):
                keyIndex = index
            case .wait(let until):
                if probe { shared.resilience.releaseProbe(target) }
                return queueForKey(target, wait: until - now, tokens: tokens, now: now)
            }
        }
        if let governance = shared.governance, let access {
            switch governance.reserveBudget(agent: access.principal.agent, tenant: access.tenant, model: target.model,
                                            maxTokens: chat.maxTokens, promptTokensEstimate: chat.bytes.count / 4) {
            case .reserved(let hold):
                budgetHold = hold
            case let refusal:
                shared.auditDecision(refusal.decision, subject, model: target.model)
                attempts.append(AttemptRecord(target: target.label, what: "refused by budget: \(refusal)"))
                lastFailure = (.budgetExceeded, nil, target.provider.name, nil)
                giveBack(target, probe: probe, key: keyIndex, tokens: tokens)
                return .skipped
            }
        }
        // A pool built for a reloaded config may count more keys than this call's config had.
        let apiKey = target.provider.apiKeys[keyIndex % target.provider.apiKeys.count]
        let http: ProviderHTTPRequest
        do {
            http = try target.provider.adapter.makeRequest(chat, model: target.model, apiKey: apiKey.value)
        } catch {
            settleBudget(usage: nil)
            attempts.append(AttemptRecord(target: target.label, what: "request not translatable: \(error.message)"))
            lastFailure = (.badRequest, nil, target.provider.name, nil)
            giveBack(target, probe: probe, key: keyIndex, tokens: tokens)
            return .skipped
        }
        if retriesOnTarget == 0 && pacedRetriesOnTarget == 0 { shared.resilience.recordFirstAttempt(target.provider) }
        attemptCount += 1
        currentIsProbe = probe
        currentKey = keyIndex
        reservedTokens = tokens
        let call = UpstreamCall(
            streamID: streamID, requestID: requestID, target: target, stream: stream, attemptNumber: attemptCount,
            maxFramePayload: Int(shared.limits.maxFramePayload),
            driver: NIOLoopBound(self, eventLoop: eventLoop), eventLoop: eventLoop)
        current = call
        let t = target.provider.config.timeouts
        let remaining = deadline - now
        let request = HTTPRequest(
            method: "POST", url: http.url, headers: http.headers.map { HTTPHeader(name: $0.name, value: $0.value) },
            body: http.body,
            timeouts: TransferTimeouts(connect: min(t.connect, remaining), firstByte: t.firstByte, idle: t.idle,
                                       total: min(t.total, remaining)),
            httpVersion: target.provider.httpVersion, caFile: target.provider.config.caFile
        )
        let send = { [self] in
            guard !finished, current === call else { return }  // cancelled while STARTED was being written
            startedUpstream = true
            call.transferID = shared.engine.start(request, delegate: call)
        }
        if attemptCount == 1, let connection {
            connection.announceStarted(streamID, then: send)
        } else {
            send()
        }
        return .started
    }

    /// Every key of `target` is busy for `wait`. With another target ready to take the call, a wait longer than
    /// max_retry_wait moves on; otherwise the call takes its place in the queue for the key, within its deadline
    /// — or fails with RATE_LIMITED when even the deadline comes first.
    private func queueForKey(_ target: ResolvedTarget, wait: Duration, tokens: Int, now: Instant) -> Begin {
        let maxWait = target.provider.retry.maxRetryWait
        if pacedOnTarget + wait > maxWait, laterTargetReady() {
            attempts.append(AttemptRecord(target: target.label, what: "rate limits: every key is busy for "
                                              + RetryPlanner.format(wait) + ", longer than max_retry_wait"))
            lastFailure = (.rateLimited, nil, target.provider.name, wait)
            return .skipped
        }
        guard let (index, at) = shared.resilience.reserveKey(target.provider, tokens: tokens,
                                                             notAfter: deadline - .milliseconds(1)) else {
            attempts.append(AttemptRecord(target: target.label, what: "rate limits: every key is busy for "
                                              + RetryPlanner.format(wait) + ", past the call's deadline"))
            lastFailure = (.rateLimited, nil, target.provider.name, wait)
            return .skipped
        }
        queuedKey = (index, tokens)
        pacedOnTarget += at - now
        schedule(after: at - now, target)  // pace under the provider's limits
        return .scheduled
    }

    /// Streamed frames of the attempt in flight: from here on, the call is committed to it.
    func attemptProgress(_ frames: [Frame]) {
        guard !finished, current != nil else { return }
        committed = true
        connection?.write(frames, streamID: streamID, final: false)
    }

    func attemptFinished(_ result: AttemptResult) {
        guard !finished, let call = current else { return }
        current = nil
        let target = call.target
        let classification = target.provider.classifier.classify(result.outcome)
        let counted: Bool
        if classification?.kind == .configuration {
            // Nothing reached the provider: its breaker, retry budget and keys hear nothing of this attempt.
            counted = false
            shared.resilience.forgetFirstAttempt(target.provider, retriesOnTarget == 0 && pacedRetriesOnTarget == 0)
            giveBack(target, probe: currentIsProbe, key: currentKey, tokens: reservedTokens)
        } else {
            counted = shared.resilience.record(target, failed: classification?.kind.countsAgainstBreaker ?? false,
                                               duration: result.duration, isProbe: currentIsProbe,
                                               endsCall: classification == nil && !currentIsProbe)
            shared.resilience.settleKey(target.provider, index: currentKey, reserved: reservedTokens,
                                        actual: result.usage?.totalTokens, info: result.rateLimit,
                                        rateLimited: classification?.kind == .rateLimited)
        }
        settleBudget(usage: result.usage)
        shared.audit(.upstreamAttempt, subject) { e in
            e.provider = target.provider.name
            e.model = target.model
            e.set(.attempt, attemptCount)
            if let status = result.upstreamStatus { e.set(.status, status) }
            e.set(.latencyMilliseconds, result.duration.nanoseconds / 1_000_000)
            e.outcome = classification == nil ? .ok : .error
            e.errorClass = classification.map { "\($0.kind)" }
            if classification != nil { e.reason = result.reason }
        }
        guard let classification else { return end(result.frames) }
        attempts.append(AttemptRecord(target: target.label, what: result.reason))
        lastFailure = (Self.code(for: classification.kind, result.outcome), result.upstreamStatus,
                       target.provider.name, result.rateLimit.suggestedWait)
        if classification.kind == .configuration {
            // Not the provider's fault: nothing is retried or counted against it; the admin has something to fix.
            shared.logger.error("configuration error: the request to a provider could not be made", metadata: [
                "request_id": "\(requestID)", "target": "\(target.label)", "reason": "\(result.reason)",
            ])
        } else {
            shared.logger.notice("upstream attempt failed", metadata: [
                "request_id": "\(requestID)", "target": "\(target.label)", "attempt": "\(attemptCount)",
                "failure": "\(classification.kind)", "reason": "\(result.reason)",
            ])
        }
        if committed {
            // Bytes already reached the app: no transparent retry, an explicit error instead.
            return end(result.frames)
        }
        let hasNextTarget = targetIndex + 1 < chain.count
        var input = RetryPlanner.Input(
            classification: classification, retriesDone: retriesOnTarget, hasNextTarget: hasNextTarget,
            nextTargetReady: hasNextTarget && laterTargetReady(), now: shared.resilience.clock.now(),
            deadline: deadline, providerWait: result.rateLimit.suggestedWait, budgetAllows: true,
            unit: Double.random(in: 0..<1))
        var step = RetryPlanner.decide(input, retry: target.provider.retry, fallback: fallback)
        // The host-wide budget is asked only for a retry that would really happen, so it counts real retries.
        if case .retry = step, !shared.resilience.tryRetry(target.provider) {
            input.budgetAllows = false
            step = RetryPlanner.decide(input, retry: target.provider.retry, fallback: fallback)
        }
        if case .retry = step {} else if counted, !currentIsProbe {
            shared.resilience.recordCallOutcome(target, failed: true)
        }
        switch step {
        case .retry(let wait):
            if RetryPlanner.isPaced(input, retry: target.provider.retry) {
                pacedRetriesOnTarget += 1
            } else {
                retriesOnTarget += 1
            }
            shared.audit(.retry, subject) { e in
                e.provider = target.provider.name
                e.model = target.model
                e.set(.attempt, attemptCount)
                e.set(.delayMilliseconds, wait.nanoseconds / 1_000_000)
                e.errorClass = "\(classification.kind)"
            }
            schedule(after: wait, target)
        case .nextTarget(let reason):
            attempts[attempts.count - 1].what += "; moving on: " + reason
            auditFallback(from: target, reason: reason, errorClass: "\(classification.kind)")
            advanceTarget()
            tryNextTarget()
        case .fail(let reason):
            attempts[attempts.count - 1].what += "; " + reason
            fail()
        }
    }

    /// Every target failed (or was skipped): one error that lists every attempt.
    private func fail() {
        guard !finished else { return }
        let failure = lastFailure ?? (.upstreamUnavailable, nil, nil, nil)
        let list = attempts.enumerated().map { "\($0.offset + 1). \($0.element.target): \($0.element.what)" }
        let message = "all \(chain.count) target(s) of the route failed: " + list.joined(separator: " | ")
        let status = failure.status.flatMap { (200..<300).contains($0) ? nil : UInt16(clamping: $0) }
        let retryAfterMs = failure.code == .rateLimited
            ? failure.retryAfter.map { UInt32(clamping: max(1, $0.nanoseconds / 1_000_000)) } : nil
        end([ErrorMessage(code: failure.code, message: message, upstreamStatus: status, provider: failure.provider,
                          retryAfterMs: retryAfterMs).frame(streamID: streamID)])
    }

    /// The code the app gets when this failure is the call's last: a provider's rate limit is RATE_LIMITED (with
    /// the wait), never a raw 429; a local configuration problem is CONFIGURATION_ERROR.
    static func code(for kind: FailureKind, _ outcome: AttemptOutcome) -> ErrorCode {
        switch kind {
        case .rateLimited: return .rateLimited
        case .configuration: return .configurationError
        default: break
        }
        return switch outcome {
        case .success: .internalError
        case .status: .upstreamError
        case .streamError: .upstreamError
        case .transport(.timeout): .timeout
        case .transport(.malformedResponse): .upstreamMalformed
        case .transport: .upstreamUnavailable
        }
    }
}

extension ResolvedTarget {
    var label: String { provider.name + "/" + model }
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
