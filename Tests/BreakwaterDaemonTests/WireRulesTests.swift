@testable import BreakwaterDaemon
import BreakwaterWire
import NIOCore
import NIOEmbedded
import Testing

/// The protocol's rules as the daemon applies them on the wire (PROTOCOL.md): what fails one call, what ends the
/// connection, and what is checked from a frame's header alone.
@Suite struct WireRulesTests {
    static let body = Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8)

    /// A REQUEST without a route, one with an over-long request id, and an ADMIN without a command each fail
    /// their own call with BAD_REQUEST; their DATA is dropped, and the connection's next call is answered.
    @Test func unusableCallFieldsFailTheCallNotTheConnection() throws {
        let d = try InProcessDaemon()
        let c = try WireConnection(d, uid: 1000)
        _ = try c.hello()
        var noRoute = FieldWriter()
        noRoute.uint8(2, 0)
        try c.write(Frame(streamID: 1, type: .request, payload: noRoute.bytes))
        try c.write(.data(streamID: 1, Self.body, endStream: true))
        try c.write(CallRequest(route: "solo", requestID: String(repeating: "x", count: 129))
            .frame(streamID: 3, endStream: true))
        try c.write(Frame(streamID: 5, type: .admin, flags: .endStream, payload: []))
        try c.write(CallRequest(route: "solo").frame(streamID: 7))
        try c.write(.data(streamID: 7, Self.body, endStream: true))
        let frames = try c.frames()
        let errors = try frames.filter { $0.type == .error }.map { ($0.streamID, try ErrorMessage(frame: $0).code) }
        #expect(errors.map(\.0) == [1, 3, 5] && errors.allSatisfy { $0.1 == .badRequest }, "\(errors)")
        #expect(frames.filter { $0.streamID == 7 }.map(\.type) == [.response, .data, .trailers])
        #expect(c.isOpen)
    }

    /// Before HELLO a client may send a frame of 65,536 bytes even where max_frame_bytes is lower.
    @Test func aLongHelloIsAcceptedBelowMaxFrameBytes() throws {
        let d = try InProcessDaemon(limitsYAML: "max_frame_bytes: 1024")
        let c = try WireConnection(d, uid: 1000)
        let hello = Hello.client(clientName: String(repeating: "n", count: 4000)).frame()
        #expect(hello.payload.count > 1024)
        try c.write(hello)
        let answer = try #require(try c.frames().first)
        #expect(try Hello(frame: answer).limits?.maxFramePayload == 1024)
        try c.write(Frame.data(streamID: 1, Array(repeating: 0, count: 1025)))
        #expect(try c.connectionError()?.code == .frameTooLarge, "after HELLO the announced limit holds")
    }

    /// A first frame that is not HELLO is refused from its header: the daemon does not wait for its payload.
    @Test func helloRequiredIsJudgedFromTheHeader() throws {
        let d = try InProcessDaemon()
        let c = try WireConnection(d, uid: 1000)
        try c.write(FrameHeader(length: 500, streamID: 1, rawType: FrameType.request.rawValue, flags: []).wire)
        #expect(try c.connectionError()?.code == .helloRequired)
        #expect(!c.isOpen)
    }

    /// PONG of the wrong length, CANCEL with a payload: PROTOCOL_ERROR.
    @Test(arguments: [FrameHeader(length: 3, streamID: 0, rawType: FrameType.pong.rawValue, flags: []),
                      FrameHeader(length: 2, streamID: 1, rawType: FrameType.cancel.rawValue, flags: [])])
    func fixedLengthFramesOfTheWrongLength(header: FrameHeader) throws {
        let d = try InProcessDaemon()
        let c = try WireConnection(d, uid: 1000)
        _ = try c.hello()
        try c.write(header.wire + Array(repeating: 0, count: Int(header.length)))
        #expect(try c.connectionError()?.code == .protocolError)
    }
}

extension FrameHeader {
    /// The header's 10 bytes.
    var wire: [UInt8] {
        var out: [UInt8] = []
        write(into: &out)
        return out
    }
}

/// A streamed event larger than max_frame_payload is never split: the call ends with EVENT_TOO_LARGE after the
/// events already forwarded, the transfer is stopped, and nothing is retried.
@Suite struct OversizedEventTests {
    @Test func anEventLargerThanAFrameEndsTheStream() throws {
        let d = try InProcessDaemon(limitsYAML: "max_frame_bytes: 1024")
        _ = try d.hello()
        d.engine.script([.stream(chunks: 1, end: .hang)])
        try d.call(1, route: "chain", stream: true)
        let big = #"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""#
            + String(repeating: "x", count: 2000) + #""},"finish_reason":null}]}"#
        d.engine.feed(event: big)
        d.loop.run()
        let frames = try d.drain()
        #expect(frames.map(\.type) == [.response, .data, .trailers], "\(frames.map(\.type))")
        let trailers = try CallTrailers(frame: try #require(frames.last))
        #expect(trailers.error == .eventTooLarge && trailers.message?.contains("1024") == true)
        #expect(d.engine.cancelledCount == 1, "the provider's transfer is stopped")
        #expect(d.engine.startedCount == 1, "not retried, no fallback")
        d.expectNothingHeld()
    }

    @Test func anOversizedFirstEventIsAnError() throws {
        let d = try InProcessDaemon(limitsYAML: "max_frame_bytes: 1024")
        _ = try d.hello()
        d.engine.script([.stream(chunks: 0, end: .hang)])
        try d.call(1, stream: true)
        d.engine.feed(event: #"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""#
            + String(repeating: "y", count: 1500) + #""},"finish_reason":null}]}"#)
        d.loop.run()
        let frames = try d.drain()
        #expect(frames.map(\.type) == [.error])
        #expect(try ErrorMessage(frame: try #require(frames.last)).code == .eventTooLarge)
    }
}
