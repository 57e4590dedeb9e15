import BreakwaterWire
import Config
import CurlTransport
import Foundation
import Governance
import Resilience
import Synchronization
import Systemd

/// The admin commands the `breakwater` CLI sends over the daemon's own socket. Only callers the config names as
/// admins (by uid or gid from SO_PEERCRED) may run them; the answer is a JSON document.
enum AdminCommands {
    static func run(_ command: String, arguments: [UInt8], peer: PeerCredentials?,
                    shared: DaemonContext) -> Result<[UInt8], ErrorMessage> {
        guard let peer else {
            return .failure(ErrorMessage(code: .forbidden, message: "the caller's identity is unknown"))
        }
        let isAdmin = shared.router.config.admins.contains(peer)
        let args = (try? JSONSerialization.jsonObject(with: Data(arguments)) as? [String: Any]) ?? [:]
        func forbidden(_ what: String) -> Result<[UInt8], ErrorMessage> {
            .failure(ErrorMessage(code: .forbidden, message: what))
        }
        switch command {
        case "status":
            guard isAdmin else { return forbidden("admin commands are for the uids/gids in the config's admins") }
            return .success(json(status(shared)))
        case "breakers":
            guard isAdmin else { return forbidden("admin commands are for the uids/gids in the config's admins") }
            let list: [[String: Any]] = shared.resilience.breakerReport().map { b in
                var o: [String: Any] = ["target": b.target, "state": b.state, "calls": b.calls,
                                        "failure_rate": (b.failureRate * 1000).rounded() / 1000]
                if let r = b.reopensInMs { o["reopens_in_ms"] = r }
                return o
            }
            return .success(json(["breakers": list]))
        case "breaker-reset":
            guard isAdmin else { return forbidden("admin commands are for the uids/gids in the config's admins") }
            guard let target = args["target"] as? String else {
                return .failure(ErrorMessage(code: .badRequest, message: "breaker-reset needs a target"))
            }
            guard shared.resilience.resetBreaker(target) else {
                return .failure(ErrorMessage(code: .badRequest, message: "no breaker for \"\(target)\""))
            }
            return .success(json(["target": target, "state": "closed"]))
        case "approvals", "approve", "deny", "policy-check":
            guard let governance = shared.governance else {
                return .failure(ErrorMessage(code: .badRequest, message: "no policy is configured"))
            }
            return governed(command, args: args, peer: peer, isAdmin: isAdmin, governance: governance)
        default:
            return .failure(ErrorMessage(code: .badRequest, message: "unknown admin command \"\(command)\""))
        }
    }

    /// Approvals: any caller may ask; the approval queue itself refuses approvers the policy does not name.
    static func governed(_ command: String, args: [String: Any], peer: PeerCredentials, isAdmin: Bool,
                         governance: GovernanceRegistry) -> Result<[UInt8], ErrorMessage> {
        switch command {
        case "approvals":
            governance.expireDue()
            // Admins see every waiting call; an approver only the calls they may decide. Anyone else is refused:
            // the list names agents, actions, tenants and requesters.
            let visible = governance.pending.filter { isAdmin || $0.approvers.contains(peer) }
            guard isAdmin || !visible.isEmpty else {
                return .failure(ErrorMessage(code: .forbidden,
                                             message: "approvals are for admins and the policy's approvers"))
            }
            let list: [[String: Any]] = visible.map { r in
                let subject = r.subject
                var o: [String: Any] = ["id": r.id, "agent": subject.agent, "rule": subject.rule,
                                        "requester_uid": r.requester.uid, "requester_pid": r.requester.pid]
                if let route = subject.route { o["route"] = route }
                // An action's approval: the hash the approval binds and the fields the policy shows; the other
                // arguments are not in the daemon's answer at all.
                if let hash = subject.argumentHash { o["argument_hash"] = hash }
                if let shown = subject.shownArguments { o["arguments"] = shown }
                if let a = subject.action { o["action"] = a }
                if let t = subject.tenant { o["tenant"] = t }
                if let m = subject.model { o["model"] = m }
                return o
            }
            return .success(json(["pending": list]))
        case "approve", "deny":
            guard let id = args["id"] as? String else {
                return .failure(ErrorMessage(code: .badRequest, message: "\(command) needs an id"))
            }
            do {
                let t = command == "approve"
                    ? try governance.approve(id, by: peer)
                    : try governance.deny(id, by: peer, reason: args["reason"] as? String ?? "denied")
                return .success(json(["id": t.id, "state": t.to.rawValue, "agent": t.agent]))
            } catch {
                return .failure(ErrorMessage(code: .forbidden, message: "\(command) \(id): \(error.reason)"))
            }
        default:  // policy-check
            guard isAdmin else {
                return .failure(ErrorMessage(code: .forbidden, message: "policy check is for admins"))
            }
            guard let agent = args["agent"] as? String else {
                return .failure(ErrorMessage(code: .badRequest, message: "policy-check needs an agent"))
            }
            // With `tool`: may the agent offer the model this tool, and may the model call it?
            if let tool = args["tool"] as? String {
                let (blocked, mode) = governance.disallowedTools(agent: agent, [tool])
                let action = governance.toolAction(tool)
                return .success(json([
                    "decision": blocked.isEmpty ? "allow" : "deny", "tool": tool, "action": action,
                    "rule": GovernancePolicy.scopeRule(agent: agent),
                    "detail": blocked.isEmpty
                        ? "tool \"\(tool)\" stands for action \"\(action)\", in the scopes of agent \"\(agent)\""
                        : "tool \"\(tool)\" stands for action \"\(action)\", outside the scopes of agent "
                            + "\"\(agent)\": \(mode == .remove ? "removed from requests" : "requests refused"), "
                            + "answers calling it fail with TOOL_CALL_BLOCKED",
                    "trace": [String](),
                ]))
            }
            // With `arguments`: an action, as AUTHORIZE would ask (no route or model); else an LLM call on `route`.
            var action: AuthorizedAction?
            if let arguments = args["arguments"] {
                guard let name = args["action"] as? String,
                      let bytes = try? JSONSerialization.data(withJSONObject: arguments) else {
                    return .failure(ErrorMessage(code: .badRequest,
                                                 message: "an action check needs an action and JSON object arguments"))
                }
                do {
                    action = try AuthorizedAction(name: name, arguments: [UInt8](bytes))
                } catch {
                    return .failure(ErrorMessage(error))
                }
            }
            guard action != nil || args["route"] is String else {
                return .failure(ErrorMessage(code: .badRequest, message: "policy-check needs a route or arguments"))
            }
            let tenant = args["tenant"] as? String
            let e = governance.explain(agent: agent, action: args["action"] as? String, tenant: tenant,
                                       route: action == nil ? args["route"] as? String : nil,
                                       model: args["model"] as? String)
            var answer: [String: Any] = ["decision": e.decision.name, "rule": e.decision.rule,
                                         "detail": "\(e.decision)", "trace": e.trace]
            if let action {
                answer["argument_hash"] = action.argumentHash
                if case .requireApproval(let rule, _, _) = e.decision {
                    answer["shown_arguments"] = action.shown(governance.approvalControl(rule: rule)?.shownArguments ?? [])
                    let key = GovernanceRegistry.ReuseKey(agent: agent, action: action.name, tenant: tenant,
                                                          argumentHash: action.argumentHash, rule: rule)
                    answer["reusable_approval"] = governance.reusableApproval(key) as Any? ?? NSNull()
                }
            }
            return .success(json(answer))
        }
    }

    static func status(_ shared: DaemonContext) -> [String: Any] {
        let s = shared.stats
        let now = shared.resilience.clock.now()
        return [
            "connections": s.connections.load(ordering: .relaxed),
            "calls_in_flight": s.callsInFlight.load(ordering: .relaxed),
            "calls": s.callsStarted.load(ordering: .relaxed),
            "calls_failed": s.callsFailed.load(ordering: .relaxed),
            "calls_waiting_for_reader": s.callsWaitingForReader.load(ordering: .relaxed),
            "upstream_body_bytes": s.upstreamBodyBytes.load(ordering: .relaxed),
            "protocol_errors": s.protocolErrors.load(ordering: .relaxed),
            "calls_per_second": (s.callsPerSecond * 10).rounded() / 10,
            "uptime_seconds": (ContinuousClock.now - s.startedAt).components.seconds,
            "policy_enforced": shared.governance != nil,
            "pending_approvals": shared.governance?.pending.count ?? 0,
            "audit": shared.auditWriter.map { w -> [String: Any] in
                let a = w.statistics
                return ["written": a.written, "unwritten": a.unwritten, "dropped": a.dropped, "pending": a.pending]
            } ?? ["enabled": false],
            "resilience": shared.resilience.counterReport().map { provider, c -> [String: Any] in
                ["provider": provider, "first_attempts": c.firstAttempts, "retries": c.retries,
                 "retries_refused_by_budget": c.retriesRefused, "breaker_openings": c.breakerOpenings]
            },
            "upstream_pools": shared.router.poolSnapshots.map { name, p -> [String: Any] in
                ["provider": name, "limit": p.limit, "running": p.running, "waiting": p.waiting,
                 "waited_total": p.waitedTotal]
            },
            "cluster": shared.resilience.clusterReport() ?? ["configured": false],
            "open_breakers": shared.resilience.openBreakers.map { target, reopens in
                ["target": target, "reopens_in_ms": reopens.map { max(0, ($0 - now).nanoseconds / 1_000_000) } ?? 0]
                    as [String: Any]
            },
        ]
    }

    static func json(_ object: Any) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8))
    }
}
