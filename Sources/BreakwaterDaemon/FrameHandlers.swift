import BreakwaterWire
import NIOCore

/// Sent up the pipeline (a user inbound event) when the first bytes of a frame have arrived but not the whole of
/// it, and when no frame is partly read any more: `ConnectionHandler` times a partial frame (`frame_timeout`).
enum PartialFrame: Sendable {
    case started
    case none
}

/// Cuts the byte stream into frames, checking each header (size, type, stream id, flags) before its payload
/// arrives. A violation is thrown as `WireError`; `ConnectionHandler` answers it with an ERROR frame and closes.
struct FrameDecoderHandler: ByteToMessageDecoder {
    typealias InboundOut = Frame

    let limits: Limits
    /// Bytes of a frame not yet whole are buffered (and `PartialFrame.started` was sent).
    private var partial = false
    /// The first frame (which must be HELLO) was read whole.
    private var sawFirstFrame = false

    init(limits: Limits) {
        self.limits = limits
    }

    private mutating func note(partial now: Bool, _ context: ChannelHandlerContext) {
        guard now != partial else { return }
        partial = now
        context.fireUserInboundEventTriggered(now ? PartialFrame.started : PartialFrame.none)
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard buffer.readableBytes >= FrameHeader.size else {
            note(partial: buffer.readableBytes > 0, context)
            return .needMoreData
        }
        let header = buffer.withUnsafeReadableBytes { FrameHeader.parse($0) }!
        if !sawFirstFrame {
            // Before HELLO: a client may assume frames of 65,536 bytes (PROTOCOL.md, HELLO fields), and any
            // other first frame is refused from its header, before its payload is waited for.
            var first = limits
            first.maxFramePayload = max(limits.maxFramePayload, Limits.preHello.maxFramePayload)
            try header.validate(limits: first)
            if header.type != .hello {
                throw WireError(.helloRequired, "the first frame must be HELLO, got \(header.type!)")
            }
        } else {
            try header.validate(limits: limits)
        }
        let length = Int(header.length)
        guard buffer.readableBytes >= FrameHeader.size + length else {
            note(partial: true, context)
            return .needMoreData
        }
        note(partial: false, context)
        sawFirstFrame = true
        buffer.moveReaderIndex(forwardBy: FrameHeader.size)
        let payload = buffer.readBytes(length: length)!
        context.fireChannelRead(wrapInboundOut(
            Frame(streamID: header.streamID, type: header.type!, flags: header.flags, payload: payload)
        ))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer,
                             seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if seenEOF, buffer.readableBytes > 0 {
            throw WireError(.protocolError, "connection ended inside a frame (\(buffer.readableBytes) bytes left over)")
        }
        return .needMoreData
    }
}

/// Writes frames straight into the outbound buffer: header then payload, no intermediate array.
struct FrameEncoderHandler: MessageToByteEncoder {
    typealias OutboundIn = Frame

    func encode(data frame: Frame, out: inout ByteBuffer) throws {
        out.reserveCapacity(minimumWritableBytes: FrameHeader.size + frame.payload.count)
        out.writeInteger(UInt32(frame.payload.count))
        out.writeInteger(frame.streamID)
        out.writeInteger(frame.type.rawValue)
        out.writeInteger(frame.flags.rawValue)
        out.writeBytes(frame.payload)
    }
}
