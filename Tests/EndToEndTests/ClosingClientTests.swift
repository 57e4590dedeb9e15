import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

/// A client that closes its connection at every point of a call's life (issue 11, item 5): before HELLO, inside a
/// frame, with a body half sent, with the call waiting for the provider, after RESPONSE, mid-stream, and while the
/// stream is paused for it. The documented result (PROTOCOL.md, CANCEL) is that every call on the connection is
/// cancelled: a call that had not reached the provider never does, one that had is stopped upstream at once. Each
/// time the daemon ends up holding nothing (no call in flight, none paused), and a healthy connection's calls
/// keep their latency; the daemon's RSS stays near idle. Prints its figures:
/// `swift test --filter ClosingClient`.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ClosingClientTests {
    enum Point: String, CaseIterable {
        case beforeHello, midHello, afterHello, midRequestHeader, afterRequest, midBody
        case waitingForProvider, afterResponse, midStream, whilePaused

        /// The call's request reached the provider before the client closed.
        var reachedProvider: Bool {
            switch self {
            case .waitingForProvider, .afterResponse, .midStream, .whilePaused: true
            default: false
            }
        }
    }

    static func median(_ xs: [Duration]) -> Duration { xs.sorted()[xs.count / 2] }

    @Test func aClientClosingAtEveryPointLeavesNothingBehind() async throws {
        // Every answer: 300 ms to its first byte, then (streamed) 200 chunks 50 ms apart — 10 s that the provider
        // would go on sending if the daemon did not stop the call.
        let slow = Personality(name: "slow", defaultStep: FaultStep(delayFirstByteMs: 300, chunkIntervalMs: 50,
                                                                     chunks: 200))
        let d = try await DaemonUnderTest.start(fakePersonality: slow)
        defer { d.stop() }
        let pid = d.daemon.pid
        let healthy = d.client(name: "healthy")
        var idle: [Duration] = []
        for _ in 0..<5 {
            let t = ContinuousClock.now
            _ = try await healthy.send(route: "default", body: chat("healthy"))
            idle.append(ContinuousClock.now - t)
        }
        let usual = Self.median(idle)
        let baseline = residentMB(pid)
        var peak = baseline

        for point in Point.allCases {
            let before = d.fake.stats()
            try await close(at: point, d)
            // The call is over in the daemon, and upstream: nothing in flight, nothing paused, the provider's
            // request (if it got one) ended by the daemon, not completed.
            var last: (Int, Int, Int) = (-1, -1, -1)
            let settled = try await waitUntil(timeout: .seconds(5), interval: .milliseconds(50)) {
                let s = try await d.status()
                let fake = d.fake.stats()
                last = (s["calls_in_flight"] as? Int ?? -1, s["calls_waiting_for_reader"] as? Int ?? -1, fake.inFlight)
                return last == (0, 0, 0)
            }
            #expect(settled, "\(point): calls in flight, paused, provider in flight: \(last)")
            let after = d.fake.stats()
            #expect(after.requests - before.requests == (point.reachedProvider ? 1 : 0), "\(point)")
            #expect(after.completed == before.completed, "\(point): the provider's answer was not drained")
            if point.reachedProvider {
                #expect(after.aborted - before.aborted == 1, "\(point): the daemon stopped the upstream request")
            }
            let t = ContinuousClock.now
            let answer = try await healthy.send(route: "default", body: chat("healthy"))
            let took = ContinuousClock.now - t
            #expect(answer.head.status == 200)
            #expect(took < usual * 3 + .milliseconds(200), "\(point): a healthy call took \(took), usually \(usual)")
            peak = max(peak, residentMB(pid))
            print("closing client, \(point): settled; a healthy call took \(took) (usually \(usual))")
        }
        print("closing client: daemon RSS \(baseline) MB idle, \(peak) MB at most (+\(peak - baseline) MB)")
        #expect(peak - baseline <= 16)
    }

    /// Opens a connection, goes as far as `point` in one streamed call, and closes it.
    private func close(at point: Point, _ d: DaemonUnderTest) async throws {
        let conn = try RawConnection(path: d.socket)
        let hello = Hello.client(clientName: "closing", streamWindow: point == .whilePaused ? 1 : nil).frame().encoded()
        let request = CallRequest(route: "default", stream: true).frame(streamID: 1).encoded()
        let body = Frame.data(streamID: 1, chat("closing"), endStream: true).encoded()
        let requestsBefore = d.fake.stats().requests
        switch point {
        case .beforeHello:
            break
        case .midHello:
            conn.write(Array(hello.prefix(hello.count / 2)))
        default:
            conn.write(hello)
            _ = try #require(try conn.read())
        }
        switch point {
        case .beforeHello, .midHello, .afterHello:
            break
        case .midRequestHeader:
            conn.write(Array(request.prefix(5)))
        case .afterRequest:
            conn.write(request)
        case .midBody:
            conn.write(request + body.prefix(body.count / 2))
        case .waitingForProvider, .afterResponse, .midStream, .whilePaused:
            conn.write(request + body)
        }
        switch point {
        case .waitingForProvider:
            // Closed during the provider's 300 ms before its first byte.
            #expect(try await waitUntil(timeout: .seconds(5)) { d.fake.stats().requests > requestsBefore })
        case .afterResponse:
            #expect(try conn.read()?.type == .response)
        case .midStream:
            #expect(try conn.read()?.type == .response)
            for _ in 0..<3 { #expect(try conn.read()?.type == .data) }
        case .whilePaused:
            #expect(try conn.read()?.type == .response)
            #expect(try conn.read()?.type == .data)
            #expect(try await waitUntil(timeout: .seconds(5)) {
                try await d.status()["calls_waiting_for_reader"] as? Int == 1
            }, "one byte of credit: paused after the first chunk")
        default:
            break
        }
        // The connection object goes here: its socket closes.
        _ = conn
    }
}
