import BreakwaterWire
import Testing

/// The frames of a realistic exchange, used to check that decoding does not depend on how bytes are split.
private func sampleFrames() -> [Frame] {
    let body = Array(#"{"messages":[{"role":"user","content":"Hello there"}]}"#.utf8)
    return [
        Hello.client(credential: Array("secret-token".utf8), clientName: "test").frame(),
        CallRequest(route: "default", stream: true, timeoutMs: 5000, requestID: "r1").frame(streamID: 1),
        .data(streamID: 1, body, endStream: true),
        CallResponse(status: 200, provider: "openai", model: "gpt-4o-mini", attempts: 1, requestID: "r1")
            .frame(streamID: 1),
        .data(streamID: 1, Array(repeating: 0x61, count: 5000)),
        CallTrailers(promptTokens: 3, completionTokens: 4, totalTokens: 7).frame(streamID: 1),
        ErrorMessage(code: .upstreamError, message: "provider answered HTTP 503", upstreamStatus: 503)
            .frame(streamID: 3),
        .cancel(streamID: 5),
        .ping(0x0102_0304_0506_0708),
        GoAway(lastStreamID: 5).frame(),
        .data(streamID: 7, []),
    ]
}

@Suite struct DripFeedDecoding {
    let frames = sampleFrames()
    var wire: [UInt8] { frames.flatMap { $0.encoded() } }

    @Test func byteAtATime() throws {
        var decoder = FrameDecoder()
        var out: [Frame] = []
        for byte in wire {
            decoder.feed(CollectionOfOne(byte))
            while let f = try decoder.next() { out.append(f) }
        }
        #expect(out == frames)
        try decoder.finish()
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] as [UInt64])
    func randomSplits(seed: UInt64) throws {
        var rng = SplitMix(seed: seed)
        let bytes = wire
        var decoder = FrameDecoder()
        var out: [Frame] = []
        var i = 0
        while i < bytes.count {
            let n = min(bytes.count - i, Int(rng.next() % 40) + 1)
            decoder.feed(bytes[i..<(i + n)])
            i += n
            while let f = try decoder.next() { out.append(f) }
        }
        #expect(out == frames)
        try decoder.finish()
    }

    @Test func truncatedHeaderIsReportedAtEnd() throws {
        var decoder = FrameDecoder()
        decoder.feed(wire.prefix(5))
        #expect(try decoder.next() == nil)
        #expect(throws: WireError.self) { try decoder.finish() }
    }

    @Test func oversizedFrameRefusedBeforePayload() {
        var decoder = FrameDecoder(limits: Limits(maxFramePayload: 1024))
        decoder.feed(Frame.data(streamID: 1, Array(repeating: 0, count: 2048)).encoded().prefix(10))
        #expect { try decoder.next() } throws: { ($0 as? WireError)?.code == .frameTooLarge }
    }
}

@Suite struct MessageRules {
    @Test func versionNegotiation() {
        #expect(Hello.client(versions: 1...3).negotiate(supported: 1...1) == 1)
        #expect(Hello.client(versions: 2...3).negotiate(supported: 1...1) == nil)
        #expect(Hello.client(versions: 1...3).negotiate(supported: 2...5) == 3)
    }

    /// An over-long request id fails the call (BAD_REQUEST, a call code), not the connection.
    @Test func requestIDLimit() {
        let long = String(repeating: "x", count: 129)
        let frame = CallRequest(route: "r", requestID: long).frame(streamID: 1)
        #expect { try CallRequest(frame: frame) } throws: { ($0 as? WireError)?.code == .badRequest }
        #expect(!ErrorCode.badRequest.isConnectionError)
    }

    /// A bool is 0 or 1; any other byte is malformed.
    @Test func aBoolOfTwoIsRefused() {
        var w = FieldWriter()
        w.string(1, "default")
        w.uint8(2, 2)
        let frame = Frame(streamID: 1, type: .request, payload: w.bytes)
        #expect { try CallRequest(frame: frame) } throws: { ($0 as? WireError)?.code == .protocolError }
    }

    /// HELLO's limit fields are width-checked each on its own, present or not beside the others.
    @Test func helloLimitFieldsAreWidthCheckedAlone() {
        for tag: UInt16 in [7, 8] {
            var w = FieldWriter()
            w.uint16(1, 1)
            w.uint16(2, 1)
            w.uint16(tag, 9)  // 2 bytes where a u32 belongs
            let frame = Frame(streamID: 0, type: .hello, payload: Hello.magic + w.bytes)
            #expect(throws: WireError.self, "field \(tag)") { try Hello(frame: frame) }
        }
    }

    /// PING and PONG carry exactly 8 bytes, CANCEL and STARTED none: refused from the header alone.
    @Test func payloadLengthsFixedByTheTypeAreCheckedFromTheHeader() {
        for (type, stream, length) in [(FrameType.pong, UInt32(0), UInt32(7)), (.ping, 0, 9), (.cancel, 1, 1),
                                       (.started, 1, 4)] {
            let header = FrameHeader(length: length, streamID: stream, rawType: type.rawValue, flags: [])
            #expect(throws: WireError.self, "\(type) of \(length) bytes") {
                try header.validate(limits: .default)
            }
        }
    }

    @Test func wrongFieldWidthIsRefused() {
        var w = FieldWriter()
        w.string(1, "default")
        w.uint32(2, 1)  // "stream" must be one byte
        let frame = Frame(streamID: 1, type: .request, payload: w.bytes)
        #expect { try CallRequest(frame: frame) } throws: { ($0 as? WireError)?.code == .protocolError }
    }

    @Test(arguments: [
        (ErrorCode.frameTooLarge, true), (.helloRequired, true), (.bodyTooLarge, true),
        (.cancelled, false), (.upstreamError, false), (.streamInterrupted, false),
    ])
    func connectionVersusCallCodes(code: ErrorCode, isConnection: Bool) {
        #expect(code.isConnectionError == isConnection)
    }
}

/// A small deterministic generator so failures reproduce.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
