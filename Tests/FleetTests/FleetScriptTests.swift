import Fleet
import Foundation
import RedisTestKit
import Resilience
import Synchronization
import Testing

extension RedisUnderTest {
    func settings(id: String, timeout: Duration = .milliseconds(200)) -> FleetSettings {
        FleetSettings(endpoint: .unix(path: socket, database: 0), password: nil, keyPrefix: "t:", timeout: timeout,
                      daemonID: id, heartbeat: .milliseconds(100))
    }
}

/// A value several tasks and threads update.
final class Shared<T: Sendable>: Sendable {
    private let m: Mutex<T>
    init(_ value: T) { m = Mutex(value) }
    func withLock<R>(_ body: (inout T) -> R) -> R { m.withLock { body(&$0) } }
}

/// Waits for one answer from the fleet client's thread.
func answer<T: Sendable>(_ body: (@escaping @Sendable (T) -> Void) -> Void) async -> T {
    await withCheckedContinuation { c in body { c.resume(returning: $0) } }
}

/// The cluster store's scripts against a real Redis: exact under concurrency, all-or-nothing, and a store
/// that goes away is reported, not waited on.
@Suite(.serialized) struct FleetScriptTests {
    /// Three clients (three daemons) asking for one request at a time as fast as they can, for 2 s, against
    /// 600 requests a minute with a 1 s burst: together they are granted no more than the burst plus 2 s of the
    /// rate, and each got a share.
    @Test func leasesNeverPassTheLimitAcrossClients() async throws {
        let redis = try RedisUnderTest()
        let rate = FleetRate(rpm: 600, tpm: nil, burstSeconds: 1)
        let clients = try (0..<3).map { i in try FleetClient(settings: redis.settings(id: "d\(i)"), onHealth: { _ in }) }
        let granted = Shared([0, 0, 0])
        let start = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for (i, client) in clients.enumerated() {
                group.addTask {
                    while ContinuousClock.now - start < .seconds(2) {
                        let r: Result<FleetGrant, RedisFailure> = await answer { done in
                            client.acquire("t:k", rate: rate, need: FleetUnits(requests: 1, tokens: 0),
                                           want: FleetUnits(requests: 1, tokens: 0), debtTokens: 0, done: done)
                        }
                        if case .success(let g) = r { granted.withLock { $0[i] += g.granted.requests } }
                    }
                }
            }
        }
        let elapsed = (ContinuousClock.now - start).components.seconds + 1  // rounding up
        let counts = granted.withLock { $0 }
        #expect(counts.reduce(0, +) <= 10 + Int(elapsed) * 10, "\(counts)")
        #expect(counts.reduce(0, +) >= 20, "\(counts)")
        #expect(counts.allSatisfy { $0 > 0 }, "\(counts)")
        clients.forEach { $0.shutdown() }
    }

    /// Requests and tokens are taken together or not at all: a need that fits requests but not tokens takes
    /// neither, and says how long until it fits. A lease given back can be taken again.
    @Test func allOrNothingAndGiveBack() async throws {
        let redis = try RedisUnderTest()
        let client = try FleetClient(settings: redis.settings(id: "d"), onHealth: { _ in })
        defer { client.shutdown() }
        let rate = FleetRate(rpm: 60, tpm: 6000, burstSeconds: 10)  // bursts of 10 requests, 1000 tokens
        func ask(_ r: Int, _ t: Int) async -> FleetGrant? {
            let result: Result<FleetGrant, RedisFailure> = await answer { done in
                client.acquire("t:k2", rate: rate, need: FleetUnits(requests: r, tokens: t),
                               want: FleetUnits(requests: r, tokens: t), debtTokens: 0, done: done)
            }
            return try? result.get()
        }
        let first = await ask(1, 900)
        #expect(first?.granted == FleetUnits(requests: 1, tokens: 900))
        let refused = await ask(1, 200)
        #expect(refused?.granted == FleetUnits(requests: 0, tokens: 0))
        // 100 tokens short at 100 tokens a second: about a second.
        #expect((refused?.wait ?? .zero) > .milliseconds(900) && (refused?.wait ?? .zero) <= .milliseconds(1000))
        client.giveBack("t:k2", rate: rate, FleetUnits(requests: 1, tokens: 900))
        let again = await ask(1, 1000)
        #expect(again?.granted == FleetUnits(requests: 1, tokens: 1000))
    }

    /// A need that does not fit now is granted the next slot, up to the caller's wait: slots follow one another
    /// at the limit's rate, and while later slots are out nothing is granted for now (a queue, never a burst).
    @Test func laterSlotsQueueAtTheRate() async throws {
        let redis = try RedisUnderTest()
        let client = try FleetClient(settings: redis.settings(id: "d"), onHealth: { _ in })
        defer { client.shutdown() }
        // A second a request, one at a time: the milliseconds the asking takes are small beside the slots.
        let rate = FleetRate(rpm: 60, tpm: nil, burstSeconds: 1)
        func ask(maxWait: Duration) async -> FleetGrant? {
            let result: Result<FleetGrant, RedisFailure> = await answer { done in
                client.acquire("t:q", rate: rate, need: FleetUnits(requests: 1, tokens: 0),
                               want: FleetUnits(requests: 5, tokens: 0), debtTokens: 0, maxWait: maxWait, done: done)
            }
            return try? result.get()
        }
        let t0 = ContinuousClock.now
        #expect(await ask(maxWait: .zero)?.granted.requests == 1)  // the burst
        var waits: [Duration] = []
        for _ in 0..<3 {
            let g = await ask(maxWait: .seconds(5))
            #expect(g?.granted.requests == 1)  // the need only, not the lease wanted
            waits.append(g?.wait ?? .zero)
        }
        let took = ContinuousClock.now - t0
        // The slots are 1, 2 and 3 s after the first grant: each wait is that, less the time since it, and the
        // waits are a second apart.
        #expect(waits[0] > .seconds(1) - took && waits[0] <= .seconds(1), "\(waits), asking took \(took)")
        #expect(zip(waits, waits.dropFirst()).allSatisfy { a, b in
            b - a > .milliseconds(1000) - took && b - a <= .milliseconds(1000) + took }, "\(waits), took \(took)")
        let refused = await ask(maxWait: .zero)
        #expect(refused?.granted.requests == 0 && (refused?.wait ?? .zero) > waits[2] + .seconds(1) - took,
                "\(String(describing: refused))")
        #expect(await ask(maxWait: .milliseconds(500))?.granted.requests == 0)  // the next slot is seconds off
    }

    /// Another daemon learned that only 2 requests are left: a third is refused everywhere. A rest set by one
    /// daemon holds every daemon back.
    @Test func learnedLimitsAndRestsAreShared() async throws {
        let redis = try RedisUnderTest()
        let a = try FleetClient(settings: redis.settings(id: "a"), onHealth: { _ in })
        let b = try FleetClient(settings: redis.settings(id: "b"), onHealth: { _ in })
        defer { a.shutdown(); b.shutdown() }
        let rate = FleetRate(rpm: 60, tpm: nil, burstSeconds: 60)
        func ask(_ c: FleetClient, _ key: String) async -> FleetGrant? {
            let result: Result<FleetGrant, RedisFailure> = await answer { done in
                c.acquire(key, rate: rate, need: FleetUnits(requests: 1, tokens: 0),
                          want: FleetUnits(requests: 1, tokens: 0), debtTokens: 0, done: done)
            }
            return try? result.get()
        }
        // Each client runs its commands in order: a's own ask comes back after its report was applied.
        a.remaining("t:r", rate: rate, requests: 2, tokens: nil)
        #expect(await ask(a, "t:r")?.granted.requests == 1)
        #expect(await ask(b, "t:r")?.granted.requests == 1)
        #expect(await ask(b, "t:r")?.granted.requests == 0)
        a.rest("t:s", rate: rate, for: .seconds(5))
        #expect(await ask(a, "t:s")?.granted.requests == 0)
        let rested = await ask(b, "t:s")
        #expect(rested?.granted.requests == 0 && (rested?.wait ?? .zero) > .seconds(4))
    }

    /// The heartbeat counts live daemons; the store stopped is reported unreachable within a heartbeat and a
    /// timeout, a lease request then fails at once, and the store started again is reachable again.
    @Test func anUnreachableStoreIsReportedAndRejoined() async throws {
        let redis = try RedisUnderTest()
        let seen = Shared<[FleetHealth]>([])
        let a = try FleetClient(settings: redis.settings(id: "a"), onHealth: { h in seen.withLock { $0.append(h) } })
        let b = try FleetClient(settings: redis.settings(id: "b"), onHealth: { _ in })
        defer { a.shutdown(); b.shutdown() }
        func waitFor(_ what: String, _ ok: @escaping ([FleetHealth]) -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while !ok(seen.withLock { $0 }) {
                guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        try await waitFor("two live daemons") { $0.last == .reachable(liveDaemons: 2) }
        redis.stop()
        let stopped = ContinuousClock.now
        try await waitFor("unreachable") { if case .unreachable? = $0.last { true } else { false } }
        #expect(ContinuousClock.now - stopped < .seconds(2))
        let failed: Result<FleetGrant, RedisFailure> = await answer { done in
            a.acquire("t:k", rate: FleetRate(rpm: 60, tpm: nil, burstSeconds: 1),
                      need: FleetUnits(requests: 1, tokens: 0), want: FleetUnits(requests: 1, tokens: 0),
                      debtTokens: 0, done: done)
        }
        #expect(throws: RedisFailure.self) { try failed.get() }
        try redis.start()
        try await waitFor("reachable again") { if case .reachable? = $0.last { true } else { false } }
    }

    struct TimedOut: Error { let what: String }

    @Test func endpoints() throws {
        #expect(try RedisEndpoint.parse("redis://10.0.0.5:6380/2").get() == .tcp(host: "10.0.0.5", port: 6380, database: 2))
        #expect(try RedisEndpoint.parse("redis://redis").get() == .tcp(host: "redis", port: 6379, database: 0))
        #expect(try RedisEndpoint.parse("redis://[::1]:7000").get() == .tcp(host: "::1", port: 7000, database: 0))
        #expect(try RedisEndpoint.parse("unix:///run/redis/redis.sock?db=3").get() == .unix(path: "/run/redis/redis.sock", database: 3))
        #expect(RedisEndpoint.problem("redis://:hunter2@host:6379")?.contains("hunter2") == false)
        #expect(RedisEndpoint.problem("redis://:hunter2@host:6379")?.contains("password_credential") == true)
        #expect(RedisEndpoint.problem("rediss://host:6379")?.contains("TLS") == true)
        #expect(RedisEndpoint.problem("redis://host:99999") != nil)
        #expect(RedisEndpoint.problem("http://host") != nil)
    }
}
