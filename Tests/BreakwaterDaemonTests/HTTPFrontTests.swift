@testable import BreakwaterDaemon
import BreakwaterWire
import Config
import Foundation
import Governance
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// An HTTP connection through the daemon's whole HTTP pipeline — the connection guard, NIO's HTTP/1 codec with
/// its pipelining and error handlers, the front — fed raw bytes on the in-process daemon's loop, with the scripted
/// engine as the provider and virtual time.
final class HTTPConnection {
    let channel: EmbeddedChannel
    private let loop: EmbeddedEventLoop

    init(_ d: InProcessDaemon, uid: UInt32 = 0, config: HTTPFrontConfig = HTTPFrontConfig()) throws {
        loop = d.loop
        channel = EmbeddedChannel(loop: d.loop)
        let settings = HTTPFrontSettings(config, overTCP: false)
        let peer = PeerCredentials(uid: uid, gid: uid, pid: 7)
        let front = HTTPFrontHandler(shared: d.shared, settings: settings, peer: peer)
        let connectionGuard = HTTPConnectionGuard(shared: d.shared, settings: settings, peer: peer, front: front)
        front.connectionGuard = connectionGuard
        try channel.pipeline.syncOperations.addHandler(connectionGuard)
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true,
                                                                        withErrorHandling: true)
        try channel.pipeline.syncOperations.addHandler(front)
        _ = channel.connect(to: try SocketAddress(unixDomainSocketPath: "/run/breakwater/http.sock"))
        loop.run()
    }

    func write(_ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
        loop.run()
    }

    /// A POST of `body` to the chat-completions endpoint, with `headers` (each `Name: value`).
    func post(_ body: String, headers: [String] = []) throws {
        let extra = headers.map { $0 + "\r\n" }.joined()
        try write("POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Length: \(body.utf8.count)\r\n"
                  + extra + "\r\n" + body)
    }

    /// Everything the daemon wrote since the last read, as text.
    func read() throws -> String {
        var out = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
            out += String(decoding: buffer.readableBytesView, as: UTF8.self)
        }
        return out
    }

    var isOpen: Bool { channel.isActive }
}

extension String {
    /// The status code of the first response in this text.
    var httpStatus: Int? {
        guard hasPrefix("HTTP/1.1 ") else { return nil }
        return Int(dropFirst(9).prefix(3))
    }

    /// The body after the first blank line (of a response with Content-Length).
    var httpBody: String {
        components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
    }

    /// The SSE `data:` values in this text, in order.
    var sseData: [String] {
        // Foundation's newline split: Swift's own treats "\r\n" (chunked encoding's) as one character.
        components(separatedBy: .newlines).filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
    }
}

@Suite struct HTTPFrontTests {
    static let chat = #"{"model":"solo","messages":[{"role":"user","content":"hi"}]}"#
    static let streamed = #"{"model":"solo","stream":true,"messages":[{"role":"user","content":"hi"}]}"#

    @Test func aPlainCallIsOneJSONAnswerWithWhoAnswered() throws {
        let d = try InProcessDaemon()
        let c = try HTTPConnection(d)
        try c.post(Self.chat)
        let answer = try c.read()
        #expect(answer.httpStatus == 200, "\(answer)")
        #expect(answer.contains("x-breakwater-provider: p\r\n") && answer.contains("x-breakwater-attempts: 1\r\n"))
        let json = try JSONSerialization.jsonObject(with: Data(answer.httpBody.utf8)) as? [String: Any]
        #expect(json?["object"] as? String == "chat.completion")
        #expect(c.isOpen, "keep-alive")
        #expect(d.engine.startedCount == 1)
        d.expectNothingHeld()
    }

    /// The same call as a REQUEST frame would make: a 503 is retried after its backoff, in virtual time.
    @Test func theSameResilienceEngine() throws {
        let d = try InProcessDaemon()
        let c = try HTTPConnection(d)
        d.engine.script([.status(503, body: ScriptedEngine.overloaded)])
        try c.post(Self.chat)
        #expect(try c.read().isEmpty, "waiting out the backoff")
        d.advance(by: .milliseconds(100))
        let answer = try c.read()
        #expect(answer.httpStatus == 200 && answer.contains("x-breakwater-attempts: 2\r\n"), "\(answer)")
    }

    @Test func aStreamIsServerSentEventsEndingWithDone() throws {
        let d = try InProcessDaemon()
        let c = try HTTPConnection(d)
        d.engine.script([.stream(chunks: 3, end: .done)])
        try c.post(Self.streamed)
        let answer = try c.read()
        #expect(answer.httpStatus == 200 && answer.contains("content-type: text/event-stream"), "\(answer)")
        let events = answer.sseData
        #expect(events.count == 4 && events.last == "[DONE]", "\(events)")
        #expect(events.dropLast().allSatisfy { $0.contains(#""object":"chat.completion.chunk""#) })
    }

    @Test func aStreamCutAfterItBeganEndsWithAnErrorEventNotDone() throws {
        let d = try InProcessDaemon()
        let c = try HTTPConnection(d)
        d.engine.script([.stream(chunks: 2, end: .reset)])
        try c.post(Self.streamed)
        let events = try c.read().sseData
        #expect(!events.contains("[DONE]"), "\(events)")
        let last = try JSONSerialization.jsonObject(with: Data((events.last ?? "").utf8)) as? [String: Any]
        #expect((last?["error"] as? [String: Any])?["code"] as? String == "STREAM_INTERRUPTED", "\(events)")
    }

    @Test func everyTargetFailingIsTheProvidersStatusWithEveryAttempt() throws {
        let d = try InProcessDaemon()
        let c = try HTTPConnection(d)
        d.engine.script(Array(repeating: .status(503, body: ScriptedEngine.overloaded), count: 3))
        try c.post(Self.chat)
        d.advance(by: .seconds(1))
        let answer = try c.read()
        #expect(answer.httpStatus == 503 && answer.contains("x-should-retry: false\r\n"), "\(answer)")
        let error = (try JSONSerialization.jsonObject(with: Data(answer.httpBody.utf8)) as? [String: Any])?["error"]
            as? [String: Any]
        #expect(error?["code"] as? String == "UPSTREAM_ERROR" && (error?["attempts"] as? [Any])?.count == 3)
    }

    @Test func unknownRoutesAndBadBodiesAreRefusedBeforeAnyAttempt() throws {
        let d = try InProcessDaemon()
        let c = try HTTPConnection(d)
        try c.post(#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#)
        #expect(try c.read().httpStatus == 404)
        try c.post(#"{"model":"solo","messages":[]}"#)
        #expect(try c.read().httpStatus == 400)
        // The header names the route whatever the model says.
        try c.post(#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
                   headers: ["X-Breakwater-Route: chain"])
        #expect(try c.read().httpStatus == 200)
        #expect(d.engine.startedCount == 1)
    }

    @Test func closingTheConnectionCancelsTheCallUpstream() throws {
        let d = try InProcessDaemon()
        let c = try HTTPConnection(d)
        d.engine.script([.stream(chunks: 1, end: .hang)])
        try c.post(Self.streamed)
        #expect(try c.read().sseData.count == 1)
        _ = c.channel.close()
        d.loop.run()
        #expect(d.engine.cancelledCount == 1)
        d.expectNothingHeld()
    }

    /// Slow-loris in virtual time: a head never finished gets 408 at `request_timeout`, not before.
    @Test func aRequestNotWholeInTimeIs408AndTheConnectionCloses() throws {
        let d = try InProcessDaemon()
        let c = try HTTPConnection(d)
        try c.write("POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\n")
        d.advance(by: .milliseconds(9_999))
        #expect(try c.read().isEmpty && c.isOpen)
        d.advance(by: .milliseconds(1))
        #expect(try c.read().httpStatus == 408)
        d.loop.run()
        #expect(!c.isOpen)
    }

    /// An idle keep-alive connection is closed after `idle_timeout`; the wait between requests is not a slow
    /// request.
    @Test func anIdleKeepAliveConnectionClosesQuietly() throws {
        let d = try InProcessDaemon()
        let c = try HTTPConnection(d)
        try c.post(Self.chat)
        #expect(try c.read().httpStatus == 200)
        d.advance(by: .seconds(59))
        #expect(c.isOpen, "idle for less than idle_timeout")
        try c.post(Self.chat)
        #expect(try c.read().httpStatus == 200, "a request after 59 s idle is served")
        d.advance(by: .seconds(61))
        #expect(try c.read().isEmpty)
        #expect(!c.isOpen)
    }

    @Test func metricsAreForAdmins() throws {
        let d = try InProcessDaemon()
        let admin = try HTTPConnection(d, uid: 0)
        try admin.post(Self.chat)
        _ = try admin.read()
        try admin.write("GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
        let metrics = try admin.read()
        #expect(metrics.httpStatus == 200, "\(metrics.prefix(200))")
        #expect(metrics.contains(#"breakwater_calls_total{route="solo",outcome="ok"} 1"#), "\(metrics)")
        let other = try HTTPConnection(d, uid: 1234)
        try other.write("GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
        #expect(try other.read().httpStatus == 403)
    }
}
