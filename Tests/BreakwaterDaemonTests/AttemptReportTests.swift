@testable import BreakwaterDaemon
import BreakwaterWire
import CurlTransport
import Testing

/// A failed call's ERROR lists every target it tried or skipped (PROTOCOL.md, ERROR's `attempts`), typed: what
/// happened, the failure's class, the status, the wait chosen and what the daemon did next.
@Suite struct AttemptReportTests {
    @Test func aRetriedThenFailedCallListsEachAttempt() throws {
        let d = try InProcessDaemon(providerYAML: "retry_config: {retry_count: 1, backoff_base: 100ms, jitter: false}")
        _ = try d.hello()
        d.engine.script([.status(503, body: ScriptedEngine.overloaded), .status(503, body: ScriptedEngine.overloaded)])
        try d.call(1)
        d.advance(by: .milliseconds(100))
        let error = try ErrorMessage(frame: try #require(try d.drain().first { $0.type == .error }))
        #expect(error.code == .upstreamError && error.upstreamStatus == 503)
        #expect(error.attempts.count == 2, "\(error.attempts)")
        let (first, second) = (error.attempts[0], error.attempts[1])
        #expect(first.provider == "p" && first.model == "m")
        #expect(first.outcome == "error_status" && first.failure == "transient" && first.upstreamStatus == 503)
        #expect(first.then == "retried" && first.waitMs == 100)
        #expect(second.then == "gave_up" && second.waitMs == nil)
        #expect(!first.retryBudgetRefused)
    }

    /// Along a chain: the primary's failure moved on to the fallback, whose failure ended the call.
    @Test func aChainListsAMoveOn() throws {
        let d = try InProcessDaemon(providerYAML: "retry_config: {retry_count: 0}",
                                    qYAML: "retry_config: {retry_count: 0}")
        _ = try d.hello()
        d.engine.script([.transport(.init(kind: .connectFailed, detail: "refused")),
                         .status(503, body: ScriptedEngine.overloaded)])
        try d.call(1, route: "chain")
        let error = try ErrorMessage(frame: try #require(try d.drain().first { $0.type == .error }))
        #expect(error.attempts.map(\.provider) == ["p", "q"], "\(error.attempts)")
        #expect(error.attempts.map(\.model) == ["m", "m2"])
        #expect(error.attempts[0].outcome == "unreachable" && error.attempts[0].then == "moved_on")
        #expect(error.attempts[0].upstreamStatus == nil)
        #expect(error.attempts[1].outcome == "error_status" && error.attempts[1].upstreamStatus == 503)
        #expect(error.attempts[1].then == "gave_up")
        // And the bytes say the same after a round trip.
        let again = try ErrorMessage(frame: error.frame(streamID: 1))
        #expect(again.attempts == error.attempts)
    }
}
