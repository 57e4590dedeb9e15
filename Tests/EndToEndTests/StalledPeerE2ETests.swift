import BreakwaterClient
import Foundation
import Testing

/// Stalled and surplus peers against the real daemon on its Unix socket: a silent connection, a frame cut in its
/// header, a frame header whose payload never comes, and one connection over the per-uid cap each get their documented ERROR and are closed; a request body
/// that never ends fails its call with TIMEOUT and the connection goes on; meanwhile a healthy connection's calls
/// keep their latency and the daemon's memory stays near idle. (Every timing edge is covered in virtual time by
/// `StalledPeerTests`.)
@Suite(.serialized, .timeLimit(.minutes(1))) struct StalledPeerE2ETests {
    @Test func stalledAndSurplusPeersAreClosedWithTheirCodes() async throws {
        let d = try await DaemonUnderTest.start(extraConfig: """
            limits:
              hello_timeout: 1s
              frame_timeout: 1s
              max_connections_per_uid: 5
            """)
        defer { d.stop() }
        let healthy = d.client()
        var usual: [Duration] = []
        for _ in 0..<5 {  // connection 1 of 5
            let t = ContinuousClock.now
            _ = try await healthy.send(route: "default", body: chat("before"))
            usual.append(ContinuousClock.now - t)
        }
        let typical = usual.sorted()[2]
        let baseline = residentMB(d.daemon.pid)

        func expectClosed(_ c: RawConnection, with code: ErrorCode, within limit: Duration,
                          _ what: String) throws {
            let start = ContinuousClock.now
            let frame = try #require(try c.read(), "\(what): an ERROR before the close")
            let took = ContinuousClock.now - start
            let error = try ErrorMessage(frame: frame)
            #expect(frame.streamID == 0 && error.code == code, "\(what): \(error)")
            #expect(took < limit, "\(what): after \(took)")
            #expect(try c.isClosedByPeer(), "\(what)")
        }

        let silent = try RawConnection(path: d.socket)  // 2
        let cut = try RawConnection(path: d.socket)  // 3
        try cut.hello()
        cut.write(Array(Frame.ping(7).encoded().prefix(6)))
        let noPayload = try RawConnection(path: d.socket)  // 4
        try noPayload.hello()
        let request = CallRequest(route: "default").frame(streamID: 1).encoded()
        noPayload.write(Array(request.prefix(FrameHeader.size + 3)))
        let stuckBody = try RawConnection(path: d.socket)  // 5
        try stuckBody.hello()
        stuckBody.write(CallRequest(route: "default", stream: false, timeoutMs: 1000).frame(streamID: 1))
        stuckBody.write(.data(streamID: 1, Array(#"{"messages":"#.utf8)))  // and never the rest
        let during = ContinuousClock.now
        _ = try await healthy.send(route: "default", body: chat("during"))
        let duringTook = ContinuousClock.now - during
        try expectClosed(silent, with: .stalled, within: .seconds(3), "no HELLO")
        try expectClosed(cut, with: .stalled, within: .seconds(3), "a frame cut in its header")
        try expectClosed(noPayload, with: .stalled, within: .seconds(3), "a header and 3 bytes of its payload")
        let timedOut = try #require(try stuckBody.read(), "a body that never ends: its call's ERROR")
        #expect(timedOut.type == .error && timedOut.streamID == 1)
        #expect(try ErrorMessage(frame: timedOut).code == .timeout)
        stuckBody.write(Frame.ping(9))
        #expect(try stuckBody.read()?.type == .pong, "the connection itself goes on")

        let second = try RawConnection(path: d.socket)  // 2 again
        let third = try RawConnection(path: d.socket)  // 3
        let fourth = try RawConnection(path: d.socket)  // 4
        for c in [second, third, fourth] { try c.hello() }
        let sixth = try RawConnection(path: d.socket)
        try expectClosed(sixth, with: .tooManyConnections, within: .seconds(1), "a sixth connection of this uid")

        let t = ContinuousClock.now
        let after = try await healthy.send(route: "default", body: chat("after"))
        let afterTook = ContinuousClock.now - t
        #expect(after.head.status == 200, "the healthy connection carried on")
        let grew = residentMB(d.daemon.pid) - baseline
        print("stalled peers: a healthy call took \(typical) usually, \(duringTook) beside them, \(afterTook) after; "
              + "daemon RSS +\(grew) MB")
        for took in [duringTook, afterTook] {
            #expect(took < typical * 5 + .milliseconds(100), "a healthy call took \(took), usually \(typical)")
        }
        #expect(grew <= 16)
    }
}
