// libFuzzer target: the frame decoder and every message decoder, on arbitrary bytes.
// Built by scripts/fuzz.sh with `swiftc -sanitize=fuzzer,address` together with Sources/BreakwaterWire.
// Bad input must come back as a WireError; a crash, a trap or a hang is a bug.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWire(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard let control = input.first else { return 0 }
    let bytes = Array(input.dropFirst())
    // The first byte picks the limits and where the input is cut in two, as a socket would deliver it.
    let limits = control & 1 == 0 ? Limits.preHello : Limits(maxFramePayload: 1024, maxBody: 4096)
    let cut = bytes.isEmpty ? 0 : Int(control >> 1) % (bytes.count + 1)
    var decoder = FrameDecoder(limits: limits)
    for piece in [bytes[..<cut], bytes[cut...]] {
        decoder.feed(piece)
        do {
            while let frame = try decoder.next() { decodeMessage(frame) }
        } catch {
            return 0  // a connection error: the daemon would close here
        }
    }
    return 0
}

/// Every typed decoder the frame's type has, and the re-encoding of what it accepted.
func decodeMessage(_ frame: Frame) {
    do {
        switch frame.type {
        case .hello:
            let h = try Hello(frame: frame)
            _ = h.negotiate()
            _ = h.frame()
        case .request: _ = try CallRequest(frame: frame).frame(streamID: frame.streamID)
        case .response: _ = try CallResponse(frame: frame).frame(streamID: frame.streamID)
        case .trailers: _ = try CallTrailers(frame: frame).frame(streamID: frame.streamID)
        case .error: _ = try ErrorMessage(frame: frame).frame(streamID: frame.streamID)
        case .goAway: _ = try GoAway(frame: frame).frame()
        case .notice: _ = try CallNotice(frame: frame).frame(streamID: frame.streamID)
        case .admin: _ = try AdminRequest(frame: frame).frame(streamID: frame.streamID)
        case .windowUpdate: _ = try WindowUpdate(frame: frame).frame(streamID: frame.streamID)
        case .authorize: _ = try AuthorizeRequest(frame: frame).frame(streamID: frame.streamID)
        case .data:
            // An AUTHORIZE decision travels in DATA as a field list.
            if let decision = try? ActionDecision(payload: frame.payload) { _ = decision.payload }
            _ = frame.encoded()
        case .cancel, .ping, .pong, .started: _ = frame.encoded()
        }
    } catch {
        _ = error.code.name
    }
}
