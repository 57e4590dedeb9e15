import CurlTransport
import Testing

@Suite("ConnectionPool: calls past an upstream's limit wait, visibly, within their total limit")
struct ConnectionPoolTests {
    @Test("a pool of 2 runs 2 of 5 transfers at once; the rest wait in order and all succeed on 2 connections")
    func waitsForRoom() async throws {
        let server = try LoopbackServer { _ in .respond(status: 200, body: Array("ok".utf8), delay: .milliseconds(300)) }
        defer { server.stop() }
        let engine = try CurlEngine(maxHostConnections: 0)
        defer { engine.shutdown() }
        let pool = ConnectionPool(name: "fake", limit: 2)

        let delegates = (0..<5).map { _ in RecordingDelegate() }
        for delegate in delegates {
            engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/slow", pool: pool), delegate: delegate)
        }
        #expect(await eventually { pool.snapshot.running == 2 && pool.snapshot.waiting == 3 })
        #expect(server.requests.count <= 2)
        for delegate in delegates {
            expectSuccess(await delegate.result())
        }
        #expect(pool.snapshot == ConnectionPool.Snapshot(limit: 2, running: 0, waiting: 0, waitedTotal: 3))
        #expect(server.requests.count == 5)
        #expect(server.connectionsAccepted == 2)
    }

    @Test("a transfer still waiting when its total limit runs out fails timedOut(.connectionWait), never sent")
    func waitCountsAgainstTotal() async throws {
        let server = try LoopbackServer { _ in .silence }
        defer { server.stop() }
        let engine = try CurlEngine(maxHostConnections: 0)
        defer { engine.shutdown() }
        let pool = ConnectionPool(name: "fake", limit: 1)

        let holder = RecordingDelegate()
        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/hold", pool: pool), delegate: holder)
        #expect(await eventually { server.requests.count == 1 })
        let waiter = RecordingDelegate()
        let started = ContinuousClock.now
        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/wait",
                                 timeouts: TransferTimeouts(total: .milliseconds(300)), pool: pool), delegate: waiter)
        let error = try #require(await waiter.failure())
        let elapsed = ContinuousClock.now - started
        #expect(error.kind == .timedOut(.connectionWait))
        #expect(error.detail.contains("no connection free within 300 ms: 1 calls running (the limit), 1 waiting"))
        #expect(elapsed >= .milliseconds(300) && elapsed < .seconds(3))
        #expect(server.requests.map(\.target) == ["/hold"])
        #expect(pool.snapshot.waiting == 0 && pool.snapshot.running == 1)
        #expect(waiter.snapshot.contractViolations.isEmpty)
    }

    @Test("a waiting transfer cancelled leaves the queue; a raised limit lets the next one start")
    func cancelAndRaise() async throws {
        let server = try LoopbackServer { request in
            request.target == "/hold" ? .silence : .respond(status: 200, body: Array("ok".utf8))
        }
        defer { server.stop() }
        let engine = try CurlEngine(maxHostConnections: 0)
        defer { engine.shutdown() }
        let pool = ConnectionPool(name: "fake", limit: 1)

        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/hold", pool: pool), delegate: RecordingDelegate())
        let cancelled = RecordingDelegate()
        let id = engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/a", pool: pool), delegate: cancelled)
        let later = RecordingDelegate()
        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/b", pool: pool), delegate: later)
        #expect(await eventually { pool.snapshot.waiting == 2 })
        engine.cancel(id)
        #expect(await cancelled.failure()?.kind == .cancelled)
        #expect(pool.snapshot.waiting == 1)
        pool.limit = 2
        expectSuccess(await later.result())
        #expect(server.requests.map(\.target) == ["/hold", "/b"])
    }
}
