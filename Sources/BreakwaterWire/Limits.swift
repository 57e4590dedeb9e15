/// Protocol limits. The daemon announces its own in its HELLO; these are the v1 defaults.
public struct Limits: Sendable, Hashable {
    /// Largest payload of one frame, in bytes.
    public var maxFramePayload: UInt32
    /// Largest request body (the sum of a call's DATA payloads), in bytes.
    public var maxBody: UInt32
    /// Most calls open at once on one connection.
    public var maxConcurrentCalls: UInt32

    public init(maxFramePayload: UInt32 = 1 << 20, maxBody: UInt32 = 8 << 20, maxConcurrentCalls: UInt32 = 256) {
        self.maxFramePayload = maxFramePayload
        self.maxBody = maxBody
        self.maxConcurrentCalls = maxConcurrentCalls
    }

    public static let `default` = Limits()

    /// Limits a peer must accept before HELLO has told it better: large enough for any HELLO.
    public static let preHello = Limits(maxFramePayload: 64 * 1024, maxBody: 0, maxConcurrentCalls: 0)
}

/// Protocol versions this implementation speaks.
public enum ProtocolVersion {
    public static let v1: UInt16 = 1
    public static let supported: ClosedRange<UInt16> = 1...1
}
