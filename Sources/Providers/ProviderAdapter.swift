/// What the daemon needs from each provider's wire format. Implementations are pure: bytes in, bytes out, no I/O,
/// so every translation is tested against fixtures.
///
/// The canonical request is OpenAI's chat-completions body (`ChatRequest`); the canonical answer is OpenAI's
/// `chat.completion` object, and a streamed answer is a sequence of OpenAI `chat.completion.chunk` objects. An app
/// therefore reads the same shapes whichever provider answered, which is what makes fallback between providers
/// invisible to it.
public protocol ProviderAdapter: Sendable {
    /// Builds the HTTP request for one attempt against `model`.
    func makeRequest(_ request: ChatRequest, model: String, apiKey: String?) throws(ProviderError)
        -> ProviderHTTPRequest

    /// Turns a complete 2xx answer into the canonical `chat.completion` JSON and reads its usage.
    func parseResponse(status: Int, body: [UInt8], model: String) throws(ProviderError) -> ParsedResponse

    /// A fresh translator for one streamed answer (it keeps per-call state, e.g. the message id).
    func makeStreamTranslator(model: String) -> any StreamTranslator

    /// The error for a non-2xx answer: the status plus the provider's error type/code, never its free-text
    /// message (providers quote parts of keys and prompts there).
    func error(status: Int, body: [UInt8]) -> ProviderError
}

/// A canonical answer.
public struct ParsedResponse: Sendable, Hashable {
    /// An OpenAI `chat.completion` JSON object.
    public var body: [UInt8]
    public var usage: Usage?

    public init(body: [UInt8], usage: Usage?) {
        self.body = body
        self.usage = usage
    }
}

/// Turns one provider's SSE events into canonical pieces, in order. Used by one call on one thread.
public protocol StreamTranslator: Sendable {
    /// Interprets one SSE event: zero or more canonical chunks, `.done` when the provider said the answer is
    /// complete, `.error` for an error event inside the stream.
    mutating func translate(_ event: SSEEvent) -> [StreamPiece]

    /// The HTTP body ended cleanly. Providers whose streams have no end marker of their own (Gemini) report
    /// `.done` here if the answer was complete; the others return nothing, so a stream cut before its end marker
    /// is never mistaken for a complete one.
    mutating func finish() -> [StreamPiece]
}
