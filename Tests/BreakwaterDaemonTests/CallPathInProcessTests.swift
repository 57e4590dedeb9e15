@testable import BreakwaterDaemon
import BreakwaterWire
import Config
import CurlTransport
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
        case status(Int, body: String)
        /// No answer until the transfer is cancelled.
        case hang
    }

    private struct State {
        var script: [Answer] = []
        var started: [HTTPRequest] = []
        var cancelled: [TransferID] = []
        var hanging: [TransferID: any TransferDelegate] = [:]
        var next: UInt64 = 1
    }

    private let state = Mutex(State())

    func script(_ answers: [Answer]) {
        state.withLock { $0.script += answers }
    }

    var startedCount: Int { state.withLock { $0.started.count } }
    var cancelledCount: Int { state.withLock { $0.cancelled.count } }

    func start(_ request: HTTPRequest, delegate: any TransferDelegate) -> TransferID {
        let (id, answer) = state.withLock { s -> (TransferID, Answer) in
            s.started.append(request)
            let id = TransferID(rawValue: s.next)
            s.next += 1
            let answer = s.script.isEmpty ? .status(200, body: Self.completion) : s.script.removeFirst()
            if case .hang = answer { s.hanging[id] = delegate }
            return (id, answer)
        }
        if case .status(let status, let body) = answer {
            delegate.transferDidReceiveHead(status: status, headers: [HTTPHeader(name: "content-type",
                                                                                 value: "application/json")])
            delegate.transferDidReceiveBody(Array(body.utf8))
            delegate.transferDidComplete(.success(()))
        }
        return id
    }

    func cancel(_ id: TransferID) {
        let delegate = state.withLock { s -> (any TransferDelegate)? in
            s.cancelled.append(id)
            return s.hanging.removeValue(forKey: id)
        }
        delegate?.transferDidComplete(.failure(TransportError(kind: .cancelled, detail: "cancelled")))
    }

    static let completion = #"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","#
        + #""choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"#
        + #""usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#
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

    init(providerYAML: String = "retry_config: {retry_count: 2, backoff_base: 100ms, jitter: false}") throws {
        let config = try ConfigLoader.parse("""
            providers:
              p:
                kind: openai
                base_url: "http://provider.invalid/v1"
                api_key_env: KEY
                \(providerYAML)
            routes:
              solo: [{provider: p, model: m}]
            """)
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let router = Router(config: config, environment: ["KEY": "sk-test"])
        let shared = DaemonContext(router: router, engine: engine, stats: DaemonStats(), logger: logger,
                                   resilience: ResilienceRegistry(clock: clock, logger: logger),
                                   governance: nil, auditWriter: nil)
        channel = EmbeddedChannel(handler: ConnectionHandler(shared: shared, peer: nil), loop: loop)
    }

    /// HELLO, answered.
    func hello() throws -> Hello {
        try send(Hello.client(clientName: "in-process").frame())
        return try Hello(frame: try #require(try next()))
    }

    /// Hands `frame` to the daemon and lets the loop run what it queued.
    func send(_ frame: Frame) throws {
        try channel.writeInbound(frame)
        loop.run()
    }

    /// A call on `route` with a one-message body, as the shim sends it.
    func call(_ streamID: StreamID, route: String = "solo") throws {
        try send(CallRequest(route: route).frame(streamID: streamID))
        try send(.data(streamID: streamID, Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8),
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
}
