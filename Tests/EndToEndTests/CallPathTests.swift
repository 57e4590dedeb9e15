import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The path app → client shim → Unix socket → breakwaterd → libcurl → provider, with every part real except the
/// provider (an in-process fake speaking OpenAI's wire format over loopback).
@Suite(.serialized, .timeLimit(.minutes(2))) struct CallPathTests {
    /// `waitReady` returns once the daemon answers, and fails with `.daemonUnavailable` within its timeout
    /// when none does (the shim's own reconnect attempts included).
    @Test func waitReadyWaitsForTheDaemonAndNoLonger() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        try await d.client().waitReady(timeout: .seconds(10))
        let nobody = BreakwaterClient(socketPath: d.socket + ".none")
        let started = ContinuousClock.now
        do {
            try await nobody.waitReady(timeout: .milliseconds(300))
            Issue.record("ready without a daemon")
        } catch {
            #expect(error.kind == .daemonUnavailable)
        }
        #expect(ContinuousClock.now - started < .seconds(8), "bounded by the timeout and one round of reconnects")
    }

    @Test func plainCall() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        let client = d.client()
        let r = try await client.send(route: "default", body: chat("Hello, daemon"), requestID: "plain-1")
        #expect(content(r.body) == "Echo: Hello, daemon")
        #expect(r.head.status == 200)
        #expect(r.head.provider == "fake")
        #expect(r.head.model == "gpt-4o-mini")
        #expect(r.head.requestID == "plain-1")
        #expect(r.trailers.succeeded)
        #expect((r.trailers.totalTokens ?? 0) > 0)
        d.assertNoSecretsInLog()
    }

    @Test func streamedChunksArriveBeforeTheStreamEnds() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        d.fake.script([FaultStep(chunkIntervalMs: 200, chunks: 5)])
        let start = ContinuousClock.now
        let s = try await d.client().stream(route: "default", body: chat("a b c d e"))
        var arrivals: [Duration] = []
        var text = ""
        for try await chunk in s {
            arrivals.append(ContinuousClock.now - start)
            text += content(chunk) ?? ""
        }
        let end = ContinuousClock.now - start
        #expect(text == "Echo: a b c d e")
        #expect(s.trailers?.succeeded == true)
        #expect(s.trailers?.totalTokens != nil)
        // Five pieces 200 ms apart: the first must reach the app long before the provider finishes.
        let firstContent = try #require(arrivals.dropFirst().first)
        #expect(end - firstContent >= .milliseconds(600), "first chunk at \(firstContent), end at \(end)")
    }

    @Test func hundredConcurrentCallsOnOneConnection() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        let client = d.client()
        let correct = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<100 {
                group.addTask {
                    let r = try await client.send(route: "default", body: chat("call number \(i)"))
                    return content(r.body) == "Echo: call number \(i)"
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(correct == 100)
        #expect(d.fake.stats().requests == 100)
    }

    @Test func twentyClientProcessesAtOnce() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        let clients = try (0..<20).map { i in
            try ChildProcess(binDir + "/breakwater",
                             ["call", "--socket", d.socket, "--message", "process \(i)"],
                             logPath: d.dir + "/client-\(i).log")
        }
        for (i, c) in clients.enumerated() {
            let status = try await c.waitForExit(timeout: .seconds(60))
            #expect(status == 0, "client \(i): \(c.output)")
            #expect(c.output.contains("Echo: process \(i)"))
        }
        #expect(d.fake.stats().requests == 20)
    }

    @Test func cancelDuringSlowCallFreesItUpstream() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        d.fake.script([FaultStep(delayFirstByteMs: 15_000)])
        let client = d.client()
        let call = Task { try await client.send(route: "default", body: chat("slow")) }
        #expect(try await waitUntil { d.fake.stats().inFlight == 1 })
        let cancelledAt = ContinuousClock.now
        call.cancel()
        let result = await call.result
        guard case .failure(let error as BreakwaterError) = result else {
            Issue.record("expected a cancellation error, got \(result)")
            return
        }
        #expect(error.kind == .cancelled)
        #expect(ContinuousClock.now - cancelledAt < .seconds(2))
        // The daemon dropped the upstream transfer: the provider sees the request abandoned, long before 15 s.
        #expect(try await waitUntil(timeout: .seconds(5)) { d.fake.stats().aborted == 1 })
        #expect(d.fake.stats().inFlight == 0)
        // And the connection is still good for the next call.
        let r = try await client.send(route: "default", body: chat("after cancel"))
        #expect(content(r.body) == "Echo: after cancel")
    }

    @Test func cancelFrameIsAnsweredWithCancelled() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        d.fake.script([FaultStep(delayFirstByteMs: 15_000)])
        let raw = try RawConnection(path: d.socket)
        try raw.hello()
        raw.write(CallRequest(route: "default").frame(streamID: 1))
        raw.write(.data(streamID: 1, chat("slow"), endStream: true))
        #expect(try await waitUntil { d.fake.stats().inFlight == 1 })
        raw.write(.cancel(streamID: 1))
        let answer = try #require(try raw.read())
        #expect(answer.type == .error && answer.streamID == 1)
        #expect(try ErrorMessage(frame: answer).code == .cancelled)
        #expect(try await waitUntil(timeout: .seconds(5)) { d.fake.stats().aborted == 1 })
    }

    @Test func upstreamErrorsAreTypedAndCarryNoSecrets() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        // retry_count 2: three attempts at 503, then the error lists all three.
        d.fake.script([FaultStep(status: 503), FaultStep(status: 503), FaultStep(status: 503), FaultStep(status: 401)])
        let client = d.client()
        do {
            _ = try await client.send(route: "default", body: chat("x"))
            Issue.record("503s were not reported")
        } catch {
            #expect(error.code == .upstreamError && error.upstreamStatus == 503 && error.provider == "fake")
            #expect(error.message.contains("1. fake/gpt-4o-mini") && error.message.contains("3. fake/gpt-4o-mini"))
        }
        #expect(d.fake.stats().requests == 3)
        do {
            _ = try await client.send(route: "default", body: chat("y"))
            Issue.record("401 was not reported")
        } catch {
            #expect(error.code == .upstreamError && error.upstreamStatus == 401)
            #expect(!error.message.contains(DaemonUnderTest.apiKey))
        }
        #expect(d.fake.stats().requests == 4, "a 401 is not retried")
        d.assertNoSecretsInLog()
    }

    @Test func badRequestBodyAndUnknownRoute() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        let client = d.client()
        await #expect { try await client.send(route: "default", body: Array("not json".utf8)) } throws: {
            ($0 as? BreakwaterError)?.code == .badRequest
        }
        await #expect { try await client.send(route: "missing", body: chat("x")) } throws: {
            ($0 as? BreakwaterError)?.code == .unknownRoute
        }
        #expect(d.fake.stats().requests == 0)
    }

    @Test func streamCutMidwayEndsWithErrorTrailer() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        d.fake.script([FaultStep(chunkIntervalMs: 20, chunks: 6, resetAfterChunks: 2)])
        let s = try await d.client().stream(route: "default", body: chat("one two three four five six"))
        var got = 0
        await #expect {
            for try await _ in s { got += 1 }
        } throws: { ($0 as? BreakwaterError)?.code == .streamInterrupted }
        #expect(got >= 1)
        #expect(s.trailers?.succeeded == false)
    }

    @Test func providerWithoutKeyIsRefusedWithNoCredential() async throws {
        let d = try await DaemonUnderTest.start(withKey: false)
        defer { d.stop() }
        await #expect { try await d.client().send(route: "default", body: chat("x")) } throws: {
            ($0 as? BreakwaterError)?.code == .noCredential
        }
        #expect(d.fake.stats().requests == 0)
        #expect(d.daemon.output.contains("provider has no API key"))
    }
}
