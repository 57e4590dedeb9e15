@testable import BreakwaterDaemon
import BreakwaterWire
import CurlTransport
import Foundation
import Governance
import NIOCore
import NIOEmbedded
import Resilience
import Synchronization
import Testing

/// Every transition of `CallDriver`, in-process and in virtual time: fallback by failure kind, the breaker's
/// half-open probe, budget refusal, approvals while the client waits, CANCEL and a client that goes away in each
/// phase — and after each, nothing held.
@Suite struct CallTransitionTests {
    static let token = "in-process-token-0123456789abcdef"
    static let agent = "app"

    static var policy: String {
        let now = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-60))
        return """
            anonymous: deny
            approvers: {uids: [0]}
            allow_self_approval: true
            agents:
              app:
                agent_identity:
                  credentials: [{name: t1, token_sha256: \(CredentialDigest.policyValue(forToken: token)), \
            issued_at: \(now), validity_window: 1h}]
                scopes: {actions: ["*"], routes: ["*"], models: ["*"]}
                relationships: [{agent_to_tenant: "*"}]
                max_concurrent_calls: 2
                budgets: {daily: {tokens: 50000}}
            conditional_controls:
              destructive_changes: {actions: [refund.issue], require_approval: true, approval_timeout: 30s}
            """
    }

    static let oneTry = "retry_config: {retry_count: 0}"

    // MARK: Fallback by failure kind

    /// One failure of each kind the classifier knows, as the provider (or this host) produces it.
    enum Fault: String, CaseIterable, Sendable {
        case transient, rateLimited, quotaExhausted, auth, notFound, badRequest, configuration

        var answer: ScriptedEngine.Answer {
            func error(_ status: Int, _ type: String) -> ScriptedEngine.Answer {
                .status(status, body: #"{"error":{"message":"no","type":"\#(type)","code":"\#(type)"}}"#)
            }
            return switch self {
            case .transient: error(503, "server_error")
            case .rateLimited: error(429, "requests")
            case .quotaExhausted: error(429, "insufficient_quota")
            case .auth: error(401, "invalid_api_key")
            case .notFound: error(404, "model_not_found")
            case .badRequest: error(400, "invalid_request_error")
            case .configuration:
                .transport(TransportError(kind: .localConfiguration, curlCode: 77, detail: "bad CA file"))
            }
        }

        var kind: FailureKind {
            switch self {
            case .transient: .transient
            case .rateLimited: .rateLimited
            case .quotaExhausted: .quotaExhausted
            case .auth: .auth
            case .notFound: .notFound
            case .badRequest: .badRequest
            case .configuration: .configuration
            }
        }
    }

    /// The default `fallback_on` moves on for every kind but auth and bad requests; a route with
    /// `fallback_on: [transient]` moves on for transient failures only and ends the call on the others.
    @Test(arguments: Fault.allCases)
    func fallbackFollowsFallbackOn(fault: Fault) throws {
        for (route, kinds) in [("chain", FallbackPolicy.defaultKinds), ("narrow", [.transient])] {
            let d = try InProcessDaemon(providerYAML: Self.oneTry)
            _ = try d.hello()
            d.engine.script([fault.answer])
            try d.call(1, route: route)
            let frames = try d.drain()
            if kinds.contains(fault.kind) {
                #expect(d.engine.hosts == ["p.invalid", "q.invalid"], "\(route): \(fault) moves on")
                #expect(try CallResponse(frame: frames[0]).provider == "q", "\(route): \(fault)")
            } else {
                #expect(d.engine.hosts == ["p.invalid"], "\(route): \(fault) ends the call at p")
                #expect(frames.map(\.type) == [.error], "\(route): \(fault)")
            }
            d.expectNothingHeld("\(route): \(fault)")
        }
    }

    // MARK: Breaker

    /// An open breaker skips its target until timeout_period; then one probe goes out (half_open_max_calls 1, so a
    /// second call meanwhile is skipped); its success closes the breaker. A failed probe opens it again.
    @Test func theBreakerSkipsThenProbesThenCloses() throws {
        let d = try InProcessDaemon(providerYAML: """
            retry_config: {retry_count: 0}
            circuit_breaker: {failure_threshold: 1, timeout_period: 10s, half_open_max_calls: 1, success_threshold: 1}
            """)
        _ = try d.hello()
        d.engine.script([.status(503, body: ScriptedEngine.overloaded)])
        try d.call(1, route: "chain")
        #expect(d.engine.hosts == ["p.invalid", "q.invalid"])
        try d.call(3, route: "chain")
        #expect(d.engine.hosts.last == "q.invalid" && d.engine.startedCount == 3, "open: p skipped")
        #expect(d.shared.resilience.breakerReport().first { $0.target == "p/m" }?.state == "open")

        d.advance(by: .seconds(10))
        d.engine.script([.hang])
        try d.call(5, route: "chain")
        #expect(d.engine.hosts.last == "p.invalid", "after timeout_period the call is p's probe")
        #expect(d.shared.resilience.outstandingHolds().probes == 1)
        try d.call(7, route: "chain")
        #expect(d.engine.hosts.last == "q.invalid", "the one probe slot is taken: the next call skips p")
        try d.send(.cancel(streamID: 5))
        #expect(d.shared.resilience.outstandingHolds().probes == 0, "a cancelled probe gives its slot back")

        d.engine.script([.status(503, body: ScriptedEngine.overloaded)])
        try d.call(9, route: "chain")
        #expect(d.engine.hosts.suffix(2) == ["p.invalid", "q.invalid"], "a failed probe, then the fallback")
        #expect(d.shared.resilience.breakerReport().first { $0.target == "p/m" }?.state == "open")

        d.advance(by: .seconds(10))
        try d.call(11, route: "chain")
        #expect(d.engine.hosts.last == "p.invalid")
        #expect(d.shared.resilience.breakerReport().first { $0.target == "p/m" }?.state == "closed",
                "a successful probe closes it")
        _ = try d.drain()
        d.expectNothingHeld()
    }

    // MARK: Budget, approvals

    /// An attempt whose worst case does not fit the agent's budget is refused before it goes out.
    @Test func aBudgetRefusesTheAttempt() throws {
        let d = try InProcessDaemon(policyYAML: Self.policy)
        _ = try d.hello(token: Self.token)
        try d.call(1, maxTokens: 60000)
        let error = try ErrorMessage(frame: try #require(try d.drain().last))
        #expect(error.code == .budgetExceeded, "\(error)")
        #expect(d.engine.startedCount == 0)
        d.expectNothingHeld(agent: Self.agent)
    }

    /// The call waits for a person: NOTICE with the approval id, nothing upstream until it is approved; then it is
    /// answered. Denied: APPROVAL_DENIED. Nobody decides within approval_timeout: APPROVAL_EXPIRED.
    @Test func approvalsGrantedDeniedAndExpiredWhileTheClientWaits() throws {
        let d = try InProcessDaemon(policyYAML: Self.policy)
        _ = try d.hello(token: Self.token)
        let governance = try #require(d.shared.governance)
        let approver = PeerCredentials(uid: 0, gid: 0, pid: 1)

        func pending(_ stream: StreamID) throws -> String {
            let before = d.engine.startedCount
            try d.call(stream, action: "refund.issue")
            let notice = try CallNotice(frame: try #require(try d.next()))
            #expect(notice.kind == CallNotice.pendingApproval && notice.timeoutMs == 30000)
            #expect(d.engine.startedCount == before, "nothing reaches the provider before the approval")
            return try #require(notice.approvalID)
        }

        _ = try governance.approve(try pending(1), by: approver)
        d.loop.run()
        #expect(try d.drain().map(\.type) == [.response, .data, .trailers])
        #expect(d.engine.startedCount == 1)

        _ = try governance.deny(try pending(3), by: approver, reason: "not this one")
        d.loop.run()
        let denied = try ErrorMessage(frame: try #require(try d.next()))
        #expect(denied.code == .approvalDenied && denied.message.contains("not this one"))

        _ = try pending(5)
        d.advance(by: .seconds(29))
        #expect(try d.drain().isEmpty, "still waiting")
        d.advance(by: .milliseconds(1010))  // approval_timeout, and the 5 ms the expiry timer adds
        let expired = try ErrorMessage(frame: try #require(try d.next()))
        #expect(expired.code == .approvalExpired)
        #expect(d.engine.startedCount == 1)
        d.expectNothingHeld(agent: Self.agent)
    }

    // MARK: CANCEL and disconnect in every phase

    /// The phases a call can be stopped in, and how to bring a call there.
    enum Phase: String, CaseIterable, Sendable {
        /// Waiting for an approval.
        case awaitingApproval
        /// STARTED written to the app, the request not yet sent.
        case beforeUpstream
        /// The request in flight.
        case inFlight
        /// Sleeping before a retry.
        case backingOff
        /// Waiting for a key under the provider's rate limit (a place in its queue).
        case pacedForAKey
        /// Chunks reached the app, the stream goes on.
        case midStream
    }

    /// A daemon with the policy in force and call 3 in `phase` (for `pacedForAKey`, call 1 first takes the only
    /// request a minute the provider allows, so that call 3 queues for it).
    func enter(_ phase: Phase) throws -> InProcessDaemon {
        let d = try InProcessDaemon(providerYAML: phase == .pacedForAKey ? Self.pacedProvider
                                        : "retry_config: {retry_count: 2, backoff_base: 100ms, jitter: false}",
                                    policyYAML: Self.policy)
        _ = try d.hello(token: Self.token, startedNotices: true)
        switch phase {
        case .awaitingApproval:
            try d.call(3, action: "refund.issue")
        case .beforeUpstream:
            // Delivered without letting the loop run: STARTED is written, its flush (and the request) still queued.
            try d.channel.writeInbound(CallRequest(route: "solo").frame(streamID: 3))
            try d.channel.writeInbound(Frame.data(streamID: 3, Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8), endStream: true))
        case .inFlight:
            d.engine.script([.hang])
            try d.call(3)
        case .backingOff:
            d.engine.script([.status(503, body: ScriptedEngine.overloaded)])
            try d.call(3)
        case .pacedForAKey:
            try d.call(1)
            try d.call(3)
        case .midStream:
            d.engine.script([.stream(chunks: 2, end: .hang)])
            try d.call(3, stream: true)
        }
        return d
    }

    static let pacedProvider = """
        retry_config: {retry_count: 2, backoff_base: 100ms, jitter: false}
        rate_limits: {rpm: 1}
        """

    @Test(arguments: Phase.allCases)
    func cancelInEveryPhase(phase: Phase) throws {
        let d = try enter(phase)
        let sent = d.engine.startedCount
        try d.send(.cancel(streamID: 3))
        let frames = try d.drain()
        #expect(frames.last?.type == .error, "\(phase): \(frames.map(\.type))")
        #expect(try ErrorMessage(frame: try #require(frames.last)).code == .cancelled)
        d.advance(by: .seconds(120))
        #expect(d.engine.startedCount == sent, "\(phase): nothing goes upstream after CANCEL")
        #expect(try d.drain().isEmpty, "\(phase): nothing more for the cancelled call")
        if phase == .inFlight || phase == .midStream { #expect(d.engine.cancelledCount == 1, "\(phase)") }
        #expect(d.shared.governance?.pending.isEmpty == true, "\(phase): an approval asked for is withdrawn")
        d.expectNothingHeld(agent: Self.agent, "\(phase)")
    }

    @Test(arguments: Phase.allCases)
    func clientGoneInEveryPhase(phase: Phase) throws {
        let d = try enter(phase)
        let sent = d.engine.startedCount
        _ = try d.drain()
        _ = d.channel.close()
        d.loop.run()
        #expect(d.shared.governance?.pending.isEmpty == true, "\(phase): an approval asked for is withdrawn")
        d.advance(by: .seconds(120))
        #expect(d.engine.startedCount == sent, "\(phase): nothing goes upstream once the client is gone")
        if phase == .inFlight || phase == .midStream { #expect(d.engine.cancelledCount == 1, "\(phase)") }
        d.expectNothingHeld(agent: Self.agent, "\(phase)")
    }

    /// A stream cut after chunks reached the app is not retried: error TRAILERS (STREAM_INTERRUPTED), decided by
    /// the driver; counted as a failed call.
    @Test func aStreamCutMidWayEndsWithStreamInterrupted() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.stream(chunks: 2, end: .reset)])
        try d.call(1, route: "chain", stream: true)
        let frames = try d.drain()
        #expect(frames.map(\.type) == [.response, .data, .data, .trailers], "\(frames.map(\.type))")
        let trailers = try CallTrailers(frame: try #require(frames.last))
        #expect(trailers.error == .streamInterrupted && trailers.succeeded == false)
        #expect(d.engine.startedCount == 1, "no retry and no fallback once bytes reached the app")
        #expect(d.shared.stats.callsFailed.load(ordering: .relaxed) == 1)
        d.expectNothingHeld()
    }

    /// A whole stream: RESPONSE, one DATA per chunk, TRAILERS; nothing held after.
    @Test func aStreamIsForwardedChunkByChunk() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.stream(chunks: 3, end: .done)])
        try d.call(1, stream: true)
        let frames = try d.drain()
        #expect(frames.map(\.type) == [.response, .data, .data, .data, .trailers], "\(frames.map(\.type))")
        #expect(try CallTrailers(frame: try #require(frames.last)).succeeded)
        #expect(d.shared.stats.callsFailed.load(ordering: .relaxed) == 0)
        d.expectNothingHeld()
    }
}
