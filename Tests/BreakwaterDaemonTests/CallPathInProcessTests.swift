@testable import BreakwaterDaemon
import BreakwaterWire
import Config
import Governance
import CurlTransport
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Resilience
import Synchronization
import Testing

/// A `TransferEngine` whose answers the test scripts. It answers inside `start`, on the caller's (the event
/// loop's) thread, so with an `EmbeddedEventLoop` every step happens when the test lets the loop run.
final class ScriptedEngine: TransferEngine {
    enum Answer: Sendable {
        case status(Int, body: String, headers: [HTTPHeader] = [])
        /// The transfer fails without an answer.
        case transport(TransportError)
        /// No answer until the transfer is cancelled.
        case hang
        /// A 200 event stream of `chunks` chat-completion chunks, then `end`.
        case stream(chunks: Int, end: StreamEnd)
    }

    enum StreamEnd: Sendable {
        /// `data: [DONE]` and a clean end.
        case done
        /// The connection breaks after the chunks.
        case reset
        /// Nothing more until the transfer is cancelled.
        case hang
    }

    private struct State {
        var script: [Answer] = []
        var started: [HTTPRequest] = []
        var cancelled: [TransferID] = []
        var hanging: [TransferID: any TransferDelegate] = [:]
        /// Streams the delegate paused: what is left of each, handed over from `resume`.
        var paused: [TransferID: (delegate: any TransferDelegate, rest: [String], end: StreamEnd)] = [:]
        var resumed = 0
        var next: UInt64 = 1
    }

    private let state = Mutex(State())

    func script(_ answers: [Answer]) {
        state.withLock { $0.script += answers }
    }

    var startedCount: Int { state.withLock { $0.started.count } }
    /// Which provider each attempt went to, by the host of its URL (`p.invalid`, `q.invalid`).
    var hosts: [String] {
        state.withLock { $0.started.map { String($0.url.split(separator: "/")[1]) } }
    }
    var cancelledCount: Int { state.withLock { $0.cancelled.count } }
    /// Streams paused right now (their delegate said so before a chunk), and how many resumes came.
    var pausedCount: Int { state.withLock { $0.paused.count } }
    var resumedCount: Int { state.withLock { $0.resumed } }

    func start(_ request: HTTPRequest, delegate: any TransferDelegate) -> TransferID {
        let (id, answer) = state.withLock { s -> (TransferID, Answer) in
            s.started.append(request)
            let id = TransferID(rawValue: s.next)
            s.next += 1
            let answer = s.script.isEmpty ? .status(200, body: Self.completion) : s.script.removeFirst()
            switch answer {
            case .hang, .stream(_, .hang): s.hanging[id] = delegate
            default: break
            }
            return (id, answer)
        }
        switch answer {
        case .status(let status, let body, let headers):
            delegate.transferDidReceiveHead(status: status,
                                            headers: [HTTPHeader(name: "content-type", value: "application/json")]
                                                + headers)
            delegate.transferDidReceiveBody(Array(body.utf8))
            delegate.transferDidComplete(.success(()))
        case .transport(let error):
            delegate.transferDidComplete(.failure(error))
        case .hang:
            break
        case .stream(let chunks, let end):
            delegate.transferDidReceiveHead(status: 200, headers: [HTTPHeader(name: "content-type",
                                                                              value: "text/event-stream")])
            var events = (0..<chunks).map { "data: \(Self.chunk($0))\n\n" }
            if case .done = end { events.append("data: [DONE]\n\n") }
            pump(id, delegate, events, end)
        }
        return id
    }

    /// Hands `events` over one by one as libcurl would: each only if the delegate does not pause first (then the
    /// rest waits for `resume`); after the last, the stream's end.
    private func pump(_ id: TransferID, _ delegate: any TransferDelegate, _ events: [String], _ end: StreamEnd) {
        var rest = events[...]
        while let event = rest.first {
            if delegate.transferShouldPause() {
                let left = Array(rest)
                state.withLock { $0.paused[id] = (delegate, left, end) }
                return
            }
            delegate.transferDidReceiveBody(Array(event.utf8))
            rest = rest.dropFirst()
        }
        switch end {
        case .done:
            delegate.transferDidComplete(.success(()))
        case .reset:
            delegate.transferDidComplete(.failure(TransportError(kind: .connectionReset, detail: "reset by peer")))
        case .hang:
            break
        }
    }

    /// More of the stream whose transfer hangs (the last one started): `chunks` chunks, then, if `end`, its end.
    func feed(chunks: Int, from first: Int, end: Bool) {
        let delegate = state.withLock { s -> (any TransferDelegate)? in
            guard let id = s.hanging.keys.max(by: { $0.rawValue < $1.rawValue }) else { return nil }
            return end ? s.hanging.removeValue(forKey: id) : s.hanging[id]
        }
        guard let delegate else { return }
        for i in first..<(first + chunks) {
            delegate.transferDidReceiveBody(Array("data: \(Self.chunk(i))\n\n".utf8))
        }
        if end {
            delegate.transferDidReceiveBody(Array("data: [DONE]\n\n".utf8))
            delegate.transferDidComplete(Result<Void, TransportError>.success(()))
        }
    }

    /// One raw SSE event (`data: EVENT`) into the stream whose transfer hangs.
    func feed(event: String) {
        let delegate = state.withLock { s in s.hanging.keys.max(by: { $0.rawValue < $1.rawValue }).map { s.hanging[$0]! } }
        delegate?.transferDidReceiveBody(Array("data: \(event)\n\n".utf8))
    }

    func resume(_ id: TransferID) {
        let paused = state.withLock { s in
            s.resumed += 1
            return s.paused.removeValue(forKey: id)
        }
        if let paused { pump(id, paused.delegate, paused.rest, paused.end) }
    }

    func cancel(_ id: TransferID) {
        let delegate = state.withLock { s -> (any TransferDelegate)? in
            s.cancelled.append(id)
            let paused = s.paused.removeValue(forKey: id)?.delegate
            return s.hanging.removeValue(forKey: id) ?? paused
        }
        delegate?.transferDidComplete(.failure(TransportError(kind: .cancelled, detail: "cancelled")))
    }

    static let completion = #"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","#
        + #""choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"#
        + #""usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#
    static func chunk(_ i: Int) -> String {
        #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"#
            + #""delta":{"content":"t\#(i)"},"finish_reason":null}]}"#
    }

    static let overloaded = #"{"error":{"message":"overloaded","type":"server_error","code":null}}"#
}

/// The daemon's call path in-process: a `ConnectionHandler` on an `EmbeddedChannel`, the scripted engine for
/// the provider, virtual time for both the event loop's timers and the resilience clock. No processes, no
/// sockets, no sleeps.
struct InProcessDaemon {
    let loop = EmbeddedEventLoop()
    let channel: EmbeddedChannel
    let engine = ScriptedEngine()
    let clock = ManualClock()
    let shared: DaemonContext

    /// Provider `p` (with the lines of `providerYAML` under it) and a healthy `q`; routes `solo: [p]` and
    /// `chain: [p, q]`.
    ///
    /// `policyYAML`: a policy in force (the connection's peer is uid 0); `qYAML`: lines under provider `q`.
    /// `limitsYAML`: a `limits:` block's lines.
    init(providerYAML: String = "retry_config: {retry_count: 2, backoff_base: 100ms, jitter: false}",
         qYAML: String = "", policyYAML: String? = nil, limitsYAML: String = "") throws {
        let config = try ConfigLoader.parse("""
            providers:
              p:
                kind: openai
                base_url: "http://p.invalid/v1"
                api_key_env: KEY
                \(providerYAML.replacingOccurrences(of: "\n", with: "\n    "))
              q:
                kind: openai
                base_url: "http://q.invalid/v1"
                api_key_env: KEY
                \(qYAML.replacingOccurrences(of: "\n", with: "\n    "))
            routes:
              solo: [{provider: p, model: m}]
              chain: [{provider: p, model: m}, {provider: q, model: m2}]
              narrow: {targets: [{provider: p, model: m}, {provider: q, model: m2}], fallback_on: [transient]}
            \(limitsYAML.isEmpty ? "" : "limits:\n  " + limitsYAML.replacingOccurrences(of: "\n", with: "\n  "))
            """)
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let router = Router(config: config, environment: ["KEY": "sk-test"])
        var governance: GovernanceRegistry?
        if let policyYAML { governance = try GovernanceRegistry(policy: PolicyLoader.parse(policyYAML), clock: clock) }
        shared = DaemonContext(router: router, engine: engine, stats: DaemonStats(), logger: logger,
                               resilience: ResilienceRegistry(clock: clock, logger: logger),
                               governance: governance, auditWriter: nil)
        let peer = policyYAML == nil ? nil : PeerCredentials(uid: 0, gid: 0, pid: 4242)
        channel = EmbeddedChannel(handler: ConnectionHandler(shared: shared, peer: peer), loop: loop)
    }

    /// HELLO, answered. `startedNotices`: the client asks for STARTED before each call's first request;
    /// `streamWindow`: for flow control, with this much credit per call.
    func hello(token: String? = nil, startedNotices: Bool = false, streamWindow: UInt32? = nil) throws -> Hello {
        try send(Hello.client(credential: token.map { Array($0.utf8) }, clientName: "in-process",
                              startedNotices: startedNotices, streamWindow: streamWindow).frame())
        return try Hello(frame: try #require(try next()))
    }

    /// Nothing is held once no call is in flight: no key reservation, probe slot, budget hold or agent slot, and
    /// the daemon counts no call in flight. A hold given back twice shows too (keys below zero).
    func expectNothingHeld(agent: String = "-", _ comment: Comment? = nil,
                           sourceLocation: SourceLocation = #_sourceLocation) {
        let held = shared.resilience.outstandingHolds()
        #expect(held.keys == 0 && held.probes == 0, "keys \(held.keys), probes \(held.probes). \(comment ?? "")",
                sourceLocation: sourceLocation)
        if let governance = shared.governance {
            let g = governance.outstandingHolds(agent: agent)
            #expect(g.budgets == 0 && g.inFlight == 0, "budget holds \(g.budgets), agent slots \(g.inFlight)",
                    sourceLocation: sourceLocation)
        }
        #expect(shared.stats.callsInFlight.load(ordering: .relaxed) == 0, sourceLocation: sourceLocation)
    }

    /// Hands `frame` to the daemon and lets the loop run what it queued.
    func send(_ frame: Frame) throws {
        try channel.writeInbound(frame)
        loop.run()
    }

    /// A call on `route` with a one-message body, as the shim sends it.
    func call(_ streamID: StreamID, route: String = "solo", stream: Bool = false, action: String? = nil,
              maxTokens: Int? = nil) throws {
        try send(CallRequest(route: route, stream: stream, action: action, tenant: action == nil ? nil : "acme")
            .frame(streamID: streamID))
        let limit = maxTokens.map { #","max_tokens":\#($0)"# } ?? ""
        try send(.data(streamID: streamID, Array(#"{"messages":[{"role":"user","content":"hi"}]\#(limit)}"#.utf8),
                       endStream: true))
    }

    /// Moves both clocks on and runs the timers that came due.
    func advance(by d: Duration) {
        clock.advance(by: d)
        loop.advanceTime(by: .nanoseconds(d.nanoseconds))
    }

    func next() throws -> Frame? {
        try channel.readOutbound(as: Frame.self)
    }

    /// Every frame the daemon has written since the last read.
    func drain() throws -> [Frame] {
        var frames: [Frame] = []
        while let f = try next() { frames.append(f) }
        return frames
    }
}

@Suite struct CallPathInProcessTests {
    @Test func aPlainCallIsAnswered() throws {
        let d = try InProcessDaemon()
        #expect(try d.hello().version != nil)
        try d.call(1)
        let frames = try d.drain()
        #expect(frames.map(\.type) == [.response, .data, .trailers], "\(frames.map(\.type))")
        let head = try CallResponse(frame: frames[0])
        #expect(head.provider == "p" && head.model == "m" && head.status == 200 && head.attempts == 1)
        #expect(try CallTrailers(frame: frames[2]).totalTokens == 4)
        #expect(d.engine.startedCount == 1)
    }

    /// A 503 is retried after its backoff, in virtual time: not a nanosecond before (100 ms, no jitter).
    @Test func a503IsRetriedAfterItsBackoff() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.status(503, body: ScriptedEngine.overloaded)])
        try d.call(1)
        #expect(try d.drain().isEmpty)
        #expect(d.engine.startedCount == 1)
        d.advance(by: .milliseconds(99))
        #expect(d.engine.startedCount == 1, "the retry waits out its backoff")
        d.advance(by: .milliseconds(1))
        #expect(d.engine.startedCount == 2)
        let frames = try d.drain()
        #expect(frames.map(\.type) == [.response, .data, .trailers])
        #expect(try CallResponse(frame: frames[0]).attempts == 2)
    }

    /// CANCEL during the backoff: the retry never goes out.
    @Test func cancelDuringTheBackoffStopsTheRetry() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.status(503, body: ScriptedEngine.overloaded)])
        try d.call(1)
        try d.send(.cancel(streamID: 1))
        d.advance(by: .seconds(1))
        #expect(d.engine.startedCount == 1)
        #expect(try d.drain().allSatisfy { $0.type != .response })
    }

    /// CANCEL while the attempt is in flight: the engine is told to stop it.
    @Test func cancelInFlightCancelsTheTransfer() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.hang])
        try d.call(1)
        #expect(d.engine.startedCount == 1 && d.engine.cancelledCount == 0)
        try d.send(.cancel(streamID: 1))
        #expect(d.engine.cancelledCount == 1)
        d.advance(by: .seconds(1))
        #expect(d.engine.startedCount == 1)
    }
    /// With a fallback ready, a transient failure is retried here at once (max_retry_wait 0): no time passes.
    @Test func withAFallbackReadyARetryGoesOutAtOnce() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.status(503, body: ScriptedEngine.overloaded)])
        try d.call(1, route: "chain")
        #expect(d.engine.hosts == ["p.invalid", "p.invalid"], "retried on the primary without a backoff")
        #expect(try d.drain().map(\.type) == [.response, .data, .trailers])
    }

    /// A 429 asking for a second, with a fallback ready: the call moves on at once instead of napping.
    @Test func aRetryAfterSendsTheCallToAReadyFallback() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.status(429, body: #"{"error":{"message":"slow down","type":"requests"}}"#,
                                 headers: [HTTPHeader(name: "retry-after", value: "1")])])
        try d.call(1, route: "chain")
        #expect(d.engine.hosts == ["p.invalid", "q.invalid"])
        let frames = try d.drain()
        #expect(try CallResponse(frame: frames[0]).provider == "q")
    }

    /// Alone, a 429 with Retry-After is waited out and tried again, beyond retry_count (0 here); a call that
    /// runs out of time on it ends RATE_LIMITED with the wait, never as a raw 429.
    @Test func aRateLimitIsPacedWithinTheDeadlineThenRateLimited() throws {
        let d = try InProcessDaemon(providerYAML: "retry_config: {retry_count: 0}")
        _ = try d.hello()
        let limited = ScriptedEngine.Answer.status(429, body: #"{"error":{"message":"slow down","type":"requests"}}"#,
                                                  headers: [HTTPHeader(name: "retry-after", value: "1")])
        d.engine.script([limited, limited])
        try d.call(1)
        d.advance(by: .milliseconds(999))
        #expect(d.engine.startedCount == 1)
        d.advance(by: .milliseconds(1))
        #expect(d.engine.startedCount == 2, "waited the provider's second, then tried again")
        d.advance(by: .seconds(1))
        #expect(d.engine.startedCount == 3)
        #expect(try d.drain().map(\.type) == [.response, .data, .trailers])

        // With a 1.5 s deadline the second wait would pass it: RATE_LIMITED, with the wait.
        d.engine.script([limited, limited])
        try d.send(CallRequest(route: "solo", timeoutMs: 1500).frame(streamID: 3))
        try d.send(.data(streamID: 3, Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8), endStream: true))
        d.advance(by: .seconds(1))
        let error = try ErrorMessage(frame: try #require(try d.drain().last))
        #expect(error.code == .rateLimited && error.retryAfterMs == 1000, "\(error)")
    }

    /// A local configuration failure: not retried, not counted against the provider, CONFIGURATION_ERROR.
    @Test func aLocalConfigurationErrorIsNeitherRetriedNorCounted() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.transport(TransportError(kind: .localConfiguration, curlCode: 77,
                                                   detail: "error setting certificate file: /x.pem"))])
        try d.call(1)
        let error = try ErrorMessage(frame: try #require(try d.drain().last))
        #expect(error.code == .configurationError)
        #expect(d.engine.startedCount == 1)
        let counters = d.shared.resilience.counterReport().first { $0.provider == "p" }?.counters
        #expect(counters?.firstAttempts == 0 && counters?.retries == 0 && counters?.breakerOpenings == 0)
    }

    /// failure_threshold failed calls in a row open the breaker; the next call is refused without an attempt.
    @Test func failedCallsInARowOpenTheBreakerAndItSkipsTheTarget() throws {
        let d = try InProcessDaemon(providerYAML: """
            retry_config: {retry_count: 0}
            circuit_breaker: {failure_threshold: 2}
            """)
        _ = try d.hello()
        let failure = ScriptedEngine.Answer.status(503, body: ScriptedEngine.overloaded)
        d.engine.script([failure, failure])
        try d.call(1)
        try d.call(3)
        #expect(d.engine.startedCount == 2)
        try d.call(5)
        #expect(d.engine.startedCount == 2, "the open breaker skipped the target")
        let last = try ErrorMessage(frame: try #require(try d.drain().last))
        #expect(last.code == .upstreamUnavailable && last.message.contains("circuit breaker open"), "\(last)")
    }

    /// A retry budget with no room (ratio 0, no floor): the first failure is final.
    @Test func anEmptyRetryBudgetRefusesTheRetry() throws {
        let d = try InProcessDaemon(providerYAML: "retry_budget: {ratio: 0, min_retries_per_second: 0}")
        _ = try d.hello()
        d.engine.script([.status(503, body: ScriptedEngine.overloaded)])
        try d.call(1)
        d.advance(by: .seconds(5))
        #expect(d.engine.startedCount == 1)
        let error = try ErrorMessage(frame: try #require(try d.drain().last))
        #expect(error.message.contains("retry budget exhausted"), "\(error.message)")
        #expect(d.shared.resilience.counterReport().first?.counters.retriesRefused == 1)
    }
}
