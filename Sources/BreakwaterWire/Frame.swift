/// The kinds of frame in protocol v1. Values are fixed by `protocol/PROTOCOL.md`.
public enum FrameType: UInt8, Sendable, CaseIterable {
    case hello = 0x01
    case request = 0x02
    case data = 0x03
    case response = 0x04
    case trailers = 0x05
    case error = 0x06
    case cancel = 0x07
    case ping = 0x08
    case pong = 0x09
    case goAway = 0x0A
    /// Daemon → client on a call's stream: the call is waiting (e.g. for a human approval); it continues.
    case notice = 0x0B
    /// Client → daemon: an admin command on a new call stream; its JSON arguments follow in DATA frames.
    case admin = 0x0C
    /// The call's first upstream request is about to go out (only to clients that asked in HELLO).
    case started = 0x0D
    /// Client → daemon on a call's stream: more credit for the daemon's DATA on it (flow control, see HELLO).
    case windowUpdate = 0x0E
    /// Client → daemon: may the agent perform an action now? On a new call stream; the action's JSON arguments
    /// follow in DATA frames. Answered through the policy's gate, with no LLM call.
    case authorize = 0x0F
}

/// Frame flags. Only `endStream` is defined in v1; other bits must be zero.
public struct FrameFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// On REQUEST: no body follows. On DATA from the client: last body frame. On TRAILERS: always set.
    public static let endStream = FrameFlags(rawValue: 0x01)
    public static let known: FrameFlags = [.endStream]
}

/// A stream id: 0 is the connection itself, odd ids are calls the client opened.
public typealias StreamID = UInt32

/// The fixed 10-byte header in front of every frame: payload length, stream id, type, flags (all big-endian).
public struct FrameHeader: Sendable, Hashable {
    public static let size = 10

    public var length: UInt32
    public var streamID: StreamID
    /// Raw type byte: an unknown value is kept so the receiver can answer `UNKNOWN_FRAME_TYPE`.
    public var rawType: UInt8
    public var flags: FrameFlags

    public init(length: UInt32, streamID: StreamID, rawType: UInt8, flags: FrameFlags) {
        self.length = length
        self.streamID = streamID
        self.rawType = rawType
        self.flags = flags
    }

    public var type: FrameType? { FrameType(rawValue: rawType) }

    /// Reads a header from the first `FrameHeader.size` bytes of `bytes`; `nil` when fewer are there.
    public static func parse<C: Collection<UInt8>>(_ bytes: C) -> FrameHeader? where C.Index == Int {
        guard bytes.count >= size else { return nil }
        let s = bytes.startIndex
        return FrameHeader(
            length: readUInt32(bytes, at: s),
            streamID: readUInt32(bytes, at: s + 4),
            rawType: bytes[s + 8],
            flags: FrameFlags(rawValue: bytes[s + 9])
        )
    }

    /// Checks everything that can be checked from the header alone, in the order the spec gives.
    public func validate(limits: Limits) throws(WireError) {
        if length > limits.maxFramePayload {
            throw WireError(.frameTooLarge,
                            "frame payload of \(length) bytes exceeds the limit of \(limits.maxFramePayload)")
        }
        guard let type else {
            throw WireError(.unknownFrameType, "unknown frame type 0x\(String(rawType, radix: 16))")
        }
        if streamID & 0x8000_0000 != 0 {
            throw WireError(.protocolError, "reserved high bit of the stream id is set")
        }
        if !flags.subtracting(.known).isEmpty {
            throw WireError(.protocolError, "undefined flag bits 0x\(String(flags.rawValue, radix: 16)) on \(type)")
        }
        switch type {
        case .hello, .ping, .pong, .goAway:
            if streamID != 0 { throw WireError(.protocolError, "\(type) frame must be on stream 0") }
        case .request, .data, .response, .trailers, .cancel, .notice, .admin, .started, .windowUpdate, .authorize:
            if streamID == 0 { throw WireError(.invalidStreamID, "\(type) frame must not be on stream 0") }
        case .error:
            break
        }
        switch type {
        case .ping, .pong:
            if length != 8 { throw WireError(.protocolError, "\(type) payload must be 8 bytes, not \(length)") }
        case .cancel, .started:
            if length != 0 { throw WireError(.protocolError, "\(type) payload must be empty, not \(length) bytes") }
        case .windowUpdate:
            if length != 4 { throw WireError(.protocolError, "\(type) payload must be 4 bytes, not \(length)") }
        default:
            break
        }
    }

    public func write(into out: inout [UInt8]) {
        appendUInt32(length, to: &out)
        appendUInt32(streamID, to: &out)
        out.append(rawType)
        out.append(flags.rawValue)
    }
}

/// One whole frame: header fields plus its payload bytes.
public struct Frame: Sendable, Hashable {
    public var streamID: StreamID
    public var type: FrameType
    public var flags: FrameFlags
    public var payload: [UInt8]

    public init(streamID: StreamID, type: FrameType, flags: FrameFlags = [], payload: [UInt8] = []) {
        self.streamID = streamID
        self.type = type
        self.flags = flags
        self.payload = payload
    }

    public var header: FrameHeader {
        FrameHeader(length: UInt32(payload.count), streamID: streamID, rawType: type.rawValue, flags: flags)
    }

    /// The frame's bytes on the wire.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(FrameHeader.size + payload.count)
        encode(into: &out)
        return out
    }

    public func encode(into out: inout [UInt8]) {
        header.write(into: &out)
        out.append(contentsOf: payload)
    }
}

@inline(__always)
func readUInt32<C: Collection<UInt8>>(_ b: C, at i: Int) -> UInt32 where C.Index == Int {
    UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
}

@inline(__always)
func readUInt16<C: Collection<UInt8>>(_ b: C, at i: Int) -> UInt16 where C.Index == Int {
    UInt16(b[i]) << 8 | UInt16(b[i + 1])
}

@inline(__always)
func appendUInt32(_ v: UInt32, to out: inout [UInt8]) {
    out.append(UInt8(truncatingIfNeeded: v >> 24))
    out.append(UInt8(truncatingIfNeeded: v >> 16))
    out.append(UInt8(truncatingIfNeeded: v >> 8))
    out.append(UInt8(truncatingIfNeeded: v))
}

@inline(__always)
func appendUInt16(_ v: UInt16, to out: inout [UInt8]) {
    out.append(UInt8(truncatingIfNeeded: v >> 8))
    out.append(UInt8(truncatingIfNeeded: v))
}
