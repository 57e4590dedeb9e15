@testable import BreakwaterDaemon
import BreakwaterWire
import Governance
import NIOCore
import NIOEmbedded
import Testing

/// A connection through the daemon's whole pipeline — frame decoder, frame encoder, `ConnectionHandler` — fed
/// raw bytes, on the in-process daemon's loop (so `InProcessDaemon.advance` moves its timers too).
final class WireConnection {
    let channel: EmbeddedChannel
    private let loop: EmbeddedEventLoop
    private var decoder = FrameDecoder(limits: Limits(maxFramePayload: 16 << 20))

    init(_ d: InProcessDaemon, uid: UInt32) throws {
        loop = d.loop
        channel = EmbeddedChannel(loop: d.loop)
        try channel.pipeline.syncOperations.addHandlers([
            ByteToMessageHandler(FrameDecoderHandler(limits: d.shared.limits)),
            MessageToByteHandler(FrameEncoderHandler()),
            ConnectionHandler(shared: d.shared, peer: PeerCredentials(uid: uid, gid: uid, pid: 1)),
        ])
        _ = channel.connect(to: try SocketAddress(unixDomainSocketPath: "/run/breakwater/test.sock"))
        loop.run()
    }

    func write(_ bytes: [UInt8]) throws {
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        loop.run()
    }

    func write(_ frame: Frame) throws { try write(frame.encoded()) }

    /// HELLO, and the daemon's answer.
    func hello() throws -> Frame? {
        try write(Hello.client(clientName: "wire").frame())
        return try frames().first
    }

    /// The frames the daemon wrote since the last read.
    func frames() throws -> [Frame] {
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
            decoder.feed(Array(buffer.readableBytesView)[...])
        }
        var out: [Frame] = []
        while let f = try decoder.next() { out.append(f) }
        return out
    }

    var isOpen: Bool { channel.isActive }

    /// The one ERROR on stream 0 the daemon sent before closing, if that is all it sent.
    func connectionError() throws -> ErrorMessage? {
        let all = try frames()
        guard all.count == 1, all[0].type == .error, all[0].streamID == 0 else { return nil }
        return try ErrorMessage(frame: all[0])
    }
}

/// Peers that stop part-way, or come in too great a number, in virtual time: each is closed with the code the
/// spec gives, at its timeout and not before; the gaps of a healthy connection are never timed.
@Suite struct StalledPeerTests {
    static let limits = """
        hello_timeout: 2s
        frame_timeout: 1s
        max_connections: 3
        max_connections_per_uid: 2
        """

    @Test func noHelloIsStalledAtHelloTimeout() throws {
        let d = try InProcessDaemon(limitsYAML: Self.limits)
        let c = try WireConnection(d, uid: 1000)
        d.advance(by: .milliseconds(1999))
        let quiet = try c.frames().isEmpty
        #expect(c.isOpen && quiet)
        d.advance(by: .milliseconds(1))
        let error = try #require(try c.connectionError())
        #expect(error.code == .stalled && error.message.contains("hello_timeout"), "\(error)")
        #expect(!c.isOpen)
    }

    /// A PING (10-byte header + 8 bytes) cut after `cut` bytes: in the header, right after it, or in the payload.
    @Test(arguments: [1, 9, 10, 15])
    func aFrameNotWholeIsStalledAtFrameTimeout(cut: Int) throws {
        let d = try InProcessDaemon(limitsYAML: Self.limits)
        let c = try WireConnection(d, uid: 1000)
        #expect(try c.hello()?.type == .hello)
        try c.write(Array(Frame.ping(0x0102_0304_0506_0708).encoded().prefix(cut)))
        d.advance(by: .milliseconds(999))
        let quiet = try c.frames().isEmpty
        #expect(c.isOpen && quiet, "cut at \(cut)")
        d.advance(by: .milliseconds(1))
        let error = try #require(try c.connectionError(), "cut at \(cut)")
        #expect(error.code == .stalled && error.message.contains("frame_timeout"), "\(error)")
        #expect(!c.isOpen)
    }

    /// The rest of a frame within frame_timeout is fine, however it is cut; the timer is for one frame only.
    @Test func aFrameWrittenInPiecesInTimeIsServed() throws {
        let d = try InProcessDaemon(limitsYAML: Self.limits)
        let c = try WireConnection(d, uid: 1000)
        _ = try c.hello()
        let ping = Frame.ping(0x0102_0304_0506_0708).encoded()
        for piece in [ping[0..<5], ping[5..<13], ping[13...]] {
            try c.write(Array(piece))
            d.advance(by: .milliseconds(400))
        }
        #expect(try c.frames().map(\.type) == [.pong])
        d.advance(by: .seconds(5))
        #expect(c.isOpen)
    }

    /// Idle gaps between frames and a stream that runs for ten minutes with 30 s between chunks: never timed.
    @Test func gapsAndALongStreamAreNeverTimed() throws {
        let d = try InProcessDaemon(limitsYAML: Self.limits)
        let c = try WireConnection(d, uid: 1000)
        _ = try c.hello()
        d.advance(by: .seconds(600))
        try c.write(Frame.ping(0x0102_0304_0506_0708))
        #expect(try c.frames().map(\.type) == [.pong])

        d.engine.script([.stream(chunks: 1, end: .hang)])
        try c.write(CallRequest(route: "solo", stream: true).frame(streamID: 1))
        try c.write(.data(streamID: 1, Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8), endStream: true))
        for i in 1..<20 {
            d.advance(by: .seconds(30))
            d.engine.feed(chunks: 1, from: i, end: i == 19)
            d.loop.run()
        }
        let frames = try c.frames()
        #expect(frames.filter { $0.type == .data }.count == 20)
        let last = try #require(frames.last)
        #expect(last.type == .trailers)
        #expect(try CallTrailers(frame: last).succeeded)
        #expect(c.isOpen)
    }

    /// A body that never ends fails its call alone, at the call's deadline, with TIMEOUT; the connection and a
    /// later call go on, and late DATA for the failed call is dropped.
    @Test func aBodyThatNeverEndsFailsItsCallAtItsDeadline() throws {
        let d = try InProcessDaemon(limitsYAML: Self.limits)
        let c = try WireConnection(d, uid: 1000)
        _ = try c.hello()
        try c.write(CallRequest(route: "solo", timeoutMs: 3000).frame(streamID: 1))
        try c.write(.data(streamID: 1, Array(#"{"messages":"#.utf8)))
        d.advance(by: .milliseconds(2999))
        #expect(try c.frames().isEmpty)
        d.advance(by: .milliseconds(1))
        let frames = try c.frames()
        #expect(frames.count == 1 && frames[0].streamID == 1)
        let error = try ErrorMessage(frame: frames[0])
        #expect(error.code == .timeout && error.message.contains("request body"), "\(error)")
        #expect(c.isOpen)
        try c.write(.data(streamID: 1, Array("[]}".utf8), endStream: true))
        try c.write(CallRequest(route: "solo").frame(streamID: 3))
        try c.write(.data(streamID: 3, Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8), endStream: true))
        let later = try c.frames()
        #expect(later.map(\.streamID) == [3, 3, 3] && later.last?.type == .trailers, "\(later.map(\.type))")
        #expect(d.engine.startedCount == 1)
    }

    /// max_connections_per_uid 2 and max_connections 3: the connection over a cap gets TOO_MANY_CONNECTIONS at
    /// once (before any HELLO) and is closed; a slot freed by a closed connection is taken again.
    @Test func connectionsOverACapAreRefusedAtOnce() throws {
        let d = try InProcessDaemon(limitsYAML: Self.limits)
        let a1 = try WireConnection(d, uid: 1000)
        let a2 = try WireConnection(d, uid: 1000)
        let greeted = try [a1.hello()?.type, a2.hello()?.type]
        #expect(greeted == [.hello, .hello])
        let a3 = try WireConnection(d, uid: 1000)
        let refused = try #require(try a3.connectionError())
        #expect(refused.code == .tooManyConnections && refused.message.contains("max_connections_per_uid"))
        #expect(!a3.isOpen)

        let b1 = try WireConnection(d, uid: 2000)
        #expect(try b1.hello()?.type == .hello, "another uid has room: 3 in all")
        let c1 = try WireConnection(d, uid: 3000)
        let full = try #require(try c1.connectionError())
        #expect(full.code == .tooManyConnections && full.message.contains("(max_connections 3)"), "\(full)")

        _ = a1.channel.close()
        d.loop.run()
        let a4 = try WireConnection(d, uid: 1000)
        #expect(try a4.hello()?.type == .hello, "the closed connection's slot is free again")
    }
}
