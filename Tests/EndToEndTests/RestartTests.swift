import BreakwaterClient
import FakeProviderKit
import Foundation
import GRDB
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A daemon that dies (SIGKILL, as a crash would) and comes back: calls that had not reached a provider are sent
/// again by the client shim and succeed; calls that had fail at once with `.daemonRestarted`; open breakers and
/// pending approvals come back from the state store.
@Suite(.serialized, .timeLimit(.minutes(2))) struct RestartTests {
    /// A client that keeps trying to reconnect for a few seconds, long enough for a daemon to come back.
    static func patientClient(_ d: DaemonUnderTest, credential: String? = nil) -> BreakwaterClient {
        var c = BreakwaterClient.Configuration(socketPath: d.socket, credential: credential.map { Array($0.utf8) },
                                               clientName: "restart-test")
        c.reconnectAttempts = 12
        c.reconnectBackoffMs = 50
        return BreakwaterClient(configuration: c)
    }

    static func result(_ work: @escaping @Sendable () async throws -> BreakwaterResponse)
        -> Task<Result<BreakwaterResponse, BreakwaterError>, Never> {
        Task {
            do { return .success(try await work()) } catch let e as BreakwaterError { return .failure(e) } catch {
                return .failure(BreakwaterError(.protocolViolation, "\(error)"))
            }
        }
    }

    /// A daemon whose provider allows one request a minute, and calls may wait for it (up to 300 s): a call after
    /// the first waits inside the daemon, paced, without reaching the provider.
    static func pacedDaemon() async throws -> DaemonUnderTest {
        try await DaemonUnderTest.start(providerOptions: """
                  max_retry_wait: 300s
                rate_limits: {rpm: 1}
            """)
    }

    /// Waits until the daemon's `status` says `count` calls are in flight.
    static func callsInFlight(_ d: DaemonUnderTest, _ count: Int) async throws -> Bool {
        let admin = d.client(name: "admin")
        return try await waitUntil {
            let status = try JSONSerialization.jsonObject(with: Data(try await admin.admin("status"))) as? [String: Any]
            return status?["calls_in_flight"] as? Int == count
        }
    }

    /// Waits until the daemon's state store holds a row that `sql` counts (the store writes within a second).
    static func waitForRow(_ d: DaemonUnderTest, _ sql: String) async throws -> Bool {
        try await waitUntil(timeout: .seconds(5)) {
            guard FileManager.default.fileExists(atPath: d.dir + "/state/breakwater.sqlite") else { return false }
            let db = try stateDatabase(d.dir + "/state/breakwater.sqlite")
            return try await db.read { try Int.fetchOne($0, sql: sql) ?? 0 } > 0
        }
    }

    @Test func aCrashFailsNoCallThatHadNotStartedUpstream() async throws {
        // One request a minute: the second call waits inside the daemon, paced, without reaching the provider.
        let d = try await Self.pacedDaemon()
        defer { d.stop() }
        let client = Self.patientClient(d)
        d.fake.script([FaultStep(delayFirstByteMs: 60_000)])
        let inFlight = Self.result { try await client.send(route: "default", body: chat("in flight"), timeoutMs: 90_000) }
        #expect(try await waitUntil { d.fake.stats().requests == 1 })
        let paced = Self.result { try await client.send(route: "default", body: chat("paced"), timeoutMs: 90_000) }
        #expect(try await Self.callsInFlight(d, 2), "both calls are in the daemon")

        d.daemon.signal(SIGKILL)
        _ = try await d.daemon.waitForExit()
        let killedAt = ContinuousClock.now
        // The call that was upstream fails at once, saying why; it is not sent again (it may have reached the
        // provider).
        guard case .failure(let e) = await inFlight.value else {
            Issue.record("the in-flight call cannot have succeeded")
            return
        }
        #expect(e.kind == .daemonRestarted, "\(e)")
        #expect(ContinuousClock.now - killedAt < .seconds(5))

        try d.respawn()
        // The paced call never reached the provider: the shim sends it again to the new daemon, and it succeeds.
        guard case .success(let r) = await paced.value else {
            Issue.record("the paced call failed: \(await paced.value)")
            return
        }
        #expect(content(r.body) == "Echo: paced")
        #expect(d.fake.stats().requests == 2, "each call reached the provider once")
    }

    /// The same for a streamed call: one that had not started is opened again on the new daemon and streams.
    @Test func aStreamNotStartedIsSentAgain() async throws {
        let d = try await Self.pacedDaemon()
        defer { d.stop() }
        let client = Self.patientClient(d)
        _ = try await client.send(route: "default", body: chat("takes the minute's only slot"))
        let streamed = Task { () throws -> String in
            let s = try await client.stream(route: "default", body: chat("paced stream"), timeoutMs: 90_000)
            var text = ""
            for try await chunk in s { text += content(chunk) ?? "" }
            return text
        }
        #expect(try await Self.callsInFlight(d, 1), "the stream waits in the daemon")
        d.daemon.signal(SIGKILL)
        _ = try await d.daemon.waitForExit()
        try d.respawn()
        #expect(try await streamed.value == "Echo: paced stream")
        #expect(d.fake.stats().requests == 2)
    }

    @Test func anOpenBreakerIsStillOpenAfterACrash() async throws {
        let d = try await DaemonUnderTest.start(
            providerOptions: "    circuit_breaker: {failure_threshold: 1, timeout_period: 60s}", withStateDirectory: true)
        defer { d.stop() }
        d.fake.script([FaultStep(status: 503), FaultStep(status: 503), FaultStep(status: 503)])
        _ = try? await d.client().send(route: "default", body: chat("opens the breaker"))
        #expect(try await Self.waitForRow(d, "SELECT COUNT(*) FROM open_breakers WHERE target = 'fake/gpt-4o-mini'"))

        d.daemon.signal(SIGKILL)
        _ = try await d.daemon.waitForExit()
        try d.respawn()
        let client = Self.patientClient(d)
        let answer = try await client.admin("breakers")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any])
        let breaker = try #require((o["breakers"] as? [[String: Any]])?.first, "\(o)")
        #expect(breaker["state"] as? String == "open")
        #expect((breaker["reopens_in_ms"] as? Int ?? 0) > 45_000, "\(breaker)")
        // Calls still skip the dead target without touching it.
        let before = d.fake.stats().requests
        await #expect { _ = try await client.send(route: "default", body: chat("x")) } throws: { e in
            (e as? BreakwaterError)?.code == .upstreamUnavailable
        }
        #expect(d.fake.stats().requests == before)
        #expect(d.daemon.output.contains("restored open"), "\(d.daemon.output)")
    }

    /// An approval is in the state store before the caller hears "pending"; after a crash (SIGKILL) or a graceful
    /// stop (SIGTERM: the waiting call is handed back at once instead of holding the drain open) the shim sends the
    /// call again (it never reached a provider) with the same request id, and it waits on the same approval.
    @Test(arguments: [SIGKILL, SIGTERM])
    func aPendingApprovalSurvivesARestart(signal: Int32) async throws {
        let d = try await DaemonUnderTest.start(policy: GovernanceE2ETests.policy(approvalTimeout: "60s"),
                                                withStateDirectory: true)
        defer { d.stop() }
        let client = Self.patientClient(d, credential: GovernanceE2ETests.refundToken)
        let ids = IDBox()
        let call = Self.result {
            try await client.send(route: "default", body: chat("refund"), action: "refund.issue", tenant: "acme",
                                  onNotice: { ids.add($0.approvalID ?? "") })
        }
        #expect(try await waitUntil { ids.count == 1 })
        let id = ids.all[0]
        // Written before the NOTICE went out: no waiting needed.
        let db = try stateDatabase(d.dir + "/state/breakwater.sqlite")
        let stored = try await db.read {
            try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM pending_approvals WHERE id = ?", arguments: [id])
        }
        #expect(stored == 1)

        d.daemon.signal(signal)
        let stopping = ContinuousClock.now
        _ = try await d.daemon.waitForExit()
        #expect(ContinuousClock.now - stopping < .seconds(10), "the waiting call did not hold the drain open")
        try d.respawn()
        // The call came back to the same approval (a second NOTICE with the same id), and an approver sees it.
        #expect(try await waitUntil { ids.count == 2 })
        #expect(ids.all[1] == id)
        let cli = try ChildProcess(binDir + "/breakwater", ["approvals", "--json", "--socket", d.socket],
                                   logPath: d.dir + "/approvals.log")
        #expect(try await cli.waitForExit() == 0)
        #expect(cli.output.contains(id), "\(cli.output)")
        let approve = try ChildProcess(binDir + "/breakwater", ["approve", id, "--socket", d.socket],
                                       logPath: d.dir + "/approve.log")
        #expect(try await approve.waitForExit() == 0, "\(approve.output)")
        guard case .success(let r) = await call.value else {
            Issue.record("the approved call failed: \(await call.value)")
            return
        }
        #expect(content(r.body) == "Echo: refund")
        #expect(d.fake.stats().requests == 1)
    }
}


/// The daemon's state store, read by a test while the daemon writes it: waits for the daemon's lock rather than
/// failing at once.
func stateDatabase(_ path: String) throws -> DatabaseQueue {
    var configuration = Configuration()
    configuration.busyMode = .timeout(5)
    configuration.readonly = true
    return try DatabaseQueue(path: path, configuration: configuration)
}
