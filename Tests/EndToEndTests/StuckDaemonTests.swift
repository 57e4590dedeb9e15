import BreakwaterClient
import BreakwaterWire
import Dispatch
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A daemon that stops reading: it answers HELLO, then never reads again, so the client's socket send buffer
/// fills. The client shim's writes must still block no thread of the app: the calls wait (or are refused once too
/// much waits), unrelated async work carries on, and closing the client ends them all.
@Suite(.serialized, .timeLimit(.minutes(1))) struct StuckDaemonTests {
    @Test func aDaemonThatStopsReadingBlocksNoThreadOfTheApp() async throws {
        let daemon = try StuckDaemon()
        defer { daemon.stop() }
        var configuration = BreakwaterClient.Configuration(socketPath: daemon.path)
        // The listener is gone once the one connection is accepted: a reconnect fails at once.
        configuration.reconnectAttempts = 1
        let client = BreakwaterClient(configuration: configuration)
        // Connect first, so the calls below find the connection ready and go straight to writing.
        let limits = try await client.serverLimits()
        let bodySize = 1 << 20
        #expect(Int(limits.maxBody) >= bodySize)

        // More calls than the cooperative pool has threads, each with a body far larger than a socket buffer.
        let callCount = max(8, 2 * ProcessInfo.processInfo.activeProcessorCount)
        let body = [UInt8](repeating: 0x20, count: bodySize)
        let outcomes = Outcomes()
        let allEnded = DispatchGroup()
        for i in 0..<callCount {
            allEnded.enter()
            Task.detached {
                do {
                    _ = try await client.send(route: "default", body: body)
                    outcomes.record(i, nil)
                } catch {
                    outcomes.record(i, error)
                }
                allEnded.leave()
            }
        }

        // Everything is watched from a thread of its own: were the pool's threads stuck, this test's own awaits
        // could not resume to notice (the other tests wait for the stall the same way, so that they too fail
        // rather than hang when the shim blocks).
        let report = await onOwnThread { () -> Report in
            var r = Report()
            r.unread = waitForStall(daemon)
            // A trivial task that has nothing to do with Breakwater must still run promptly.
            let probe = DispatchSemaphore(value: 0)
            let start = ContinuousClock.now
            Task.detached { probe.signal() }
            r.probeRan = probe.wait(timeout: .now() + 2) == .success
            r.probeTook = ContinuousClock.now - start
            r.openAtClose = Set(0..<callCount).subtracting(outcomes.snapshot().keys)
            client.close()
            r.allEnded = allEnded.wait(timeout: .now() + 10) == .success
            return r
        }

        #expect(report.unread >= 64 * 1024, "the client never filled the socket (\(report.unread) bytes unread)")
        #expect(report.probeRan, "an unrelated task did not run within 2 s: the cooperative pool was blocked")
        #expect(report.allEnded, "calls still open 10 s after close()")
        // Every call failed, in one of two ways (nothing else, and none was sent again on a new connection):
        var stuck = 0
        var refused = 0
        for (i, outcome) in outcomes.snapshot() {
            let error = try #require(outcome as? BreakwaterError, "call \(i) succeeded against a daemon that never answers")
            switch error.kind {
            case .connectionLost:
                // Stuck behind the full socket until the app's close() ended it.
                stuck += 1
                #expect(report.openAtClose.contains(i), "call \(i) ended before close(): \(error)")
            case .sendQueueFull:
                // Refused at once: too much already waited to be written to a daemon that does not read.
                refused += 1
            default:
                Issue.record("call \(i): \(error)")
            }
        }
        #expect(stuck >= 1, "no call was waiting on the full socket")
        // The queue is bounded (4 MiB): most of the 1 MiB calls were refused rather than queued.
        #expect(stuck <= 4 && refused >= callCount - 4, "\(stuck) calls queued, \(refused) refused")
    }

    /// The daemon goes away while calls wait behind the full socket: the calls whose REQUEST was not all written
    /// fail with `.notStarted` (safe to send again) even without STARTED notices, as when the write failed in the
    /// caller's own thread.
    @Test func callsNotWrittenWhenTheDaemonGoesAwayFailAsNotStarted() async throws {
        let daemon = try StuckDaemon(startedNotices: false)
        var configuration = BreakwaterClient.Configuration(socketPath: daemon.path)
        configuration.reconnectAttempts = 1
        configuration.resendAttempts = 0
        configuration.resendUnstartedCalls = false
        let client = BreakwaterClient(configuration: configuration)
        _ = try await client.serverLimits()
        let body = [UInt8](repeating: 0x20, count: 1 << 20)
        let outcomes = Outcomes()
        launch(client, [body, body], outcomes)
        let (unread, endedEarly) = await onOwnThread {
            let unread = waitForStall(daemon)
            defer { daemon.stop() }
            return (unread, outcomes.snapshot().count)
        }
        #expect(unread >= 64 * 1024)
        #expect(endedEarly == 0)
        #expect(try await waitUntil { outcomes.snapshot().count == 2 })
        for (i, outcome) in outcomes.snapshot() {
            let error = try #require(outcome as? BreakwaterError, "call \(i) succeeded")
            #expect(error.kind == .notStarted, "call \(i): \(error)")
        }
        client.close()
    }
}

extension StuckDaemonTests {
    /// A daemon that stalls, then reads again: everything the shim queued meanwhile (or wrote in part at once)
    /// arrives whole and in order — each call's REQUEST and body, stream ids increasing — and every call is answered.
    @Test func aDaemonThatStallsThenReadsGetsEveryCallWhole() async throws {
        let daemon = try StuckDaemon()
        defer { daemon.stop() }
        let client = BreakwaterClient(configuration: .init(socketPath: daemon.path))
        _ = try await client.serverLimits()
        // Small bodies the socket takes at once until its buffer (about 200 KiB) fills, one of them only in part,
        // then large ones for the writer thread; 2.4 MiB in all, under the queue's bound.
        let (small, large) = (40 * 1024, 1024 * 1024)
        let sizes: [Int] = Array(repeating: small, count: 8) + [large, 300, large, small]
        let outcomes = Outcomes()
        let answers = Answers()
        launch(client, sizes.enumerated().map { [UInt8](repeating: UInt8($0.offset), count: $0.element) }, outcomes,
               answers)
        let (unread, endedEarly) = await onOwnThread {
            let unread = waitForStall(daemon)
            defer { daemon.resume() }
            return (unread, outcomes.snapshot().count)
        }
        #expect(unread >= 64 * 1024)
        #expect(endedEarly == 0)
        #expect(try await waitUntil { outcomes.snapshot().count == sizes.count })
        for (i, outcome) in outcomes.snapshot() {
            #expect(outcome == nil, "call \(i): \(String(describing: outcome))")
        }
        let got = answers.snapshot()
        for (i, size) in sizes.enumerated() {
            #expect(got[i].map { String(decoding: $0, as: UTF8.self) } == "\(size) bytes of \(i)")
        }
        #expect(daemon.violations().isEmpty, "\(daemon.violations())")
        client.close()
    }
}

/// Runs `body` on a thread of its own, outside the cooperative pool, and returns what it returned.
private func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { done in
        Thread.detachNewThread { done.resume(returning: body()) }
    }
}

/// Blocks (off the pool) until the client's writes fill the socket of a daemon that is not reading: its side holds
/// at least 64 KiB unread, or 10 s passed. Returns the bytes unread.
private func waitForStall(_ daemon: StuckDaemon) -> Int {
    let deadline = ContinuousClock.now + .seconds(10)
    while daemon.unreadBytes() < 64 * 1024, ContinuousClock.now < deadline { usleep(10_000) }
    return daemon.unreadBytes()
}

private struct Report: Sendable {
    var unread = 0
    var probeRan = false
    var probeTook = Duration.zero
    var openAtClose: Set<Int> = []
    var allEnded = false
}

/// How each call ended: nil for success, else its error.
/// Sends each body as its own call from a detached task, recording how each ended (and its answer) by index.
private func launch(_ client: BreakwaterClient, _ bodies: [[UInt8]], _ outcomes: Outcomes, _ answers: Answers? = nil) {
    for (i, body) in bodies.enumerated() {
        Task.detached {
            do {
                let r = try await client.send(route: "default", body: body)
                answers?.record(i, r.body)
                outcomes.record(i, nil)
            } catch {
                outcomes.record(i, error)
            }
        }
    }
}

private final class Outcomes: Sendable {
    private let ended = Mutex<[Int: (any Error)?]>([:])
    func record(_ i: Int, _ error: (any Error)?) { ended.withLock { $0[i] = error } }
    func snapshot() -> [Int: (any Error)?] { ended.withLock { $0 } }
}

/// Each successful call's answer body.
private final class Answers: Sendable {
    private let bodies = Mutex<[Int: [UInt8]]>([:])
    func record(_ i: Int, _ body: [UInt8]) { bodies.withLock { $0[i] = body } }
    func snapshot() -> [Int: [UInt8]] { bodies.withLock { $0 } }
}

/// A "daemon" on a Unix socket that accepts one connection, answers HELLO as breakwaterd would (default limits:
/// 1 MiB frames, 8 MiB bodies), then never reads again. The listener closes after that one connection; `stop()`
/// closes the connection.
private final class StuckDaemon: Sendable {
    let path: String
    private let dir: String
    private let connection = Mutex<Int32>(-1)

    init(startedNotices: Bool = true) throws {
        dir = makeTempDir()
        path = dir + "/stuck.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw TestFailure("socket failed: errno \(errno)") }
        let bound = withUnixAddress(path) { bind(listener, $0, $1) }
        guard bound == 0, listen(listener, 4) == 0 else {
            close(listener)
            throw TestFailure("bind/listen failed: errno \(errno)")
        }
        let socketPath = path
        Thread.detachNewThread { [self] in
            let fd = accept(listener, nil, nil)
            close(listener)
            unlink(socketPath)
            guard fd >= 0 else { return }
            connection.withLock { $0 = fd }
            // Read the client's HELLO, answer it, and read nothing more.
            var decoder = FrameDecoder(limits: .preHello)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                if (try? decoder.next()) != nil { break }
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { return }
                decoder.feed(buffer[0..<n])
            }
            let hello = Hello.server(version: ProtocolVersion.v1, limits: .default, serverName: "stuck",
                                     startedNotices: startedNotices).frame().encoded()
            _ = hello.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
    }

    /// Starts reading again, and answers each call once its body is complete: RESPONSE, one DATA frame saying how
    /// many bytes of which value the body held ("N bytes of V", or "mixed"), TRAILERS. Anything that breaks the
    /// protocol goes to `violations()`.
    func resume() {
        let fd = connection.withLock { $0 }
        Thread.detachNewThread { [self] in
            var decoder = FrameDecoder(limits: .default)
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            var bodies: [StreamID: [UInt8]] = [:]
            var highest: StreamID = 0
            func answer(_ id: StreamID, _ body: [UInt8]) {
                let summary = body.allSatisfy({ $0 == body.first }) ? "\(body.count) bytes of \(body.first ?? 0)" : "mixed"
                var bytes: [UInt8] = []
                CallResponse(status: 200, provider: "stuck", model: "m", attempts: 1, requestID: "r")
                    .frame(streamID: id).encode(into: &bytes)
                Frame.data(streamID: id, Array(summary.utf8)).encode(into: &bytes)
                CallTrailers().frame(streamID: id).encode(into: &bytes)
                _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            while true {
                do {
                    while let frame = try decoder.next() {
                        let id = frame.streamID
                        switch frame.type {
                        case .request:
                            if id <= highest { violation("stream \(id) after \(highest)") }
                            highest = id
                            bodies[id] = []
                        case .data:
                            guard bodies[id] != nil else {
                                violation("DATA on stream \(id), which has no open REQUEST")
                                continue
                            }
                            bodies[id]! += frame.payload
                        default:
                            violation("unexpected \(frame.type) on stream \(id)")
                        }
                        if frame.flags.contains(.endStream), let body = bodies.removeValue(forKey: id) { answer(id, body) }
                    }
                } catch {
                    violation("\(error)")
                    return
                }
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { return }
                decoder.feed(buffer[0..<n])
            }
        }
    }

    private let problems = Mutex<[String]>([])
    private func violation(_ what: String) { problems.withLock { $0.append(what) } }
    func violations() -> [String] { problems.withLock { $0 } }

    /// Bytes the client has written that this side has not read (up to 256 KiB).
    func unreadBytes() -> Int {
        let fd = connection.withLock { $0 }
        guard fd >= 0 else { return 0 }
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_PEEK | MSG_DONTWAIT)) }
        return max(0, n)
    }

    func stop() {
        connection.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
        unlink(path)
        rmdir(dir)
    }
}
