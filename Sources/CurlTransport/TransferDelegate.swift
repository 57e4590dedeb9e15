/// Receives the events of one transfer.
///
/// Callbacks run on the engine's own thread, in order: head once, body zero or more times, complete exactly
/// once (complete may come without head on failure). They must not block, because every other transfer of
/// the engine waits while they run; calling `CurlEngine.start` or `cancel` from them is fine.
public protocol TransferDelegate: AnyObject, Sendable {
    /// The final (non-1xx) response head arrived.
    func transferDidReceiveHead(status: Int, headers: [HTTPHeader])
    /// A chunk of the response body arrived, as libcurl delivered it (already de-chunked, not decompressed).
    func transferDidReceiveBody(_ bytes: [UInt8])
    /// The transfer ended; no further callbacks follow for it.
    func transferDidComplete(_ result: Result<Void, TransportError>)
}

/// Names one transfer of one engine, for `CurlEngine.cancel`.
public struct TransferID: Hashable, Sendable, CustomStringConvertible {
    let rawValue: UInt64

    init(rawValue: UInt64) {
        self.rawValue = rawValue
    }

    public var description: String {
        "transfer-\(rawValue)"
    }
}
