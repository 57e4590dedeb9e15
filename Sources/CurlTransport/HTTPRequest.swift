/// One HTTP header field as sent or received; names keep the spelling the peer used.
public struct HTTPHeader: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// Which HTTP version a transfer asks libcurl for.
public enum HTTPVersion: Sendable {
    /// Plain HTTP/1.1.
    case http1_1
    /// HTTP/2 negotiated by ALPN over TLS; falls back to HTTP/1.1 for `http://` URLs or servers without h2.
    case http2
    /// HTTP/2 without negotiation (h2c), for cleartext servers known to speak HTTP/2.
    case http2PriorKnowledge
}

/// Per-transfer time limits; `nil` means no limit for that phase.
///
/// `connect` and `total` are enforced by libcurl; `firstByte` (nothing at all received since the transfer
/// started) and `idle` (gap between received chunks) are enforced by the engine's loop, because libcurl's
/// low-speed options only work at whole-second granularity.
public struct TransferTimeouts: Sendable {
    public var connect: Duration?
    public var firstByte: Duration?
    public var idle: Duration?
    public var total: Duration?

    public init(
        connect: Duration? = nil,
        firstByte: Duration? = nil,
        idle: Duration? = nil,
        total: Duration? = nil
    ) {
        self.connect = connect
        self.firstByte = firstByte
        self.idle = idle
        self.total = total
    }
}

/// Everything the engine needs to perform one HTTP exchange.
///
/// The body is sent with a `Content-Length`; libcurl's `Expect: 100-continue` is always suppressed so
/// large prompts do not cost an extra round trip.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [HTTPHeader]
    public var body: [UInt8]
    public var timeouts: TransferTimeouts
    public var httpVersion: HTTPVersion
    /// A PEM file of CA certificates to trust instead of the system's (a private CA, or a test's own).
    public var caFile: String?
    /// The pool the transfer runs under: when it is full, the transfer waits its turn (its total limit running).
    public var pool: ConnectionPool?
    /// libcurl's receive buffer for this transfer (`CURLOPT_BUFFERSIZE`), which it holds for the transfer's whole
    /// life: a stream an LLM takes a minute to answer holds it for that minute. Larger means fewer reads of a big
    /// answer; smaller, less memory per open stream (BENCHMARKS.md, "Memory per open stream"). A transfer that may
    /// speak HTTP/2 gets at least `http2ReceiveBufferBytes` whatever this says (`effectiveReceiveBufferBytes`).
    public var receiveBufferBytes: Int

    /// A quarter of libcurl's default (16 KB): a whole answer of a few KB in one or two reads.
    public static let defaultReceiveBufferBytes = 4096
    /// libcurl's least, for streams: an SSE event is a few hundred bytes, and an open stream's buffer is most of
    /// what it costs beyond libcurl's handle (1,000 open streams: ~3 KB each less resident than with 4 KB).
    public static let streamReceiveBufferBytes = 1024
    /// The least receive buffer of a transfer that may speak HTTP/2: libcurl 7.88's input buffer per connection.
    ///
    /// libcurl 7.88 (Debian 12's) loses track of an HTTP/2 stream's data when more of it arrives in one read of
    /// the connection than the transfer's receive buffer holds: it keeps the rest (nghttp2 paused) and asks for
    /// the transfer to be run again only once, and its "more to read?" check never says yes
    /// (`cf_h2_data_pending` compares the input buffer's offsets the wrong way round), so the rest waits for the
    /// socket to turn readable again — which, at the end of an answer, it never does: the call stalls until its
    /// idle limit. A read takes at most this much from the connection (`H2_BUFSIZE`), so a buffer this large is
    /// never overrun by the stream being read. libcurl 8 rewrote that code.
    public static let http2ReceiveBufferBytes = 32 * 1024

    /// The receive buffer the engine gives the transfer: `receiveBufferBytes`, raised to
    /// `http2ReceiveBufferBytes` when libcurl may pick HTTP/2 (asked for by prior knowledge, or offered by ALPN
    /// on an `https` URL).
    public var effectiveReceiveBufferBytes: Int {
        let mayUseHTTP2 = switch httpVersion {
        case .http1_1: false
        case .http2PriorKnowledge: true
        case .http2: url.utf8.prefix(6).lazy.map { $0 | 0x20 }.elementsEqual("https:".utf8)
        }
        return mayUseHTTP2 ? max(receiveBufferBytes, Self.http2ReceiveBufferBytes) : receiveBufferBytes
    }

    public init(
        method: String,
        url: String,
        headers: [HTTPHeader] = [],
        body: [UInt8] = [],
        timeouts: TransferTimeouts = TransferTimeouts(),
        httpVersion: HTTPVersion = .http1_1,
        caFile: String? = nil,
        pool: ConnectionPool? = nil,
        receiveBufferBytes: Int = HTTPRequest.defaultReceiveBufferBytes
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeouts = timeouts
        self.httpVersion = httpVersion
        self.caFile = caFile
        self.pool = pool
        self.receiveBufferBytes = receiveBufferBytes
    }
}
