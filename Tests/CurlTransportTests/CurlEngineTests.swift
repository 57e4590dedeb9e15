import CurlTransport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("CurlEngine against a loopback HTTP/1.1 server")
struct CurlEngineTests {
    @Test("a POST's method, headers and body reach the server; status, headers and body come back")
    func postRoundTrip() async throws {
        let server = try LoopbackServer { request in
            .respond(
                status: 201,
                headers: [
                    HTTPHeader(name: "X-Request-Id", value: "req-42"),
                    HTTPHeader(name: "X-Seen-Length", value: "\(request.body.count)"),
                ],
                body: Array(request.body.reversed())
            )
        }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        // Over 1 MiB, where libcurl would add `Expect: 100-continue`; the response arrives in many chunks.
        let body = (0..<1_200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let delegate = RecordingDelegate()
        engine.start(
            HTTPRequest(
                method: "POST",
                url: server.baseURL + "/v1/chat/completions",
                headers: [
                    HTTPHeader(name: "Authorization", value: "Bearer sk-test"),
                    HTTPHeader(name: "Content-Type", value: "application/json"),
                    HTTPHeader(name: "X-Empty", value: ""),
                ],
                body: body
            ),
            delegate: delegate
        )

        let result = await delegate.result()
        expectSuccess(result)
        let record = delegate.snapshot
        #expect(record.status == 201)
        #expect(delegate.header("X-Request-Id") == "req-42")
        #expect(delegate.header("X-Seen-Length") == "1200000")
        #expect(record.body == Array(body.reversed()))
        #expect(record.contractViolations.isEmpty)

        let received = try #require(server.requests.first)
        #expect(received.method == "POST")
        #expect(received.target == "/v1/chat/completions")
        #expect(received.header("Authorization") == "Bearer sk-test")
        #expect(received.header("Content-Type") == "application/json")
        #expect(received.header("X-Empty") == "")
        #expect(received.header("Expect") == nil)
        #expect(received.header("Content-Length") == "1200000")
        #expect(received.body == body)
        #expect(await eventually { engine.activeTransfers == 0 })
    }

    @Test("interim 1xx heads are skipped and a GET sends no body")
    func interimHeadIsSkipped() async throws {
        let response = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok"
        let server = try LoopbackServer { _ in .raw(Array(response.utf8)) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/v1/models"), delegate: delegate)

        let result = await delegate.result()
        expectSuccess(result)
        let record = delegate.snapshot
        #expect(record.status == 200)
        #expect(record.heads == 1)
        #expect(delegate.header("X-Final") == "yes")
        #expect(delegate.header("Link") == nil)
        #expect(record.body == Array("ok".utf8))
        let received = try #require(server.requests.first)
        #expect(received.method == "GET")
        #expect(received.header("Content-Length") == nil)
        #expect(received.body.isEmpty)
    }

    @Test("asking for HTTP/2 on a cleartext URL falls back to HTTP/1.1 and still reuses the connection")
    func http2OverCleartextFallsBack() async throws {
        let server = try LoopbackServer { _ in .respond(status: 200, body: Array("h1".utf8)) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        for _ in 0..<2 {
            let delegate = RecordingDelegate()
            engine.start(
                HTTPRequest(method: "POST", url: server.baseURL + "/v1/chat/completions", httpVersion: .http2),
                delegate: delegate
            )
            expectSuccess(await delegate.result())
            #expect(delegate.snapshot.body == Array("h1".utf8))
        }
        #expect(server.requests.count == 2)
        #expect(server.connectionsAccepted == 1)
    }

    @Test("50 concurrent transfers all complete, each with its own response, all callbacks on one thread")
    func fiftyConcurrentTransfers() async throws {
        let server = try LoopbackServer { request in
            .respond(status: 200, body: Array("echo:".utf8) + request.body, delay: .milliseconds(20))
        }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegates = (0..<50).map { _ in RecordingDelegate() }
        for (index, delegate) in delegates.enumerated() {
            engine.start(
                HTTPRequest(method: "POST", url: server.baseURL + "/echo", body: Array("\(index)".utf8)),
                delegate: delegate
            )
        }

        #expect(await eventually(within: .seconds(10)) { delegates.allSatisfy { $0.snapshot.result != nil } })
        var threads: Set<UInt> = []
        for (index, delegate) in delegates.enumerated() {
            let record = delegate.snapshot
            expectSuccess(record.result)
            #expect(record.body == Array("echo:\(index)".utf8))
            #expect(record.contractViolations.isEmpty)
            threads.formUnion(record.threads)
        }
        #expect(threads.count == 1)
        #expect(!threads.contains(UInt(pthread_self())))
        #expect(server.requests.count == 50)
        #expect(await eventually { engine.activeTransfers == 0 })
    }

    @Test("sequential requests reuse one connection")
    func sequentialRequestsReuseTheConnection() async throws {
        let server = try LoopbackServer { _ in .respond(status: 200, body: Array("{}".utf8)) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let requestCount = 5
        for _ in 0..<requestCount {
            let delegate = RecordingDelegate()
            engine.start(HTTPRequest(method: "POST", url: server.baseURL + "/v1/embeddings"), delegate: delegate)
            let result = await delegate.result()
            expectSuccess(result)
        }
        #expect(server.requests.count == requestCount)
        #expect(server.connectionsAccepted == 1)
        #expect(Set(server.requests.map(\.connection)) == [0])

        // The idle connection stays open in the cache until shutdown closes it.
        #expect(server.connectionsClosedByClient == 0)
        engine.shutdown()
        #expect(await eventually { server.connectionsClosedByClient == 1 })
    }

    @Test("no response byte within the first-byte limit is timedOut(.firstByte)")
    func firstByteTimeout() async throws {
        let server = try LoopbackServer { _ in .silence }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        let started = ContinuousClock.now
        engine.start(
            HTTPRequest(
                method: "POST",
                url: server.baseURL + "/slow",
                timeouts: TransferTimeouts(firstByte: .milliseconds(200), total: .seconds(10))
            ),
            delegate: delegate
        )

        let error = try #require(await delegate.failure())
        let elapsed = ContinuousClock.now - started
        #expect(error.kind == .timedOut(.firstByte))
        #expect(error.curlCode == nil)
        #expect(elapsed >= .milliseconds(200))
        #expect(elapsed < .seconds(3))
        #expect(delegate.snapshot.heads == 0)
        #expect(await eventually { server.connectionsClosedByClient == 1 })
    }

    @Test("a gap between chunks longer than the idle limit is timedOut(.idle), after the bytes that came")
    func idleTimeout() async throws {
        let server = try LoopbackServer { _ in
            .headThenStall(contentLength: 1000, bodyPrefix: Array("data: 1\n\n".utf8))
        }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        let started = ContinuousClock.now
        engine.start(
            HTTPRequest(
                method: "POST",
                url: server.baseURL + "/stream",
                timeouts: TransferTimeouts(firstByte: .seconds(5), idle: .milliseconds(200))
            ),
            delegate: delegate
        )

        let error = try #require(await delegate.failure())
        #expect(error.kind == .timedOut(.idle))
        // The idle limit runs from the last byte, not from the (later) first-byte limit's end.
        #expect(ContinuousClock.now - started < .seconds(2))
        let record = delegate.snapshot
        #expect(record.status == 200)
        #expect(record.body == Array("data: 1\n\n".utf8))
        #expect(record.contractViolations.isEmpty)
    }

    @Test("a transfer that keeps receiving still ends at the total limit, as timedOut(.total)")
    func totalTimeout() async throws {
        let server = try LoopbackServer { _ in .drip(chunk: Array("tick\n".utf8), interval: .milliseconds(30)) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        let started = ContinuousClock.now
        engine.start(
            HTTPRequest(
                method: "GET",
                url: server.baseURL + "/drip",
                timeouts: TransferTimeouts(firstByte: .seconds(2), idle: .seconds(2), total: .milliseconds(400))
            ),
            delegate: delegate
        )

        let error = try #require(await delegate.failure())
        let elapsed = ContinuousClock.now - started
        #expect(error.kind == .timedOut(.total))
        #expect(error.curlCode == 28)
        // libcurl times the limit on its own clock, in whole milliseconds: it may fire a hair before 400 ms by ours.
        #expect(elapsed >= .milliseconds(390))
        #expect(elapsed < .seconds(3))
        #expect(delegate.snapshot.body.count >= 5)
    }

    @Test("a connect that cannot complete within the connect limit is timedOut(.connect)")
    func connectTimeout() async throws {
        // A listener that never accepts, with its backlog filled: the kernel drops further SYNs, so a new
        // connection attempt hangs in the connect phase.
        let (listener, port) = try LoopbackServer.listen(backlog: 0)
        defer { close(listener) }
        var fillers: [Int32] = []
        defer { fillers.forEach { close($0) } }
        for _ in 0..<3 {
            fillers.append(try nonBlockingConnect(port: port))
        }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        engine.start(
            HTTPRequest(
                method: "GET",
                url: "http://127.0.0.1:\(port)/",
                timeouts: TransferTimeouts(connect: .milliseconds(200), total: .seconds(10))
            ),
            delegate: delegate
        )

        let error = try #require(await delegate.failure())
        #expect(error.kind == .timedOut(.connect))
        #expect(error.curlCode == 28)
    }

    @Test("a refused connection is connectFailed, and the error carries no request secrets")
    func connectFailure() async throws {
        let port = try LoopbackServer.closedPort()
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        engine.start(
            HTTPRequest(
                method: "POST",
                url: "http://127.0.0.1:\(port)/v1/chat/completions",
                headers: [HTTPHeader(name: "Authorization", value: "Bearer sk-secret-key")],
                body: Array("my secret prompt".utf8)
            ),
            delegate: delegate
        )

        let error = try #require(await delegate.failure())
        #expect(error.kind == .connectFailed)
        #expect(error.curlCode == 7)
        #expect(!error.detail.isEmpty)
        for text in [error.detail, error.description] {
            #expect(!text.contains("sk-secret-key"))
            #expect(!text.contains("secret prompt"))
        }
        #expect(delegate.snapshot.heads == 0)
    }

    @Test("cancel mid-transfer completes with .cancelled promptly and closes the connection")
    func cancelMidTransfer() async throws {
        let server = try LoopbackServer { _ in
            .headThenStall(contentLength: 10_000, bodyPrefix: Array("partial".utf8))
        }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        let id = engine.start(HTTPRequest(method: "POST", url: server.baseURL + "/stream"), delegate: delegate)
        #expect(await eventually { delegate.snapshot.body == Array("partial".utf8) })
        #expect(engine.activeTransfers == 1)

        let cancelled = ContinuousClock.now
        engine.cancel(id)
        let error = try #require(await delegate.failure(within: .seconds(2)))
        #expect(error.kind == .cancelled)
        #expect(ContinuousClock.now - cancelled < .seconds(1))
        #expect(engine.activeTransfers == 0)
        #expect(await eventually(within: .seconds(2)) { server.connectionsClosedByClient == 1 })

        // Cancelling again, or cancelling a finished transfer, changes nothing.
        engine.cancel(id)
        let next = RecordingDelegate()
        let server2 = try LoopbackServer { _ in .respond(status: 204) }
        defer { server2.stop() }
        engine.start(HTTPRequest(method: "GET", url: server2.baseURL + "/"), delegate: next)
        expectSuccess(await next.result())
        #expect(delegate.snapshot.completions == 1)
    }

    @Test("a handle whose transfer was cancelled while it waited for a connection serves the next transfers")
    func handleCancelledWhileWaitingForAConnectionIsReusable() async throws {
        // One connection per host: the second transfer to `busy` waits inside libcurl, which has given it its
        // receive buffer by then and keeps it when the transfer is removed (libcurl 7.88), so libcurl refuses to
        // size that buffer again; the engine must not hand out that handle as it is.
        let busy = try LoopbackServer { _ in .headThenStall(contentLength: 10_000, bodyPrefix: Array("partial".utf8)) }
        defer { busy.stop() }
        let free = try LoopbackServer { _ in .respond(status: 200, body: Array("{}".utf8)) }
        defer { free.stop() }
        let engine = try CurlEngine(maxHostConnections: 1)
        defer { engine.shutdown() }

        let first = RecordingDelegate()
        let firstID = engine.start(HTTPRequest(method: "POST", url: busy.baseURL + "/stream"), delegate: first)
        #expect(await eventually { first.snapshot.body == Array("partial".utf8) })
        let waiting = RecordingDelegate()
        let waitingID = engine.start(HTTPRequest(method: "POST", url: busy.baseURL + "/stream"), delegate: waiting)
        // A transfer started later has completed: the loop has taken the waiting one through its connect step.
        let later = RecordingDelegate()
        engine.start(HTTPRequest(method: "GET", url: free.baseURL + "/"), delegate: later)
        expectSuccess(await later.result())
        #expect(busy.connectionsAccepted == 1)
        engine.cancel(waitingID)
        #expect(try #require(await waiting.failure(within: .seconds(2))).kind == .cancelled)
        engine.cancel(firstID)
        #expect(try #require(await first.failure(within: .seconds(2))).kind == .cancelled)

        // Three at once take the three idle handles, the waiting transfer's among them.
        let next = (0..<3).map { _ in RecordingDelegate() }
        for delegate in next {
            engine.start(HTTPRequest(method: "POST", url: free.baseURL + "/v1/embeddings"), delegate: delegate)
        }
        for delegate in next {
            expectSuccess(await delegate.result())
            #expect(delegate.snapshot.body == Array("{}".utf8))
        }
    }

    @Test("each transfer reads into the receive buffer it asked for, on a reused handle too; bodies arrive whole")
    func receiveBufferFollowsTheRequest() async throws {
        let answer = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let server = try LoopbackServer { _ in .respond(status: 200, body: answer) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        // One at a time, so each transfer takes the handle the one before it left (and libcurl its connection).
        for bytes in [HTTPRequest.streamReceiveBufferBytes, HTTPRequest.defaultReceiveBufferBytes,
                      HTTPRequest.streamReceiveBufferBytes] {
            let delegate = RecordingDelegate()
            engine.start(HTTPRequest(method: "POST", url: server.baseURL + "/v1/chat/completions",
                                     receiveBufferBytes: bytes), delegate: delegate)
            expectSuccess(await delegate.result())
            let record = delegate.snapshot
            #expect(record.body == answer)
            // The whole answer is sent at once, so libcurl's reads fill the buffer: the largest piece is its size.
            #expect(record.largestBodyPiece <= bytes)
            #expect(record.largestBodyPiece > bytes / 2)
        }
        #expect(server.connectionsAccepted == 1)
    }

    @Test("a transfer libcurl may run over HTTP/2 gets a receive buffer of at least 32 KB; others what they ask")
    func http2TransfersGetTheLargerReceiveBuffer() {
        func bytes(_ url: String, _ version: HTTPVersion, asked: Int) -> Int {
            HTTPRequest(method: "POST", url: url, httpVersion: version, receiveBufferBytes: asked)
                .effectiveReceiveBufferBytes
        }
        #expect(bytes("https://api.openai.com/v1/chat/completions", .http2, asked: 1024) == 32 * 1024)
        #expect(bytes("HTTPS://api.openai.com/v1/chat/completions", .http2, asked: 4096) == 32 * 1024)
        #expect(bytes("https://api.openai.com/v1/chat/completions", .http2, asked: 64 * 1024) == 64 * 1024)
        #expect(bytes("http://127.0.0.1:8000/v1/chat/completions", .http2PriorKnowledge, asked: 1024) == 32 * 1024)
        // libcurl offers HTTP/2 by ALPN only, so over TLS only: an http:// URL speaks HTTP/1.1.
        #expect(bytes("http://127.0.0.1:8000/v1/chat/completions", .http2, asked: 1024) == 1024)
        #expect(bytes("https://api.openai.com/v1/chat/completions", .http1_1, asked: 1024) == 1024)
    }

    @Test("an http:// transfer asking for HTTP/2 (so speaking HTTP/1.1) reads into the small buffer it asked for")
    func cleartextHTTP2RequestKeepsItsBuffer() async throws {
        let answer = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let server = try LoopbackServer { _ in .respond(status: 200, body: answer) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }
        let delegate = RecordingDelegate()
        engine.start(HTTPRequest(method: "POST", url: server.baseURL + "/v1/chat/completions", httpVersion: .http2,
                                 receiveBufferBytes: HTTPRequest.streamReceiveBufferBytes), delegate: delegate)
        expectSuccess(await delegate.result())
        #expect(delegate.snapshot.body == answer)
        #expect(delegate.snapshot.largestBodyPiece <= HTTPRequest.streamReceiveBufferBytes)
    }

    @Test("cancel right after start, before any response, completes with .cancelled")
    func cancelRightAfterStart() async throws {
        let server = try LoopbackServer { _ in .silence }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        engine.cancel(engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/"), delegate: delegate))
        let error = try #require(await delegate.failure(within: .seconds(2)))
        #expect(error.kind == .cancelled)
        #expect(delegate.snapshot.heads == 0)
        #expect(engine.activeTransfers == 0)
    }

    @Test(
        "the server ending the connection mid-body is connectionReset",
        arguments: [
            LoopbackServer.Action.partialBodyThenClose(contentLength: 100, bodyPrefix: Array("0123456789".utf8)),
            LoopbackServer.Action.partialBodyThenReset(contentLength: 100, bodyPrefix: Array("0123456789".utf8)),
        ]
    )
    func midBodyClose(action: LoopbackServer.Action) async throws {
        let server = try LoopbackServer { _ in action }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        engine.start(HTTPRequest(method: "POST", url: server.baseURL + "/stream"), delegate: delegate)

        let error = try #require(await delegate.failure())
        #expect(error.kind == .connectionReset)
        #expect(error.curlCode != nil)
        #expect(delegate.snapshot.contractViolations.isEmpty)
    }

    @Test("shutdown cancels transfers in flight, is idempotent, and later starts complete as cancelled")
    func shutdownCancelsEverything() async throws {
        let server = try LoopbackServer { _ in .silence }
        defer { server.stop() }
        let engine = try CurlEngine()

        let delegates = (0..<3).map { _ in RecordingDelegate() }
        for delegate in delegates {
            engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/"), delegate: delegate)
        }
        #expect(await eventually { server.requests.count == 3 })

        engine.shutdown()
        // shutdown() joined the engine thread, so every completion has already happened.
        for delegate in delegates {
            guard case .failure(let error) = delegate.snapshot.result else {
                Issue.record("transfer did not complete before shutdown() returned")
                continue
            }
            #expect(error.kind == .cancelled)
        }
        #expect(engine.activeTransfers == 0)
        engine.shutdown()

        let late = RecordingDelegate()
        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/"), delegate: late)
        guard case .failure(let error) = late.snapshot.result else {
            Issue.record("a start after shutdown did not complete at once")
            return
        }
        #expect(error.kind == .cancelled)
        #expect(await eventually { server.connectionsClosedByClient == 3 })
    }

    @Test("shutdown called from a delegate callback on the engine thread neither deadlocks nor leaves transfers")
    func shutdownFromACallback() async throws {
        let server = try LoopbackServer { request in
            request.target == "/quick" ? .respond(status: 200, body: Array("done".utf8)) : .silence
        }
        defer { server.stop() }
        let engine = try CurlEngine()

        let stalled = RecordingDelegate()
        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/stall"), delegate: stalled)
        #expect(await eventually { server.requests.count == 1 })
        let quick = CompletionHook { engine.shutdown() }
        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/quick"), delegate: quick)

        expectSuccess(await quick.recorder.result())
        let error = try #require(await stalled.failure(within: .seconds(2)))
        #expect(error.kind == .cancelled)
        #expect(engine.activeTransfers == 0)
        engine.shutdown()
    }

    @Test("releasing the engine shuts it down and cancels what is in flight")
    func releasingTheEngineShutsItDown() async throws {
        let server = try LoopbackServer { _ in .silence }
        defer { server.stop() }
        let delegate = RecordingDelegate()
        do {
            let engine = try CurlEngine()
            engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/"), delegate: delegate)
            #expect(await eventually { server.requests.count == 1 })
        }
        // deinit joined the engine thread, so the completion has already been delivered.
        guard case .failure(let error) = delegate.snapshot.result else {
            Issue.record("the transfer did not complete when the engine was released")
            return
        }
        #expect(error.kind == .cancelled)
        #expect(await eventually { server.connectionsClosedByClient == 1 })
    }

    @Test("a burst's idle libcurl handles are kept while transfers come, and freed past 8 after 2 s without one")
    func idleHandlesAreTrimmed() async throws {
        let server = try LoopbackServer { _ in
            .respond(status: 200, body: Array("ok".utf8), delay: .milliseconds(100))
        }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegates = (0..<30).map { _ in RecordingDelegate() }
        for delegate in delegates {
            engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/"), delegate: delegate)
        }
        #expect(await eventually(within: .seconds(10)) { delegates.allSatisfy { $0.snapshot.result != nil } })
        for delegate in delegates { expectSuccess(delegate.snapshot.result) }
        // All 30 ran at once, so 30 handles were made; each went back to the free list.
        #expect(engine.idleHandles == 30)
        let clock = ContinuousClock()
        let ended = clock.now
        #expect(await eventually(within: .seconds(6)) { engine.idleHandles == 8 })
        #expect(clock.now - ended >= .seconds(1.5))

        // And the ones kept serve the next call.
        let next = RecordingDelegate()
        engine.start(HTTPRequest(method: "GET", url: server.baseURL + "/"), delegate: next)
        expectSuccess(await next.result())
        #expect(engine.idleHandles == 8)
    }
}

/// Starts a TCP connect to 127.0.0.1:`port` without waiting for it to complete.
private func nonBlockingConnect(port: UInt16) throws -> Int32 {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    guard descriptor >= 0 else {
        throw LoopbackServer.POSIXFailure(call: "socket", code: errno)
    }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = port.bigEndian
    _ = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
            connect(descriptor, socketAddress, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    return descriptor
}
