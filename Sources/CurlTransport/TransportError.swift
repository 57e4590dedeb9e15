/// Why a transfer failed, in terms a retry policy can act on.
///
/// `detail` carries only libcurl's own error text or the engine's description of what happened; it never
/// contains request headers or bodies, which hold API keys and prompts.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    /// The class of failure.
    public enum Kind: Sendable, Equatable {
        /// The host could not be resolved or the TCP/TLS connection could not be established.
        case connectFailed
        /// A configured time limit ran out; the phase says which one.
        case timedOut(TimeoutPhase)
        /// The connection broke mid-transfer: a send or receive error, or the peer closed before the
        /// response was complete.
        case connectionReset
        /// The transfer was cancelled by the caller or by engine shutdown.
        case cancelled
        /// The server's reply was not valid HTTP.
        case malformedResponse
        /// The request could not be made on this host: this host's configuration asked for something libcurl
        /// cannot do (an unsupported scheme or HTTP version, a malformed URL, a header name or value with a line
        /// break, a `ca_file` that is missing or not PEM, an option libcurl would not set), or the host ran out
        /// of memory. Never the provider's fault: a retry, or another attempt at the same provider, fails the
        /// same way until the configuration is fixed, and `detail` says what to fix.
        case localConfiguration
        /// Anything else; `curlCode` and `detail` say more.
        case other
    }

    /// The time limit from `TransferTimeouts` that ran out.
    public enum TimeoutPhase: Sendable, Equatable {
        case connect
        case firstByte
        case idle
        case total
        /// The transfer's total limit ran out while it waited for its `ConnectionPool` to have room: the request
        /// never went out.
        case connectionWait
    }

    public var kind: Kind
    /// libcurl's `CURLcode` when the failure came from libcurl; `nil` for failures the engine decided itself.
    public var curlCode: Int32?
    /// A human-readable explanation with no request data in it.
    public var detail: String

    public init(kind: Kind, curlCode: Int32? = nil, detail: String) {
        self.kind = kind
        self.curlCode = curlCode
        self.detail = detail
    }

    public var description: String {
        var text = "TransportError(\(kind)): \(detail)"
        if let curlCode {
            text += " [curl code \(curlCode)]"
        }
        return text
    }
}
