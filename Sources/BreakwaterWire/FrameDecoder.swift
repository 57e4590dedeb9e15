/// Incremental frame decoder over a byte buffer: feed bytes as they arrive, take whole frames out.
///
/// Checks the header as soon as its 10 bytes are in, before the payload arrives, so an oversized length is refused
/// without buffering it. The NIO server uses the same `FrameHeader.validate` on its own buffers.
public struct FrameDecoder: Sendable {
    public var limits: Limits
    private var buffer: [UInt8] = []
    private var readIndex = 0

    public init(limits: Limits = .default) {
        self.limits = limits
    }

    /// Bytes received but not yet part of a returned frame.
    public var bufferedByteCount: Int { buffer.count - readIndex }

    public mutating func feed(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next whole frame, or nil when more bytes are needed.
    public mutating func next() throws(WireError) -> Frame? {
        let available = buffer.count - readIndex
        guard available >= FrameHeader.size, let header = FrameHeader.parse(buffer[readIndex...]) else { return nil }
        try header.validate(limits: limits)
        let total = FrameHeader.size + Int(header.length)
        guard available >= total else { return nil }
        let start = readIndex + FrameHeader.size
        let frame = Frame(
            streamID: header.streamID, type: header.type!, flags: header.flags,
            payload: Array(buffer[start..<(start + Int(header.length))])
        )
        readIndex += total
        compactIfNeeded()
        return frame
    }

    /// Call at end of input: leftover bytes mean the peer stopped inside a frame.
    public func finish() throws(WireError) {
        if bufferedByteCount > 0 {
            throw WireError(.protocolError, "connection ended inside a frame (\(bufferedByteCount) bytes left over)")
        }
    }

    private mutating func compactIfNeeded() {
        if readIndex == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            readIndex = 0
        } else if readIndex > 64 * 1024 {
            buffer.removeFirst(readIndex)
            readIndex = 0
        }
    }
}
