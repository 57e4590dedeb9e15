/// How the fake provider answers one chat request: status, timing and the ways the answer breaks. Every field
/// works for every provider API the fake speaks, in that provider's shape.
///
/// Every field is optional. A step taken from the script or rolled from a personality's faults is laid over
/// the personality's default step, so a field left out keeps the default's value. In JSON the keys are
/// snake_case (`retry_after_ms`, `stall_after_chunks`, ...); unknown keys are rejected so a typo in a test
/// script fails loudly instead of silently doing nothing.
public struct FaultStep: Codable, Sendable, Equatable {
    /// HTTP status to answer with (200-599; anything else is answered as 500). Anything but 200 answers with
    /// the provider's error body for that status: OpenAI's (429 `rate_limit_exceeded`, 500 `server_error`, 503
    /// overloaded, 502/504 Cloudflare's HTML page, ...), Anthropic's (429 `rate_limit_error`, 529
    /// `overloaded_error`, 500 `api_error`, ...), Google's (429 `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`, 500
    /// `INTERNAL`, ...) or Azure's (its gateway's 401, 403, 404 and 429 bodies, OpenAI's otherwise).
    public var status: Int?
    /// Refines the error. OpenAI and Azure: the body's `code`, with the matching message and type when the code
    /// is known (`insufficient_quota`, `rate_limit_exceeded`, `context_length_exceeded`, Azure's
    /// `content_filter`, ...). Anthropic: the error `type` (`overloaded_error`, `api_error`, ...). Gemini: the
    /// `status` name (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, ...). The HTTP status stays `status`.
    public var errorCode: String?
    /// Sent verbatim as `Retry-After`: delta seconds ("1") or an HTTP-date. Gemini also gets the wait as the
    /// 429's `RetryInfo.retryDelay`, Azure in its 429 message.
    public var retryAfter: String?
    /// Sent as `retry-after-ms`, the millisecond hint OpenAI's and Anthropic's SDKs prefer over `Retry-After`.
    public var retryAfterMs: Int?
    /// Wait this long before the status line is written (time to first byte).
    public var delayFirstByteMs: Int?
    /// For streams, wait this long before each content chunk and before the finishing chunk.
    public var chunkIntervalMs: Int?
    /// For streams, how many pieces the content is cut into (default: one per word).
    public var chunks: Int?
    /// For streams, after this many content chunks go quiet for `stallMs`, then carry on.
    public var stallAfterChunks: Int?
    /// How long a stall lasts.
    public var stallMs: Int?
    /// Close the TCP connection with a reset (no terminating chunk) after this many content chunks.
    /// For a non-streaming answer, 0 resets before any byte is sent and 1 or more resets halfway through
    /// the body.
    public var resetAfterChunks: Int?
    /// For streams, send the provider's error event after this many content chunks and end the stream there
    /// (no `[DONE]`, no `message_stop`): OpenAI's and Azure's `data: {"error": {...}}` (default `server_error`),
    /// Anthropic's `event: error` (default `overloaded_error`), Gemini's `data: {"error": {...}}` (default
    /// `UNAVAILABLE`). `errorCode` picks another error.
    public var errorAfterChunks: Int?
    /// Answer 200 with a body that is not valid JSON (truncated); for streams, one event is truncated.
    public var malformedJSON: Bool?
    /// The completion text, instead of "Echo: " followed by the last user message.
    public var content: String?
    /// The model calls this tool (function) instead of answering with text: OpenAI's (and Azure's) `tool_calls`,
    /// plain and streamed (the name in the first delta, the arguments after it), `finish_reason: tool_calls`. Other
    /// dialects answer with text.
    public var toolCall: String?

    /// Creates a step; every field left `nil` defers to the personality's default step.
    public init(
        status: Int? = nil,
        errorCode: String? = nil,
        retryAfter: String? = nil,
        retryAfterMs: Int? = nil,
        delayFirstByteMs: Int? = nil,
        chunkIntervalMs: Int? = nil,
        chunks: Int? = nil,
        stallAfterChunks: Int? = nil,
        stallMs: Int? = nil,
        resetAfterChunks: Int? = nil,
        errorAfterChunks: Int? = nil,
        malformedJSON: Bool? = nil,
        content: String? = nil,
        toolCall: String? = nil
    ) {
        self.toolCall = toolCall
        self.status = status
        self.errorCode = errorCode
        self.retryAfter = retryAfter
        self.retryAfterMs = retryAfterMs
        self.delayFirstByteMs = delayFirstByteMs
        self.chunkIntervalMs = chunkIntervalMs
        self.chunks = chunks
        self.stallAfterChunks = stallAfterChunks
        self.stallMs = stallMs
        self.resetAfterChunks = resetAfterChunks
        self.errorAfterChunks = errorAfterChunks
        self.malformedJSON = malformedJSON
        self.content = content
    }

    /// This step with every unset field taken from `base`.
    public func overlaid(on base: FaultStep) -> FaultStep {
        FaultStep(
            status: status ?? base.status,
            errorCode: errorCode ?? base.errorCode,
            retryAfter: retryAfter ?? base.retryAfter,
            retryAfterMs: retryAfterMs ?? base.retryAfterMs,
            delayFirstByteMs: delayFirstByteMs ?? base.delayFirstByteMs,
            chunkIntervalMs: chunkIntervalMs ?? base.chunkIntervalMs,
            chunks: chunks ?? base.chunks,
            stallAfterChunks: stallAfterChunks ?? base.stallAfterChunks,
            stallMs: stallMs ?? base.stallMs,
            resetAfterChunks: resetAfterChunks ?? base.resetAfterChunks,
            errorAfterChunks: errorAfterChunks ?? base.errorAfterChunks,
            malformedJSON: malformedJSON ?? base.malformedJSON,
            content: content ?? base.content,
            toolCall: toolCall ?? base.toolCall
        )
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case status
        case errorCode = "error_code"
        case retryAfter = "retry_after"
        case retryAfterMs = "retry_after_ms"
        case delayFirstByteMs = "delay_first_byte_ms"
        case chunkIntervalMs = "chunk_interval_ms"
        case chunks
        case stallAfterChunks = "stall_after_chunks"
        case stallMs = "stall_ms"
        case resetAfterChunks = "reset_after_chunks"
        case errorAfterChunks = "error_after_chunks"
        case malformedJSON = "malformed_json"
        case content
        case toolCall = "tool_call"
    }

    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            status: try container.decodeIfPresent(Int.self, forKey: .status),
            errorCode: try container.decodeIfPresent(String.self, forKey: .errorCode),
            retryAfter: try container.decodeIfPresent(String.self, forKey: .retryAfter),
            retryAfterMs: try container.decodeIfPresent(Int.self, forKey: .retryAfterMs),
            delayFirstByteMs: try container.decodeIfPresent(Int.self, forKey: .delayFirstByteMs),
            chunkIntervalMs: try container.decodeIfPresent(Int.self, forKey: .chunkIntervalMs),
            chunks: try container.decodeIfPresent(Int.self, forKey: .chunks),
            stallAfterChunks: try container.decodeIfPresent(Int.self, forKey: .stallAfterChunks),
            stallMs: try container.decodeIfPresent(Int.self, forKey: .stallMs),
            resetAfterChunks: try container.decodeIfPresent(Int.self, forKey: .resetAfterChunks),
            errorAfterChunks: try container.decodeIfPresent(Int.self, forKey: .errorAfterChunks),
            malformedJSON: try container.decodeIfPresent(Bool.self, forKey: .malformedJSON),
            content: try container.decodeIfPresent(String.self, forKey: .content),
            toolCall: try container.decodeIfPresent(String.self, forKey: .toolCall)
        )
        if let status, !(200...599).contains(status) {
            throw DecodingError.dataCorruptedError(
                forKey: .status, in: container, debugDescription: "status must be a final HTTP status (200-599)"
            )
        }
    }
}

/// Rejects keys a `Decodable` type does not know, so misspelt script and personality keys are errors.
enum UnknownKeys {
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    static func reject(in decoder: any Decoder, known: [String]) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        for key in container.allKeys where !known.contains(key.stringValue) {
            throw DecodingError.dataCorruptedError(
                forKey: key,
                in: container,
                debugDescription: "unknown key '\(key.stringValue)'; known keys: \(known.joined(separator: ", "))"
            )
        }
    }
}
