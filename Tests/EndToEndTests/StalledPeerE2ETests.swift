import BreakwaterClient
import Foundation
import Testing

/// Stalled and surplus peers against the real daemon on its Unix socket: a silent connection, a frame cut in its
/// header, and one connection over the per-uid cap each get their documented ERROR and are closed, while a
/// healthy connection's calls go on. (Every timing edge is covered in virtual time by `StalledPeerTests`.)
@Suite(.serialized, .timeLimit(.minutes(1))) struct StalledPeerE2ETests {
    @Test func stalledAndSurplusPeersAreClosedWithTheirCodes() async throws {
        let d = try await DaemonUnderTest.start(extraConfig: """
            limits:
              hello_timeout: 1s
              frame_timeout: 1s
              max_connections_per_uid: 4
            """)
        defer { d.stop() }
        let healthy = d.client()
        _ = try await healthy.send(route: "default", body: chat("before"))  // connection 1 of 4

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
        try expectClosed(silent, with: .stalled, within: .seconds(3), "no HELLO")
        try expectClosed(cut, with: .stalled, within: .seconds(3), "a frame cut in its header")

        let second = try RawConnection(path: d.socket)  // 2 again
        let third = try RawConnection(path: d.socket)  // 3
        let fourth = try RawConnection(path: d.socket)  // 4
        for c in [second, third, fourth] { try c.hello() }
        let fifth = try RawConnection(path: d.socket)
        try expectClosed(fifth, with: .tooManyConnections, within: .seconds(1), "a fifth connection of this uid")

        let after = try await healthy.send(route: "default", body: chat("after"))
        #expect(after.head.status == 200, "the healthy connection carried on")
    }
}
