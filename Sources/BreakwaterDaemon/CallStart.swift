import BreakwaterWire
import Governance
import NIOCore
import Logging
import Providers
import Resilience
import Synchronization
import Systemd

/// Where a call's frames go: the binary protocol's connection (`ConnectionHandler`), or an HTTP exchange
/// (`HTTPFrontHandler`, which turns them into an HTTP response). Both start calls through
/// `DaemonContext.makeCall`, so a call is the same call — gate, resilience, audit — whichever front it came by.
/// Called on the sink's event loop only.
protocol CallSink: AnyObject {
    /// The connected process, from SO_PEERCRED (nil: not a Unix socket).
    var peer: PeerCredentials? { get }
    /// Frames of a call still running; dropped for a call that ended.
    func write(_ frames: [Frame], streamID: StreamID)
    /// The call's end: its last frames (empty when the app is gone) and outcome.
    func callEnded(_ id: StreamID, frames: [Frame], outcome: CallOutcome)
    /// Before the call's first upstream request: `go` sends it (after STARTED is written, for clients that ask).
    func announceStarted(_ id: StreamID, then go: @escaping () -> Void)
}

/// Who a call comes from, as a front learned it (a HELLO, or an HTTP request's headers and socket).
struct CallOrigin {
    var peer: PeerCredentials?
    /// The agent a credential proved; nil without a policy, or when none was presented.
    var principal: Principal?
    var clientName: String?
}

extension DaemonContext {
    /// Checks an agent credential the way every front does (policy, SO_PEERCRED), auditing the decision.
    /// `.success(nil)`: no policy, or no credential presented (such a caller may still run admin commands; its
    /// calls are refused). A refused credential is a failure whose message names the check, never the token.
    func authenticate(credential: [UInt8]?, peer: PeerCredentials?,
                      clientName: String?) -> Result<Principal?, WireError> {
        guard let governance else { return .success(nil) }
        // Unknown peers (not a Unix socket) match no uid or gid rule.
        let who = peer ?? PeerCredentials(uid: .max, gid: .max, pid: 0)
        let subject = AuditSubject(requestID: "", peer: who, clientName: clientName)
        switch governance.authenticate(token: credential, peer: who) {
        case .authenticated(let p, let rule):
            audit(.identityCheck, subject) { e in
                e.agent = p.agent
                e.decision = .allow
                e.rule = rule
            }
            return .success(p)
        case .refused where credential == nil:
            return .success(nil)
        case .refused(let refusal):
            audit(.identityCheck, subject) { e in
                e.agent = refusal.agent
                e.decision = .deny
                e.rule = refusal.rule
                e.reason = refusal.code.rawValue
            }
            logger.notice("credential refused", metadata: ["code": "\(refusal.code.rawValue)", "peer": "\(who)"])
            return .failure(WireError(.unauthenticated, "credential refused: \(refusal.code.rawValue)"))
        }
    }

    /// The one way a call begins, from either front: its route, its body checked, what the policy will judge,
    /// and its driver — or the error the app is told at once. The caller registers the driver under `streamID`
    /// and then calls `launch(_:)` (the driver may end the call, and report to the sink, before `launch` returns).
    func makeCall(_ request: CallRequest, body: [UInt8], streamID: StreamID, origin: CallOrigin,
                  sink: any CallSink, flow: ReaderFlow, eventLoop: any EventLoop) -> Result<CallDriver, ErrorMessage> {
        // An unknown route is told before a bad body.
        guard let route = router.routes[request.route], !route.chain.isEmpty else {
            return .failure(ErrorMessage(code: .unknownRoute, message: "no route named \"\(request.route)\""))
        }
        let chat: ChatRequest
        do {
            chat = try ChatRequest(json: body)
        } catch {
            return .failure(ErrorMessage(code: .badRequest, message: error.message))
        }
        return makeCall(request, chat: chat, route: route, streamID: streamID, origin: origin, sink: sink,
                        flow: flow, eventLoop: eventLoop)
    }

    /// `makeCall` for a body already parsed (the HTTP front reads `model` and `stream` from it first).
    func makeCall(_ request: CallRequest, chat: ChatRequest, streamID: StreamID, origin: CallOrigin,
                  sink: any CallSink, flow: ReaderFlow, eventLoop: any EventLoop) -> Result<CallDriver, ErrorMessage> {
        guard let route = router.routes[request.route], !route.chain.isEmpty else {
            return .failure(ErrorMessage(code: .unknownRoute, message: "no route named \"\(request.route)\""))
        }
        return makeCall(request, chat: chat, route: route, streamID: streamID, origin: origin, sink: sink,
                        flow: flow, eventLoop: eventLoop)
    }

    private func makeCall(_ request: CallRequest, chat parsed: ChatRequest, route: ResolvedRoute, streamID: StreamID,
                          origin: CallOrigin, sink: any CallSink, flow: ReaderFlow,
                          eventLoop: any EventLoop) -> Result<CallDriver, ErrorMessage> {
        var chat = parsed
        // The REQUEST frame's flag decides streaming, whatever the body says.
        chat.stream = request.stream
        let requestID = request.requestID ?? RequestID.make()
        let access: AccessRequest?, subject: AuditSubject
        do {
            (access, subject) = try judge(origin, requestID: requestID, action: request.action, tenant: request.tenant,
                                          route: request.route, model: route.chain.first?.model,
                                          stepUpToken: request.stepUpToken, argumentHash: nil)
        } catch {
            return .failure(error)
        }
        // Tools the agent may not use: taken out of the request, or the call refused (the policy says which).
        let tools = chat.toolNames
        if let governance, let agent = origin.principal?.agent, !tools.isEmpty {
            let (blocked, mode) = governance.disallowedTools(agent: agent, tools)
            if !blocked.isEmpty {
                for tool in blocked {
                    audit(.toolCallBlocked, subject) { e in
                        e[.toolName] = tool
                        e.rule = GovernancePolicy.scopeRule(agent: agent)
                        e.reason = mode == .remove ? "removed from the request's tools" : "call refused"
                    }
                }
                if mode == .refuse {
                    return .failure(ErrorMessage(code: .forbidden, message: "the request lists tools outside the "
                        + "scopes of agent \"\(agent)\": " + blocked.joined(separator: ", ")))
                }
                do {
                    chat = try chat.removingTools(Set(blocked))
                } catch {
                    return .failure(ErrorMessage(code: .badRequest, message: error.message))
                }
            }
        }
        return .success(CallDriver(
            streamID: streamID, requestID: requestID, work: .chat(chat), stream: request.stream, chain: route.chain,
            fallback: route.fallback, deadline: deadline(request.timeoutMs), shared: self,
            eventLoop: eventLoop, connection: sink, flow: flow, access: access, subject: subject))
    }

    /// What the policy will judge (nil without one; a caller with no credential is refused under one) and what the
    /// audit trail stamps, for a call (`route`) or an action (`argumentHash`): the same for both.
    func judge(_ origin: CallOrigin, requestID: String, action: String?, tenant: String?, route: String?,
               model: String?, stepUpToken: [UInt8]?, argumentHash: String?)
        throws(ErrorMessage) -> (AccessRequest?, AuditSubject) {
        var access: AccessRequest?
        if governance != nil {
            guard let principal = origin.principal else {
                throw ErrorMessage(code: .forbidden, message: "no agent credential was presented")
            }
            access = AccessRequest(principal: principal, action: action, tenant: tenant, route: route, model: model,
                                   stepUpToken: stepUpToken.map(PresentedToken.init), pass: .admission,
                                   argumentHash: argumentHash)
        }
        let subject = AuditSubject(requestID: requestID, agent: origin.principal?.agent, tenant: tenant,
                                   action: action, route: route, peer: origin.peer, clientName: origin.clientName)
        return (access, subject)
    }

    /// A call's deadline: its own timeout, else `limits.default_call_timeout`, from now.
    func deadline(_ timeoutMs: UInt32?) -> Instant {
        resilience.clock.now() + (timeoutMs.map { Duration.milliseconds(Int64($0)) } ?? defaultCallTimeout)
    }

    /// Counts the call in flight and puts it before the gate.
    func launch(_ driver: CallDriver) {
        stats.callsStarted.add(1, ordering: .relaxed)
        stats.callsInFlight.add(1, ordering: .relaxed)
        driver.admit()
    }
}
