import BreakwaterClient
import Foundation
import JournalTestKit
import RedisTestKit
import Testing

/// The cluster store lost and regained, seen by a real daemon in front of a real redis-server, with its audit
/// trail in a real systemd-journald: one entry at warning when the store goes, one when it comes back, `breakwater
/// status` saying so meanwhile, and calls served on the local share without waiting on the store.
@Suite(.serialized, .timeLimit(.minutes(3))) struct FleetE2ETests {
    static let degradedID = "93fdd636161a4f3d8bc2e57709596bc3"
    static let restoredID = "fd9c98069b9143ce96b025a8eab46408"

    func cluster(_ d: DaemonUnderTest) async throws -> [String: Any] {
        try await d.status()["cluster"] as? [String: Any] ?? [:]
    }

    @Test func losingTheStoreIsAuditedShownAndReversed() async throws {
        let redis = try RedisUnderTest()
        defer { redis.stop() }
        try await JournalHarness.withHarness { journal in
            let d = try await DaemonUnderTest.start(
                extraConfig: "cluster:\n  redis: unix://\(redis.socket)\n  timeout: 100ms\n  daemon_id: e2e-host",
                providerOptions: "    rate_limits: {rpm: 6000, scope: cluster}", wrap: { journal.command($0, $1) })
            defer { d.stop() }
            let client = d.client()
            _ = try await client.send(route: "default", body: chat("through the store"))
            var c = try await cluster(d)
            #expect(c["reachable"] as? Bool == true)
            #expect(c["live_daemons"] as? Int == 1)
            #expect((c["leases"] as? [[String: Any]])?.first?["provider"] as? String == "fake")

            redis.stop()
            let lost = try await journal.waitForEntries(count: 1, matching: ["MESSAGE_ID": Self.degradedID])
            #expect(lost.first?.priority == 4)
            #expect(lost.first?["CLUSTER_STORE"] == "unix://" + redis.socket)
            #expect(lost.first?["FALLBACK_SHARE"] == "1.000")  // the only daemon it saw
            #expect(lost.first?["REASON"]?.contains("cluster store") == true)
            c = try await cluster(d)
            #expect(c["reachable"] as? Bool == false)
            // Served on the local share; none waits on the store that is gone.
            for i in 0..<20 {
                let started = ContinuousClock.now
                _ = try await client.send(route: "default", body: chat("local \(i)"))
                #expect(ContinuousClock.now - started < .seconds(1))
            }

            try redis.start()
            let back = try await journal.waitForEntries(count: 1, matching: ["MESSAGE_ID": Self.restoredID])
            #expect(back.first?.priority == 5)
            #expect((back.first?["DEGRADED_MS"]).flatMap { Int($0) }.map { $0 > 0 } == true)
            c = try await cluster(d)
            #expect(c["reachable"] as? Bool == true)
            #expect(c["outages"] as? Int == 1)
            _ = try await client.send(route: "default", body: chat("through the store again"))
            // The degraded period, both ends, in the audit trail; and never the key.
            #expect(try journal.count(matching: ["MESSAGE_ID": Self.degradedID]) == 1)
            d.assertNoSecretsInLog()
        }
    }
}
