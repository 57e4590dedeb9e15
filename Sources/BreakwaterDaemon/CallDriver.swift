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
/// Lives on the connection's event loop; upstream attempts report back to it there. The decisions are made by
/// pure types — the policy's `Gate` (in `CallAdmission.swift`), `CircuitBreaker`, `KeyPool`, `RetryPlanner` —
/// and this class is the shell that carries them out: audit events, frames, the engine, timers. What the call
/// holds at each moment is its `phase`; the walk's progress (target, retries, attempts so far) is `walk`.
final class CallDriver {
    /// Where the call is, each phase with exactly what is valid in it. Everything a phase holds (an approval, an
    /// attempt's reservations, a timer) is released when the call leaves it, by `stopHolding` or by the transition
    /// that consumes it.
    enum Phase {
        /// Before the policy's gate decided.
        case admitting
        /// The gate asked for an approval: the call waits for a person, or for `timer` to expire it at `deadline`.
        case awaitingApproval(id: String, deadline: Instant, timer: Scheduled<Void>)
        /// An attempt's request is in flight (or STARTED is being written first, while its `transfer` is nil).
        case attempting(Attempt)
        /// Bytes of the attempt reached the app: no retry or fallback from here on.
        case streaming(Attempt)
        /// Between attempts: a backoff, or a wait for a key of the target's provider, whose place in the key's
        /// queue `place` holds.
        case waiting(timer: Scheduled<Void>, target: ResolvedTarget, place: AttemptHolds?)
        /// The attempt's holds are taken but for the cluster store's answer on its budgets (`budgetAnswered`),
        /// which comes within the store's timeout.
        case awaitingBudget(AttemptHolds)
        /// Only inside one event-loop job: the last phase was left (its holds settled) and the next is being
        /// chosen — a retry wait, the next attempt, or the end.
        case deciding
        case finished
    }

    /// One step of the walk — a target tried or skipped — for the final error (readable and as `AttemptReport`).
    struct AttemptRecord {
        var target: ResolvedTarget
        /// `AttemptReport.outcome`: what happened.
        var outcome: String
        var what: String
        var failure: FailureKind? = nil
        var status: Int? = nil
        var wait: Duration? = nil
        var then: String? = nil
        var retryBudgetRefused = false

        var report: AttemptReport {
            AttemptReport(provider: target.provider.name, model: target.model, outcome: outcome,
                          failure: failure?.rawValue, upstreamStatus: status.map { UInt16(clamping: $0) },
                          waitMs: wait.map { UInt32(clamping: max(0, $0.nanoseconds / 1_000_000)) }, then: then,
                          retryBudgetRefused: retryBudgetRefused, message: what)
        }

        /// `AttemptReport.outcome` for an attempt whose request went out (or was to) and failed.
        static func outcome(of attempt: AttemptOutcome) -> String {
            switch attempt {
            case .success, .status: "error_status"
            case .streamError: "stream_error"
            case .transport(.timeout): "timed_out"
            case .transport(.connectFailed), .transport(.connectionReset): "unreachable"
            case .transport(.malformedResponse): "malformed"
            case .transport(.localConfiguration): "configuration"
            }
        }
    }

    /// The last failure seen: what the app is told when nothing answers.
    struct Failure {
        var code: ErrorCode
        var status: Int? = nil
        var provider: String?
        var retryAfter: Duration? = nil
    }

    /// The walk along the chain so far; valid in every phase.
    struct Walk {
        var targetIndex = 0
        var retriesOnTarget = 0
        /// Re-attempts after a wait a rate-limiting provider asked for: pacing, not bounded by retry_count.
        var pacedRetriesOnTarget = 0
        /// Time spent waiting for a free key on the current target; bounded by max_retry_wait while another target
        /// could take the call, by the deadline otherwise.
        var pacedOnTarget: Duration = .zero
        var attemptCount = 0
        var records: [AttemptRecord] = []
        var lastFailure: Failure?

        var firstOnTarget: Bool { retriesOnTarget == 0 && pacedRetriesOnTarget == 0 }

        mutating func note(_ target: ResolvedTarget, _ outcome: String, _ what: String, wait: Duration? = nil) {
            records.append(AttemptRecord(target: target, outcome: outcome, what: what, wait: wait))
        }

        mutating func advance() {
            targetIndex += 1
            retriesOnTarget = 0
            pacedRetriesOnTarget = 0
            pacedOnTarget = .zero
        }
    }

    /// What the call is for: an LLM request to walk along its route, or an action to authorize (AUTHORIZE), which
    /// goes through the same gate and approvals and ends there, with no upstream attempt.
    enum Work {
        case chat(ChatRequest)
        case action(AuthorizedAction)
    }

    let streamID: StreamID
    let requestID: String
    let work: Work
    /// The LLM request: only attempts read it, and an action never makes one (`admitted` ends it first).
    private var chat: ChatRequest {
        guard case .chat(let chat) = work else { preconditionFailure("an action has no upstream attempt") }
        return chat
    }
    /// The rule of the gate's last decision on the call (for an action's answer and audit).
    var decisionRule: String?
    /// The approval that let the call through (granted for it, or reused), for an action's answer.
    var approvalUsed: String?
    let stream: Bool
    let chain: [ResolvedTarget]
    let fallback: FallbackPolicy
    let deadline: Instant
    let shared: DaemonContext
    let eventLoop: any EventLoop
    private(set) weak var connection: (any CallSink)?
    /// What policy checks for this call; nil when no policy is in force.
    let access: AccessRequest?
    /// Stamped on every audit event of this call.
    let subject: AuditSubject
    let startedAt: Instant

    private(set) var phase = Phase.admitting
    private var walk = Walk()
    /// The first upstream request went out: from here the call may have reached a provider.
    private(set) var startedUpstream = false
    /// The agent whose in-flight slot this call holds (the gate admitted it), released when the call ends.
    private var admittedAgent: String?
    /// Whether the app is taking the answer (credit, its connection's room); each attempt reads it.
    let flow: ReaderFlow

    init(streamID: StreamID, requestID: String, work: Work, stream: Bool, chain: [ResolvedTarget],
         fallback: FallbackPolicy, deadline: Instant, shared: DaemonContext, eventLoop: any EventLoop,
         connection: any CallSink, flow: ReaderFlow, access: AccessRequest? = nil, subject: AuditSubject) {
        self.flow = flow
        self.access = access
        self.subject = subject
        self.streamID = streamID
        self.requestID = requestID
        self.work = work
        self.stream = stream
        self.chain = chain
        self.fallback = fallback
        self.deadline = deadline
        self.shared = shared
        self.eventLoop = eventLoop
        self.connection = connection
        self.startedAt = shared.resilience.clock.now()
    }

    var isFinished: Bool {
        if case .finished = phase { true } else { false }
    }

    // MARK: Transitions used by admission

    /// The gate let the call through (`agent`'s in-flight slot taken, when a policy is in force): the first attempt.
    func admitted(agent: String?) {
        guard case .admitting = phase else { return }
        admittedAgent = agent
        if case .action(let action) = work { return allow(action) }
        tryNextTarget()
    }

    /// An action passed the gate: the app may execute it. The answer is RESPONSE + one DATA frame with the
    /// decision (an `ActionDecision` field list) + TRAILERS.
    private func allow(_ action: AuthorizedAction) {
        var rng = SystemRandomNumberGenerator()
        let decisionID = "dec-" + String(rng.next() as UInt64, radix: 36)
        let rule = decisionRule ?? "no_policy"
        let body = ActionDecision(decisionID: decisionID, rule: rule, argumentHash: action.argumentHash,
                                  approvalID: approvalUsed).payload
        shared.audit(.actionAllowed, subject) { e in
            e.rule = rule
            e[.argumentHash] = action.argumentHash
            e[.decisionID] = decisionID
            e[.approvalID] = approvalUsed
        }
        finish(.answered(nil), [
            CallResponse(status: 200, provider: "breakwaterd", model: "authorize", attempts: 0, requestID: requestID)
                .frame(streamID: streamID),
            Frame.data(streamID: streamID, body),
            CallTrailers().frame(streamID: streamID),
        ])
    }

    func awaitApproval(id: String, deadline: Instant, timer: Scheduled<Void>) {
        guard case .admitting = phase else { return timer.cancel() }
        phase = .awaitingApproval(id: id, deadline: deadline, timer: timer)
    }

    /// The approval the call waits for was decided: back to admission, which asks the gate again.
    func approvalSettled() {
        guard case .awaitingApproval(_, _, let timer) = phase else { return }
        timer.cancel()
        phase = .admitting
    }

    /// Ends the call before any attempt, with `code`.
    func refuse(_ code: ErrorCode, _ message: String, retryAfterMs: UInt32? = nil) {
        guard !isFinished else { return }
        stopHolding(withdrawApproval: true)
        let isAction = if case .action = work { true } else { false }
        finish(.failed(code),
               [ErrorMessage(code: code, message: message, retryAfterMs: retryAfterMs).frame(streamID: streamID)],
               reason: isAction ? message : nil)
    }

    // MARK: Ending

    /// The call's last frames and outcome: frees its policy slot, audits, and hands both to the connection.
    private func finish(_ outcome: CallOutcome, _ frames: [Frame], reason: String? = nil) {
        phase = .finished
        flow.end()
        if let agent = admittedAgent {
            admittedAgent = nil
            shared.governance?.release(agent: agent)
        }
        if case .action(let action) = work {
            // An action's end is its decision: allowed (audited by `allow`), or refused here.
            if case .failed(let code) = outcome {
                shared.audit(.actionDenied, subject) { e in
                    e.rule = decisionRule
                    e.reason = reason ?? code.name
                    e[.argumentHash] = action.argumentHash
                }
            }
            connection?.callEnded(streamID, frames: frames, outcome: outcome)
            return
        }
        let elapsed = shared.resilience.clock.now() - startedAt
        let attempts = walk.attemptCount
        shared.metrics.callEnded(route: subject.route, outcome: outcome)
        shared.metrics.agentCallEnded(subject.agent, outcome: outcome)
        shared.audit(.callCompleted, subject) { e in
            e.set(.attempts, attempts)
            switch outcome {
            case .answered(let usage):
                e.outcome = .ok
                if let p = usage?.promptTokens { e.set(.inputTokens, p) }
                if let c = usage?.completionTokens { e.set(.outputTokens, c) }
                e.set(.latencyMilliseconds, elapsed.nanoseconds / 1_000_000)
            case .failed(let code):
                e.outcome = .error
                e.errorClass = code.name
                e.set(.latencyMilliseconds, elapsed.nanoseconds / 1_000_000)
            case .cancelled, .handedBack:
                e.outcome = .cancelled
            }
            if let reason { e.reason = reason }
        }
        connection?.callEnded(streamID, frames: frames, outcome: outcome)
    }

    /// The call is ending early (refused, cancelled, handed back): releases what its phase held — an approval
    /// (withdrawn, or only detached from this daemon at a graceful stop), a timer, an attempt's transfer and
    /// reservations, a place in a key's queue — and leaves it `.finished`.
    private func stopHolding(withdrawApproval: Bool) {
        let left = phase
        phase = .finished
        switch left {
        case .admitting, .deciding, .finished:
            break
        case .awaitingApproval(let id, _, let timer):
            timer.cancel()
            if withdrawApproval { shared.governance?.withdraw(id) } else { shared.governance?.detach(id) }
        case .attempting(let attempt), .streaming(let attempt):
            // No transfer yet: stopped while STARTED was being written, before the request went out.
            if let transfer = attempt.transfer { shared.engine.cancel(transfer) }
            attempt.holds.giveBack(to: shared)
        case .waiting(let timer, _, let place):
            timer.cancel()
            place?.giveBack(to: shared)
        case .awaitingBudget(let holds):
            holds.giveBack(to: shared)
        }
    }

    /// CANCEL or a closed connection: stop the attempt in flight and any sleeping retry, at once. `reply` is what
    /// the app is told (nothing when the connection is gone).
    func cancel(reply: [Frame]) {
        guard !isFinished else { return }
        stopHolding(withdrawApproval: true)
        finish(.cancelled, reply)
    }

    /// At a graceful stop (GOAWAY): a call whose first upstream request has not gone out goes back to the client
    /// with NOT_ACCEPTED — it never started, so the shim sends it to the next daemon — instead of holding the drain
    /// open while it waits for an approval, a rate-limit slot or a backoff. An approval it waits for stays in the
    /// state store, for the next daemon and the same call sent again. False: the call started; it finishes here.
    func handBack() -> Bool {
        guard !isFinished, !startedUpstream else { return false }
        stopHolding(withdrawApproval: false)
        finish(.handedBack, [ErrorMessage(code: .notAccepted, message: "daemon is restarting; the call had not "
                                + "started, send it again").frame(streamID: streamID)],
               reason: "handed back at shutdown before it started")
        return true
    }

    // MARK: The walk

    private enum Begin { case started, scheduled, skipped }

    /// Starts an attempt at the current target or, when it is skipped, at the next ones; fails when none is left.
    private func tryNextTarget() {
        while walk.targetIndex < chain.count {
            let target = chain[walk.targetIndex]
            if begin(target, place: nil) != .skipped { return }
            moveOn(from: target, reason: walk.records.last?.what ?? "skipped", errorClass: nil)
        }
        fail()
    }

    /// A move along the chain, audited: after a failure, or because a target was skipped (breaker open, policy,
    /// budget, rate limits).
    private func moveOn(from target: ResolvedTarget, reason: String, errorClass: String?) {
        let next = walk.targetIndex + 1 < chain.count ? chain[walk.targetIndex + 1].label : nil
        if let last = walk.records.indices.last, walk.records[last].then == nil {
            walk.records[last].then = next == nil ? "gave_up" : "moved_on"
        }
        if next != nil { shared.metrics.movedOn(route: subject.route, from: target) }
        shared.audit(.fallback, subject) { e in
            e[.fallbackFrom] = target.label
            e[.fallbackTo] = next
            e.reason = reason
            e.errorClass = errorClass
        }
        walk.advance()
    }

    /// The tokens an attempt reserves against the key's TPM limit: the most the answer may use plus the prompt.
    private var tokenEstimate: Int { (chat.maxTokens ?? 1024) + chat.bytes.count / 4 }

    /// Whether a later target of the chain could take the call now: only then is moving on better than waiting.
    private func laterTargetReady() -> Bool {
        chain[(walk.targetIndex + 1)...].contains { shared.resilience.isReady($0, tokens: tokenEstimate) }
    }

    /// Waits `wait`, then tries `target` again (or moves on if it is then skipped).
    private func wait(_ wait: Duration, then target: ResolvedTarget, place: AttemptHolds?) {
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let timer = eventLoop.scheduleTask(in: .nanoseconds(wait.nanoseconds)) { bound.value.resume() }
        phase = .waiting(timer: timer, target: target, place: place)
    }

    /// After a retry wait or a pacing wait: try the same target again, or move on if it is now skipped.
    private func resume() {
        guard case .waiting(_, let target, let place) = phase else { return }
        phase = .deciding  // the place moves to the attempt `begin` makes
        if begin(target, place: place) == .skipped {
            moveOn(from: target, reason: walk.records.last?.what ?? "skipped", errorClass: nil)
            tryNextTarget()
        }
    }

    /// One attempt at `target`, through the same gates every time: deadline, policy, circuit breaker, key and rate
    /// limits, budget. Whatever it takes it holds in one `AttemptHolds`, given back whole when the target is skipped.
    private func begin(_ target: ResolvedTarget, place: AttemptHolds?) -> Begin {
        let now = shared.resilience.clock.now()
        var holds = place ?? AttemptHolds(target: target)
        func skip(_ outcome: String, _ what: String, _ failure: Failure?, keepEarlier: Bool = false) -> Begin {
            skipTarget(holds, outcome, what, failure, keepEarlier: keepEarlier)
        }
        guard now < deadline else {
            walk.targetIndex = chain.count - 1  // nothing after this one is tried either
            return skip("deadline", "not tried: the call's deadline passed",
                        Failure(code: .timeout, provider: target.provider.name))
        }
        if walk.targetIndex > 0, let governance = shared.governance, var pass = access {
            // Every fallback target passes the same policy check as the first (its model may be out of scope).
            pass.pass = .fallback
            pass.model = target.model
            if case .deny(let rule, _, let reason) = governance.authorize(pass) {
                return skip("policy", "skipped by policy: \(reason) (\(rule))",
                            Failure(code: .forbidden, provider: target.provider.name), keepEarlier: true)
            }
        }
        switch shared.resilience.acquire(target) {
        case .rejected:
            return skip("breaker_open", "skipped: circuit breaker open",
                        Failure(code: .upstreamUnavailable, provider: target.provider.name), keepEarlier: true)
        case .probe:
            holds.holdProbe()
        case .allowed:
            break
        }
        guard !target.provider.apiKeys.isEmpty else {
            return skip("no_credential", "no API key configured",
                        Failure(code: .noCredential, provider: target.provider.name))
        }
        let tokens = tokenEstimate
        if holds.key == nil {
            switch shared.resilience.acquireKey(target.provider, tokens: tokens) {
            case .key(let index, _):
                holds.hold(key: index, tokens: tokens)
            case .wait(let until):
                holds.giveBack(to: shared)
                return queueForKey(target, wait: until - now, tokens: tokens, now: now)
            }
        }
        if let governance = shared.governance, let access {
            let step = governance.reserveBudget(agent: access.principal.agent, tenant: access.tenant,
                                                model: target.model, maxTokens: chat.maxTokens,
                                                promptTokensEstimate: chat.bytes.count / 4)
            switch step {
            case .decided(.reserved(let hold)):
                holds.hold(budget: hold)
            case .decided(let refusal):
                return refusedByBudget(refusal, holds)
            case .pending(let hold):
                holds.hold(budget: hold)
                phase = .awaitingBudget(holds)
                let bound = NIOLoopBound(self, eventLoop: eventLoop)
                let loop = eventLoop
                governance.holdInStore(hold, lifetime: deadline - now + .seconds(60)) { decision in
                    loop.execute { bound.value.budgetAnswered(decision) }
                }
                return .scheduled
            }
        }
        return startAttempt(holds, now: now)
    }

    /// The cluster store answered for the budgets of the attempt that waits on it: the attempt goes out, or the
    /// target is skipped as refused by budget (the registry has given the budget holds back).
    private func budgetAnswered(_ decision: BudgetDecision) {
        guard case .awaitingBudget(var holds) = phase else { return }
        phase = .deciding
        let target = holds.target
        let started: Begin
        if case .reserved(let hold) = decision {
            holds.hold(budget: hold)
            started = startAttempt(holds, now: shared.resilience.clock.now())
        } else {
            holds.dropBudget()
            started = refusedByBudget(decision, holds)
        }
        if started == .skipped {
            moveOn(from: target, reason: walk.records.last?.what ?? "skipped", errorClass: nil)
            tryNextTarget()
        }
    }

    /// `holds.target` is not tried this time: whatever the attempt took goes back, and the walk notes why.
    /// `keepEarlier`: an earlier failure, if any, stays the one the app is told.
    private func skipTarget(_ holds: AttemptHolds, _ outcome: String, _ what: String, _ failure: Failure?,
                            keepEarlier: Bool = false) -> Begin {
        holds.giveBack(to: shared)
        walk.note(holds.target, outcome, what)
        if let failure { walk.lastFailure = keepEarlier ? walk.lastFailure ?? failure : failure }
        return .skipped
    }

    /// A budget refused the attempt (the ledger, or the cluster store): audited, and the target skipped.
    private func refusedByBudget(_ refusal: BudgetDecision, _ holds: AttemptHolds) -> Begin {
        shared.auditDecision(refusal.decision, subject, model: holds.target.model)
        return skipTarget(holds, "budget", "refused by budget: \(refusal)",
                          Failure(code: .budgetExceeded, provider: holds.target.provider.name))
    }

    /// The request of an attempt whose holds are all taken: made, and sent (after STARTED, for the first).
    private func startAttempt(_ holds: AttemptHolds, now: Instant) -> Begin {
        let target = holds.target
        // A pool built for a reloaded config may count more keys than this call's config had.
        let keys = target.provider.apiKeys
        let apiKey = keys[holds.key! % keys.count]
        let http: ProviderHTTPRequest
        do {
            http = try target.provider.adapter.makeRequest(chat, model: target.model, apiKey: apiKey.value)
        } catch {
            return skipTarget(holds, "not_translatable", "request not translatable: \(error.message)",
                              Failure(code: .badRequest, provider: target.provider.name))
        }
        if walk.firstOnTarget { shared.resilience.recordFirstAttempt(target.provider) }
        walk.attemptCount += 1
        let call = UpstreamCall(
            streamID: streamID, requestID: requestID, target: target, stream: stream, attemptNumber: walk.attemptCount,
            maxFramePayload: Int(shared.limits.maxFramePayload), flow: flow, stats: shared.stats,
            metrics: shared.metrics, handoff: shared.handoff,
            driver: NIOLoopBound(self, eventLoop: eventLoop), eventLoop: eventLoop)
        phase = .attempting(Attempt(holds: holds, number: walk.attemptCount, call: call))
        let t = target.provider.config.timeouts
        let remaining = deadline - now
        let request = HTTPRequest(
            method: "POST", url: http.url, headers: http.headers.map { HTTPHeader(name: $0.name, value: $0.value) },
            body: http.body,
            timeouts: TransferTimeouts(connect: min(t.connect, remaining), firstByte: t.firstByte, idle: t.idle,
                                       total: min(t.total, remaining)),
            httpVersion: target.provider.httpVersion, caFile: target.provider.config.caFile,
            pool: target.provider.pool,
            receiveBufferBytes: stream ? HTTPRequest.streamReceiveBufferBytes : HTTPRequest.defaultReceiveBufferBytes
        )
        let send = { [self] in
            // Stopped while STARTED was being written: the request never goes out.
            guard case .attempting(let attempt) = phase, attempt.call === call, attempt.transfer == nil else { return }
            startedUpstream = true
            let transfer = shared.engine.start(request, delegate: call)
            // The engine reports on this loop, after this job: the phase is still this attempt.
            guard case .attempting(let same) = phase, same.call === call else { return }
            attempt.transfer = transfer
        }
        if walk.attemptCount == 1, let connection {
            connection.announceStarted(streamID, then: send)
        } else {
            send()
        }
        return .started
    }

    /// Every key of `target` is busy for `wait`. With another target ready to take the call, a wait longer than
    /// max_retry_wait moves on; otherwise the call takes its place in the queue for the key, within its deadline
    /// — or fails with RATE_LIMITED when even the deadline comes first.
    private func queueForKey(_ target: ResolvedTarget, wait busy: Duration, tokens: Int, now: Instant) -> Begin {
        let maxWait = target.provider.retry.maxRetryWait
        let busyFor = "rate limits: every key is busy for " + RetryPlanner.format(busy)
        let limited = Failure(code: .rateLimited, provider: target.provider.name, retryAfter: busy)
        let fallbackReady = laterTargetReady()
        if walk.pacedOnTarget + busy > maxWait, fallbackReady {
            walk.note(target, "keys_busy", busyFor + ", longer than max_retry_wait", wait: busy)
            walk.lastFailure = limited
            return .skipped
        }
        // With another target ready, the place may be no further off than max_retry_wait allows (a cluster
        // lease may be granted for a later slot, up to this); else anywhere before the deadline.
        let lastChance = deadline - .milliseconds(1)
        let horizon = fallbackReady ? min(lastChance, now + max(.zero, maxWait - walk.pacedOnTarget)) : lastChance
        switch shared.resilience.reserveKey(target.provider, tokens: tokens, notAfter: horizon) {
        case nil:
            walk.note(target, "keys_busy", busyFor + (horizon < lastChance ? ", longer than max_retry_wait"
                                                                              : ", past the call's deadline"),
                      wait: busy)
            walk.lastFailure = limited
            return .skipped
        case .held(let index, let at):
            walk.pacedOnTarget += at - now
            shared.metrics.waitedForKey(target, at - now)
            wait(at - now, then: target, place: .place(target, key: index, tokens: tokens))  // pace under the limits
        case .lookAgain(let at):
            // A cluster lease is short: its answer from the cluster store is awaited, or the store named when the
            // next unit fits (another daemon may take it first). Nothing is held; the key is asked again then.
            walk.pacedOnTarget += at - now
            wait(at - now, then: target, place: nil)
        }
        return .scheduled
    }

    /// The app made room (WINDOW_UPDATE, or its socket's buffer drained): the attempt in flight, if the engine
    /// paused it for this, goes on receiving.
    func resumeReceiving() {
        switch phase {
        case .attempting(let attempt), .streaming(let attempt):
            if let transfer = attempt.transfer { shared.engine.resume(transfer) }
        default:
            return
        }
    }

    // MARK: Upstream reports

    /// Streamed frames of the attempt in flight: from here on, the call is committed to it.
    func attemptProgress(_ frames: [Frame], from call: UpstreamCall) {
        if let tool = blockedToolCall(in: frames, whole: false) { return toolCallBlocked(tool, from: call) }
        switch phase {
        case .attempting(let attempt) where attempt.call === call:
            phase = .streaming(attempt)
        case .streaming(let attempt) where attempt.call === call:
            break
        default:
            return
        }
        connection?.write(frames, streamID: streamID)
    }

    /// The provider sent a streamed event larger than `max_frame_payload`: the transfer stops and the call ends
    /// with EVENT_TOO_LARGE (after the chunks already forwarded). Not the provider's failure, and not retried:
    /// any provider would send the same answer.
    func attemptOversized(from call: UpstreamCall, limit: Int) {
        guard let (attempt, committed) = takeAttempt(of: call) else { return }
        abandonAnswered(attempt)
        let message = "a streamed event was larger than max_frame_payload (\(limit) bytes)"
        shared.logger.notice("stream ended: event too large", metadata: [
            "request_id": "\(requestID)", "target": "\(attempt.target.label)", "limit": "\(limit)",
        ])
        finish(.failed(.eventTooLarge), [committed
            ? CallTrailers(error: .eventTooLarge, message: message).frame(streamID: streamID)
            : ErrorMessage(code: .eventTooLarge, message: message).frame(streamID: streamID)])
    }

    // MARK: Tool calls in scope

    /// A tool the model's answer calls that the agent may not use, if any: in a whole answer (its DATA frames
    /// together) or in stream chunks (one each). Only under a policy; chunks that mention no `tool_calls` are not
    /// parsed.
    private func blockedToolCall(in frames: [Frame], whole: Bool) -> String? {
        guard let governance = shared.governance, let agent = access?.principal.agent else { return nil }
        var names: [String] = []
        let data = frames.filter { $0.type == .data }
        if whole, data.count > 1 {
            // A whole answer split over several DATA frames (past max_frame_payload): read as one.
            let body = data.flatMap(\.payload)
            if ToolCalls.mentioned(in: body) { names = ToolCalls.names(in: body) }
        } else {
            for frame in data where ToolCalls.mentioned(in: frame.payload) {
                names += ToolCalls.names(in: frame.payload)
            }
        }
        guard !names.isEmpty else { return nil }
        return governance.disallowedTools(agent: agent, names).tools.first
    }

    /// A streamed chunk calls a tool out of scope: the transfer stops (its holds settled as answered: the
    /// provider did answer), and the call ends with TOOL_CALL_BLOCKED; the chunk itself never reaches the app.
    private func toolCallBlocked(_ tool: String, from call: UpstreamCall) {
        guard let (attempt, committed) = takeAttempt(of: call) else { return }
        abandonAnswered(attempt)
        blockTool(tool, committed: committed)
    }

    /// Stops a streamed answer the call will not use, its holds settled as answered: the provider did answer (and
    /// was not at fault), whatever the daemon then made of it.
    private func abandonAnswered(_ attempt: Attempt) {
        if let transfer = attempt.transfer { shared.engine.cancel(transfer) }
        let answered = AttemptResult(outcome: .success, frames: [], reason: "", upstreamStatus: 200,
                                     rateLimit: RateLimitInfo(), duration: .zero, usage: nil)
        _ = attempt.holds.settle(answered, nil, endsCall: !attempt.holds.probe, firstOnTarget: walk.firstOnTarget,
                                 shared: shared)
    }

    private func blockTool(_ tool: String, committed: Bool) {
        let agent = access?.principal.agent ?? "-"
        shared.audit(.toolCallBlocked, subject) { e in
            e[.toolName] = tool
            e.rule = GovernancePolicy.scopeRule(agent: agent)
            e.reason = "the model's answer called it"
        }
        shared.logger.notice("tool call blocked", metadata: ["request_id": "\(requestID)", "tool": "\(tool)"])
        let message = "the model called tool \"\(tool)\", which is outside the scopes of agent \"\(agent)\""
        finish(.failed(.toolCallBlocked), [committed
            ? CallTrailers(error: .toolCallBlocked, message: message).frame(streamID: streamID)
            : ErrorMessage(code: .toolCallBlocked, message: message).frame(streamID: streamID)])
    }

    /// The attempt `call` belongs to, if it is still the one in flight, taken out of the phase (now `.deciding`:
    /// the caller settles its holds and chooses what comes next); `committed` when bytes of it reached the app.
    private func takeAttempt(of call: UpstreamCall) -> (attempt: Attempt, committed: Bool)? {
        let taken: (Attempt, Bool)
        switch phase {
        case .attempting(let a) where a.call === call: taken = (a, false)
        case .streaming(let a) where a.call === call: taken = (a, true)
        default: return nil
        }
        phase = .deciding
        return taken
    }

    func attemptFinished(_ result: AttemptResult, from call: UpstreamCall) {
        guard let (attempt, committed) = takeAttempt(of: call) else { return }
        let target = attempt.target
        let classification = target.provider.classifier.classify(result.outcome)
        let counted = attempt.holds.settle(result, classification, endsCall: classification == nil && !attempt.holds.probe,
                                           firstOnTarget: walk.firstOnTarget, shared: shared)
        let number = attempt.number
        shared.metrics.attemptEnded(target, failure: classification.map { "\($0.kind)" }, duration: result.duration,
                                    usage: classification == nil ? result.usage : nil)
        shared.audit(.upstreamAttempt, subject) { e in
            e.provider = target.provider.name
            e.model = target.model
            e.set(.attempt, number)
            if let status = result.upstreamStatus { e.set(.status, status) }
            e.set(.latencyMilliseconds, result.duration.nanoseconds / 1_000_000)
            e.outcome = classification == nil ? .ok : .error
            e.errorClass = classification.map { "\($0.kind)" }
            if classification != nil { e.reason = result.reason }
        }
        guard let classification else {
            if let tool = blockedToolCall(in: result.frames, whole: !stream) {
                return blockTool(tool, committed: committed)
            }
            return finish(.answered(result.usage), result.frames)
        }
        walk.note(target, AttemptRecord.outcome(of: result.outcome), result.reason)
        walk.records[walk.records.count - 1].failure = classification.kind
        walk.records[walk.records.count - 1].status = result.upstreamStatus
        walk.lastFailure = Failure(code: Self.code(for: classification.kind, result.outcome),
                                   status: result.upstreamStatus, provider: target.provider.name,
                                   retryAfter: result.rateLimit.suggestedWait)
        if classification.kind == .configuration {
            // Not the provider's fault: nothing is retried or counted against it; the admin has something to fix.
            shared.logger.error("configuration error: the request to a provider could not be made", metadata: [
                "request_id": "\(requestID)", "target": "\(target.label)", "reason": "\(result.reason)",
            ])
        } else {
            shared.logger.notice("upstream attempt failed", metadata: [
                "request_id": "\(requestID)", "target": "\(target.label)", "attempt": "\(number)",
                "failure": "\(classification.kind)", "reason": "\(result.reason)",
            ])
        }
        if committed {
            // Bytes already reached the app: no transparent retry, an explicit error instead.
            return finish(.failed(.streamInterrupted), [
                CallTrailers(error: .streamInterrupted, message: "stream cut after it began: " + result.reason)
                    .frame(streamID: streamID),
            ])
        }
        let hasNextTarget = walk.targetIndex + 1 < chain.count
        var input = RetryPlanner.Input(
            classification: classification, retriesDone: walk.retriesOnTarget, hasNextTarget: hasNextTarget,
            nextTargetReady: hasNextTarget && laterTargetReady(), now: shared.resilience.clock.now(),
            deadline: deadline, providerWait: result.rateLimit.suggestedWait, budgetAllows: true,
            unit: Double.random(in: 0..<1))
        var step = RetryPlanner.decide(input, retry: target.provider.retry, fallback: fallback)
        // The host-wide budget is asked only for a retry that would really happen, so it counts real retries.
        if case .retry = step, !shared.resilience.tryRetry(target.provider) {
            shared.metrics.retryBudgetRefused(target)
            input.budgetAllows = false
            walk.records[walk.records.count - 1].retryBudgetRefused = true
            step = RetryPlanner.decide(input, retry: target.provider.retry, fallback: fallback)
        }
        if case .retry = step {} else if counted, !attempt.holds.probe {
            shared.resilience.recordCallOutcome(target, failed: true)
        }
        switch step {
        case .retry(let delay):
            shared.metrics.retried(target)
            walk.records[walk.records.count - 1].then = "retried"
            walk.records[walk.records.count - 1].wait = delay
            if RetryPlanner.isPaced(input, retry: target.provider.retry) {
                walk.pacedRetriesOnTarget += 1
            } else {
                walk.retriesOnTarget += 1
            }
            shared.audit(.retry, subject) { e in
                e.provider = target.provider.name
                e.model = target.model
                e.set(.attempt, number)
                e.set(.delayMilliseconds, delay.nanoseconds / 1_000_000)
                e.errorClass = "\(classification.kind)"
            }
            wait(delay, then: target, place: nil)
        case .nextTarget(let reason):
            walk.records[walk.records.count - 1].what += "; moving on: " + reason
            walk.records[walk.records.count - 1].then = "moved_on"
            moveOn(from: target, reason: reason, errorClass: "\(classification.kind)")
            tryNextTarget()
        case .fail(let reason):
            walk.records[walk.records.count - 1].what += "; " + reason
            walk.records[walk.records.count - 1].then = "gave_up"
            fail()
        }
    }

    /// Every target failed (or was skipped): one error that lists every attempt.
    private func fail() {
        guard !isFinished else { return }
        let failure = walk.lastFailure ?? Failure(code: .upstreamUnavailable, provider: nil)
        let list = walk.records.enumerated().map { "\($0.offset + 1). \($0.element.target.label): \($0.element.what)" }
        let message = "all \(chain.count) target(s) of the route failed: " + list.joined(separator: " | ")
        let status = failure.status.flatMap { (200..<300).contains($0) ? nil : UInt16(clamping: $0) }
        let retryAfterMs = failure.code == .rateLimited
            ? failure.retryAfter.map { UInt32(clamping: max(1, $0.nanoseconds / 1_000_000)) } : nil
        finish(.failed(failure.code), [
            ErrorMessage(code: failure.code, message: message, upstreamStatus: status, provider: failure.provider,
                         retryAfterMs: retryAfterMs, attempts: walk.records.map(\.report)).frame(streamID: streamID),
        ])
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
