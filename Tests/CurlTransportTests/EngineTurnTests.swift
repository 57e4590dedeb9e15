import CurlTransport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Records the thread each of the engine's turns ran on.
final class TurnRecorder: EngineTurnObserver {
    private struct State {
        var began: [UInt] = []
        var ended = 0
        var overlapping = 0
        var inTurn = false
    }

    private let state = Mutex(State())

    func engineTurnBegan() {
        state.withLock { state in
            if state.inTurn { state.overlapping += 1 }
            state.inTurn = true
            state.began.append(UInt(pthread_self()))
        }
    }

    func engineTurnEnded() {
        state.withLock { state in
            state.inTurn = false
            state.ended += 1
        }
    }

    /// Turns begun so far on `thread`.
    func turns(on thread: UInt) -> Int {
        state.withLock { state in state.began.filter { $0 == thread }.count }
    }

    var ended: Int { state.withLock { $0.ended } }
    var inTurn: Bool { state.withLock { $0.inTurn } }

    /// Whether `engine` has ended a turn with nothing in flight and is between turns, so its thread waits idle
    /// (unless its once-a-second wait just ended).
    func isIdle(_ engine: CurlEngine) -> Bool {
        engine.activeTransfers == 0 && ended > 0 && !inTurn
    }
    var overlapping: Int { state.withLock { $0.overlapping } }
}

@Suite("Who runs the engine's turns")
struct EngineTurnTests {
    @Test("an idle engine sends the next transfer from the caller's thread; a busy one leaves it to the engine thread")
    func idleEngineRunsTheTurnOnTheCaller() async throws {
        let server = try LoopbackServer { request in
            request.target == "/stall" ? .silence : .respond(status: 200, body: Array("ok".utf8))
        }
        defer { server.stop() }
        let turns = TurnRecorder()
        let engine = try CurlEngine(turnObserver: turns)
        defer { engine.shutdown() }

        // Idle: the engine thread has ended a turn with nothing to do and waits (its wait can end on its own once a
        // second, so one start in a great many may find it awake: then it is woken instead; hence a few tries).
        var ranOnCaller = false
        for _ in 0..<5 where !ranOnCaller {
            #expect(await eventually { turns.isIdle(engine) })
            // The thread this task runs on now (it may change at each `await`).
            let caller = UInt(pthread_self())
            let before = turns.turns(on: caller)
            let delegate = RecordingDelegate()
            engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/quick"), delegate: delegate)
            ranOnCaller = turns.turns(on: caller) > before
            expectSuccess(await delegate.result())
            #expect(delegate.snapshot.body == Array("ok".utf8))
        }
        #expect(ranOnCaller)

        // Busy: a transfer is running, so the caller queues the next one and wakes the engine thread.
        let stalled = RecordingDelegate()
        let stalledID = engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/stall"), delegate: stalled)
        #expect(await eventually { server.requests.contains { $0.target == "/stall" } })
        let caller = UInt(pthread_self())
        let before = turns.turns(on: caller)
        let delegate = RecordingDelegate()
        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/quick"), delegate: delegate)
        #expect(turns.turns(on: caller) == before)
        expectSuccess(await delegate.result())
        engine.cancel(stalledID)
        let error = try #require(await stalled.failure(within: .seconds(5)))
        #expect(error.kind == .cancelled)
        #expect(turns.overlapping == 0)
    }

    @Test("four threads starting transfers at once against one engine: every one completes, turns never overlap")
    func concurrentCallersShareTheTurns() async throws {
        let server = try LoopbackServer { request in
            .respond(status: 200, body: Array(request.target.utf8))
        }
        defer { server.stop() }
        let turns = TurnRecorder()
        let engine = try CurlEngine(turnObserver: turns)
        defer { engine.shutdown() }

        // Each caller starts its next transfer once the previous one completed, so the engine keeps going idle
        // and busy again and callers and the engine thread keep trading the turns.
        let perCaller = 50
        let results = await withTaskGroup(of: [Bool].self) { group in
            for caller in 0..<4 {
                group.addTask {
                    var outcomes: [Bool] = []
                    for index in 0..<perCaller {
                        let delegate = RecordingDelegate()
                        let target = "/\(caller)/\(index)"
                        engine.start(HTTPRequest(method: "GET", url: server.baseURL + target), delegate: delegate)
                        let result = await delegate.result(within: .seconds(10))
                        let record = delegate.snapshot
                        outcomes.append(
                            (try? result?.get()) != nil && record.body == Array(target.utf8)
                                && record.contractViolations.isEmpty
                        )
                    }
                    return outcomes
                }
            }
            var all: [Bool] = []
            for await outcomes in group { all += outcomes }
            return all
        }
        #expect(results.count == 4 * perCaller)
        #expect(results.allSatisfy { $0 })
        #expect(turns.overlapping == 0)
        #expect(await eventually { engine.activeTransfers == 0 })
    }

    @Test("a delegate completed on the caller's thread may start the next transfer from its callback")
    func startFromACallbackOnTheCallersThread() async throws {
        let server = try LoopbackServer { _ in .respond(status: 200, body: Array("next".utf8)) }
        defer { server.stop() }
        let turns = TurnRecorder()
        let engine = try CurlEngine(turnObserver: turns)
        defer { engine.shutdown() }

        // A scheme libcurl does not speak fails within the turn that starts it, so on an idle engine the delegate
        // is completed on the caller's thread, inside `start`, holding the turn; it starts the next transfer there.
        var completedOnCaller = false
        for _ in 0..<5 where !completedOnCaller {
            #expect(await eventually { turns.isIdle(engine) })
            let next = RecordingDelegate()
            let nextRequest = HTTPRequest(method: "GET", url: server.baseURL + "/")
            let first = CompletionHook { engine.start(nextRequest, delegate: next) }
            let caller = UInt(pthread_self())
            engine.start(HTTPRequest(method: "GET", url: "gopherx://127.0.0.1:\(server.port)/"), delegate: first)
            let error = try #require(await first.recorder.failure())
            #expect(error.kind == .localConfiguration)
            completedOnCaller = first.recorder.snapshot.threads == [caller]
            expectSuccess(await next.result())
            #expect(next.snapshot.body == Array("next".utf8))
        }
        #expect(completedOnCaller)
    }

    @Test("with 300 streams open the engine thread takes their chunks at most once per coalescing window",
          arguments: [Duration.milliseconds(1), .milliseconds(5), .zero])
    func manyStreamsCoalesceTheirChunks(window: Duration) async throws {
        let server = try LoopbackServer { _ in .drip(chunk: Array("data: x\n\n".utf8), interval: .milliseconds(50)) }
        defer { server.stop() }
        let turns = TurnRecorder()
        let engine = try CurlEngine(maxHostConnections: 0, maxTotalConnections: 400, coalescingWindow: window,
                                    turnObserver: turns)
        defer { engine.shutdown() }

        let delegates = (0..<300).map { _ in RecordingDelegate() }
        for delegate in delegates {
            engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/stream"), delegate: delegate)
        }
        #expect(await eventually(within: .seconds(20)) { delegates.allSatisfy { !$0.snapshot.body.isEmpty } })
        func bytes() -> Int { delegates.reduce(0) { $0 + $1.snapshot.body.count } }
        let (turnsBefore, bytesBefore, clock) = (turns.ended, bytes(), ContinuousClock())
        let start = clock.now
        try await Task.sleep(for: .seconds(1))
        let seconds = (clock.now - start) / .seconds(1)
        let turnsPerSecond = Double(turns.ended - turnsBefore) / seconds
        let chunksPerSecond = Double(bytes() - bytesBefore) / 9 / seconds
        print("300 streams, window \(window): \(Int(chunksPerSecond)) chunks/s in \(Int(turnsPerSecond)) engine turns/s")
        #expect(chunksPerSecond >= 3_000, "300 streams × 20 chunks/s, less what a slow machine loses")
        if window == .zero {
            // No window: the engine thread wakes for nearly every chunk or two.
            #expect(turnsPerSecond >= 800)
        } else {
            // One turn per window, plus a caller's turn now and then (20% slack); each turn hands on several chunks.
            let perWindow = Double(window / .milliseconds(1))
            #expect(turnsPerSecond <= 1_200 / perWindow)
            #expect(chunksPerSecond >= 2 * turnsPerSecond)
        }
        for delegate in delegates { #expect(delegate.snapshot.contractViolations.isEmpty) }
    }
}
