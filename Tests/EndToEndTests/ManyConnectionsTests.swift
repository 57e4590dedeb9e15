import BreakwaterClient
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Over a thousand connections at once against a daemon started with systemd's default soft limit of 1,024 open
/// files: it raises its limit to the hard one, answers every HELLO, and a healthy connection's calls go on.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ManyConnectionsTests {
    /// This process's open-file limit raised to its hard limit (the test itself holds every connection).
    static func raisedOwnLimit() -> Int {
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(resource, &limit)
        return Int(min(limit.rlim_max, 1 << 20))
    }

    @Test func overAThousandConnectionsAtOnce() async throws {
        // 1,020: past what a soft limit of 1,024 leaves once the daemon's own files are open, within
        // max_connections_per_uid (1,024) with the healthy connection; never more than this process can hold.
        let count = min(1020, Self.raisedOwnLimit() - 100)
        let d = try await DaemonUnderTest.start(wrap: { exe, args in
            ("/bin/sh", ["-c", "ulimit -Sn 1024 && exec \"$0\" \"$@\"", exe] + args)
        })
        defer { d.stop() }
        let healthy = d.client()
        var usual: [Duration] = []
        for _ in 0..<5 {
            let t = ContinuousClock.now
            _ = try await healthy.send(route: "default", body: chat("before"))
            usual.append(ContinuousClock.now - t)
        }
        let typical = usual.sorted()[2]
        let baseline = residentMB(d.daemon.pid)

        var connections: [RawConnection] = []
        for _ in 0..<count {
            let c = try RawConnection(path: d.socket)
            c.write(Hello.client(clientName: "many").frame())
            connections.append(c)
        }
        let start = ContinuousClock.now
        let during = try await healthy.send(route: "default", body: chat("during"))
        let took = ContinuousClock.now - start
        #expect(during.head.status == 200)
        var greeted = 0
        for c in connections {
            guard try c.read()?.type == .hello else { break }  // one unanswered is enough (each read waits 10 s)
            greeted += 1
        }
        #expect(greeted == count, "\(greeted) of \(count) connections got the daemon's HELLO")
        let log = (try? String(contentsOfFile: d.dir + "/daemon.log", encoding: .utf8)) ?? ""
        #expect(log.contains("raised the open-file limit"), "the daemon raised its soft limit of 1024")
        let grew = residentMB(d.daemon.pid) - baseline
        print("many connections: \(greeted) of \(count) answered HELLO at once; a call meanwhile took \(took) "
              + "(usually \(typical)); daemon RSS +\(grew) MB with them open")
        // Answering 1,020 HELLOs at once is work on the same event loops: the call waits its turn, within reason.
        #expect(took < typical * 5 + .milliseconds(500), "a healthy call took \(took), usually \(typical)")
        #expect(grew <= 64, "each idle connection costs the daemon a little: \(grew) MB for \(count)")
        connections.removeAll()
        let after = try await healthy.send(route: "default", body: chat("after"))
        #expect(after.head.status == 200)
    }
}
