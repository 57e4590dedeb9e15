@testable import BreakwaterDaemon
import BreakwaterWire
import NIOCore
import NIOEmbedded
import Testing

/// Flow control on the real call path, in-process (PROTOCOL.md, "Flow control"): a call's DATA stops at its credit
/// and the provider's transfer is paused, WINDOW_UPDATE lets it go on; a full socket pauses every call on the
/// connection; the frame's rules. The scripted engine asks the delegate before each event, as libcurl's write
/// callback does.
@Suite struct FlowControlTests {
    /// The DATA bytes among `frames`.
    static func dataBytes(_ frames: [Frame]) -> Int {
        frames.filter { $0.type == .data }.reduce(0) { $0 + $1.payload.count }
    }

    @Test func aStreamStopsAtItsCreditAndGoesOnWhenGranted() throws {
        let d = try InProcessDaemon()
        let hello = try d.hello(streamWindow: 1000)
        #expect(hello.streamWindow == 1000, "the daemon agrees, echoing the window")
        d.engine.script([.stream(chunks: 100, end: .done)])
        try d.call(1, stream: true)
        var frames = try d.drain()
        let chunk = ScriptedEngine.chunk(50).utf8.count
        var sent = Self.dataBytes(frames)
        #expect(sent >= 1000 && sent < 1000 + chunk + 8, "stopped within one event of the window: \(sent) bytes")
        #expect(d.engine.pausedCount == 1, "the provider's transfer is paused, not drained")
        #expect(!frames.contains { $0.type == .trailers })

        // Nothing more comes while no credit does.
        d.advance(by: .seconds(30))
        #expect(try d.drain().isEmpty)

        // Each grant lets about that much more through, never more than one event past it.
        var granted = 1000
        var grants = 0
        while !frames.contains(where: { $0.type == .trailers }), grants < 100 {
            try d.send(WindowUpdate(increment: 1000).frame(streamID: 1))
            granted += 1000
            grants += 1
            let more = try d.drain()
            sent += Self.dataBytes(more)
            frames += more
            #expect(sent < granted + chunk + 8, "\(sent) bytes sent for \(granted) granted")
        }
        #expect(frames.filter { $0.type == .data }.count == 100, "every chunk arrived, in the end")
        let trailers = try CallTrailers(frame: try #require(frames.last))
        #expect(trailers.error == nil)
        #expect(d.engine.resumedCount >= grants - 1)
        d.expectNothingHeld()
    }

    @Test func withoutFlowControlAStreamIsNotHeldBack() throws {
        let d = try InProcessDaemon()
        #expect(try d.hello().streamWindow == nil, "not asked, not agreed")
        d.engine.script([.stream(chunks: 100, end: .done)])
        try d.call(1, stream: true)
        let frames = try d.drain()
        #expect(frames.filter { $0.type == .data }.count == 100)
        #expect(frames.last?.type == .trailers)
        #expect(d.engine.pausedCount == 0 && d.engine.resumedCount == 0)
    }

    /// The connection-wide bound, for every client: while the socket's write buffer is over its high-water mark,
    /// every call on the connection stops reading its provider; when it drains, they go on.
    @Test func aFullSocketPausesEveryCallOnTheConnection() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.stream(chunks: 10, end: .done), .stream(chunks: 10, end: .done)])
        d.channel.isWritable = false
        d.channel.pipeline.fireChannelWritabilityChanged()
        try d.call(1, stream: true)
        try d.call(3, stream: true)
        #expect(try d.drain().isEmpty)
        #expect(d.engine.pausedCount == 2)

        d.channel.isWritable = true
        d.channel.pipeline.fireChannelWritabilityChanged()
        d.loop.run()
        let frames = try d.drain()
        for id: StreamID in [1, 3] {
            let mine = frames.filter { $0.streamID == id }
            #expect(mine.filter { $0.type == .data }.count == 10)
            #expect(mine.last?.type == .trailers)
        }
        #expect(d.engine.pausedCount == 0)
    }

    /// A whole (non-streamed) answer is not paused half-way: it is needed whole. It goes out whole, its bytes
    /// spent from the credit.
    @Test func aWholeAnswerGoesOutWhole() throws {
        let d = try InProcessDaemon()
        _ = try d.hello(streamWindow: 10)
        try d.call(1)
        #expect(try d.drain().map(\.type) == [.response, .data, .trailers])
    }

    @Test func windowUpdateWithoutAgreedFlowControlIsAProtocolError() throws {
        let d = try InProcessDaemon()
        _ = try d.hello()
        d.engine.script([.hang])
        try d.call(1, stream: true)
        try d.send(WindowUpdate(increment: 100).frame(streamID: 1))
        let error = try #require(try d.drain().first { $0.streamID == 0 })
        #expect(try ErrorMessage(frame: error).code == .protocolError)
    }

    @Test func windowUpdateOnAStreamNeverOpenedIsAProtocolError() throws {
        let d = try InProcessDaemon()
        _ = try d.hello(streamWindow: 1000)
        try d.send(WindowUpdate(increment: 100).frame(streamID: 7))
        let error = try #require(try d.drain().first)
        #expect(error.streamID == 0)
        #expect(try ErrorMessage(frame: error).code == .protocolError)
    }

    /// For a call that ended (the client may not know yet), credit is ignored, as CANCEL is.
    @Test func windowUpdateForAnEndedCallIsIgnored() throws {
        let d = try InProcessDaemon()
        _ = try d.hello(streamWindow: 1000)
        try d.call(1)
        #expect(try d.drain().last?.type == .trailers)
        try d.send(WindowUpdate(increment: 100).frame(streamID: 1))
        #expect(try d.drain().isEmpty)
        try d.call(3)
        #expect(try d.drain().map(\.type) == [.response, .data, .trailers], "the connection goes on")
    }

    @Test func creditPastTheMostAStreamMayHoldIsAProtocolError() throws {
        let d = try InProcessDaemon()
        _ = try d.hello(streamWindow: 1000)
        d.engine.script([.hang])
        try d.call(1, stream: true)
        try d.send(WindowUpdate(increment: WindowUpdate.maxCredit).frame(streamID: 1))
        let error = try #require(try d.drain().first { $0.streamID == 0 })
        #expect(try ErrorMessage(frame: error).code == .protocolError)
        #expect(d.engine.cancelledCount == 1, "the connection's call stopped with it")
    }

    /// Credit granted while the body is still arriving counts once the call runs.
    @Test func creditGrantedBeforeTheBodyEndsCounts() throws {
        let d = try InProcessDaemon()
        _ = try d.hello(streamWindow: 1)
        d.engine.script([.stream(chunks: 20, end: .done)])
        try d.send(CallRequest(route: "solo", stream: true).frame(streamID: 1))
        try d.send(WindowUpdate(increment: 100_000).frame(streamID: 1))
        try d.send(.data(streamID: 1, Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8), endStream: true))
        let frames = try d.drain()
        #expect(frames.filter { $0.type == .data }.count == 20)
        #expect(d.engine.pausedCount == 0)
    }
}
