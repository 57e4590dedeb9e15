import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

/// Each kind of bad input gets its documented ERROR code on stream 0 and its connection closes, while a healthy
/// connection opened before it keeps working (a streamed call spans all the bad connections).
@Suite(.serialized, .timeLimit(.minutes(2))) struct BadInputTests {
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var expected: ErrorCode
        /// Whether to send HELLO before the bad bytes.
        var helloFirst: Bool
        var bytes: @Sendable (Limits) -> [UInt8]
        var halfClose = false
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "garbage bytes", expected: .frameTooLarge, helloFirst: false) { _ in
            Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        },
        Case(name: "truncated header", expected: .protocolError, helloFirst: true,
             bytes: { _ in [0x00, 0x00, 0x00, 0x05, 0x00] }, halfClose: true),
        Case(name: "frame over the limit", expected: .frameTooLarge, helloFirst: true) { limits in
            FrameHeader(length: limits.maxFramePayload + 1, streamID: 1, rawType: FrameType.data.rawValue,
                        flags: []).bytes
        },
        Case(name: "unknown frame type", expected: .unknownFrameType, helloFirst: true) { _ in
            FrameHeader(length: 0, streamID: 0, rawType: 0x7E, flags: []).bytes
        },
        Case(name: "call before HELLO", expected: .helloRequired, helloFirst: false) { _ in
            CallRequest(route: "default").frame(streamID: 1, endStream: true).encoded()
        },
        Case(name: "body over the limit", expected: .bodyTooLarge, helloFirst: true) { limits in
            var bytes = CallRequest(route: "default").frame(streamID: 1).encoded()
            let chunk = Array(repeating: UInt8(0x20), count: Int(limits.maxFramePayload))
            for _ in 0...(Int(limits.maxBody) / chunk.count) {
                bytes += Frame.data(streamID: 1, chunk).encoded()
            }
            return bytes
        },
        Case(name: "even stream id", expected: .invalidStreamID, helloFirst: true) { _ in
            CallRequest(route: "default").frame(streamID: 2, endStream: true).encoded()
        },
        Case(name: "bad HELLO magic", expected: .protocolError, helloFirst: false) { _ in
            Frame(streamID: 0, type: .hello, payload: Array("NOPE".utf8)).encoded()
        },
        Case(name: "unsupported version", expected: .unsupportedVersion, helloFirst: false) { _ in
            Hello.client(versions: 7...9).frame().encoded()
        },
    ]

    @Test func everyBadInputGetsItsCodeWhileAHealthyConnectionCarriesOn() async throws {
        let d = try await DaemonUnderTest.start(extraConfig: """
            limits:
              max_frame_bytes: 65536
              max_body_bytes: 262144
            """)
        defer { d.stop() }
        let healthy = d.client(name: "healthy")
        let limits = try await healthy.serverLimits()
        #expect(limits.maxFramePayload == 65536)
        #expect(limits.maxBody == 262144)

        // A slow stream on the healthy connection stays open while the bad connections come and go.
        d.fake.script([FaultStep(chunkIntervalMs: 100, chunks: 20)])
        let longStream = Task {
            var n = 0
            let s = try await healthy.stream(route: "default", body: chat((1...20).map(String.init).joined(separator: " ")))
            for try await _ in s { n += 1 }
            return (n, s.trailers?.succeeded == true)
        }
        // Only once the stream holds its scripted step may the other calls take the personality's default.
        #expect(try await waitUntil { d.fake.stats().inFlight == 1 })

        for c in Self.cases {
            let raw = try RawConnection(path: d.socket)
            if c.helloFirst { try raw.hello() }
            raw.write(c.bytes(limits))
            if c.halfClose { raw.shutdownWrite() }
            let frame = try raw.read()
            let f = try #require(frame, "\(c.name): connection closed without an ERROR frame")
            #expect(f.type == .error && f.streamID == 0, "\(c.name): got \(f.type) on stream \(f.streamID)")
            let message = try ErrorMessage(frame: f)
            #expect(message.code == c.expected, "\(c.name): got \(message.code.name): \(message.message)")
            #expect(!message.message.isEmpty)
            #expect(try raw.isClosedByPeer(), "\(c.name): connection stayed open")

            // Meanwhile, a plain call on the healthy connection still works.
            let r = try await healthy.send(route: "default", body: chat("still fine after \(c.name)"))
            #expect(content(r.body) == "Echo: still fine after \(c.name)")
        }
        // The fake counts a call done only once its last byte is written, just after the client has it: wait.
        #expect(try await waitUntil(timeout: .seconds(1)) { d.fake.stats().inFlight == 1 },
                "the long stream should still be open after all the bad input")
        let (chunks, ok) = try await longStream.value
        #expect(ok)
        #expect(chunks >= 20)
        // The daemon is still up and serves new connections.
        let fresh = try await d.client(name: "fresh").send(route: "default", body: chat("new connection"))
        #expect(content(fresh.body) == "Echo: new connection")
    }
}

extension FrameHeader {
    var bytes: [UInt8] {
        var out: [UInt8] = []
        write(into: &out)
        return out
    }
}
