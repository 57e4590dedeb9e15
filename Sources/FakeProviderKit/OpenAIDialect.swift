import NIOCore
import NIOHTTP1

/// OpenAI's chat completions: `Authorization: Bearer` keys, `chat.completion` objects, `data:` chunks ending
/// in `[DONE]`, `{"error": {...}}` bodies and `x-ratelimit-*` headers.
struct OpenAIDialect: ProviderDialect {
    func apiKey(_ headers: HTTPHeaders) -> String? {
        HeaderValue.bearerKey(headers.first(name: "authorization"))
    }

    func reject(_ headers: HTTPHeaders, requiredKey: String?) -> WireError? {
        switch Self.keyProblem(apiKey(headers), requiredKey: requiredKey) {
        case .missing: return OpenAIError.missingAPIKey.wire
        case .wrong: return OpenAIError.incorrectAPIKey.wire
        case nil: return nil
        }
    }

    func parse(_ body: ByteBufferView) -> Result<ChatRequest, WireError> {
        ChatRequest.parseOpenAI(body).mapError(\.wire)
    }

    var bodyTooLarge: WireError { OpenAIError.bodyTooLarge.wire }

    func error(status: Int, code: String?, context: ErrorContext) -> WireError {
        OpenAIError.scripted(status: status, code: code, context: OpenAIError.Context(context)).wire
    }

    /// A server error unless `error_code` picks another.
    func streamError(code: String?, context: ErrorContext) -> WireError {
        error(status: 500, code: code, context: context)
    }

    func completion(
        content: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope
    ) -> (contentType: String, body: String) {
        let body = OpenAIWire.completion(
            id: envelope.completionID, created: envelope.created, model: request.model, content: content,
            usage: usage
        )
        return ("application/json", body)
    }

    func toolCallCompletion(tool: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope)
        -> (contentType: String, body: String)? {
        ("application/json", OpenAIWire.toolCallCompletion(id: envelope.completionID, created: envelope.created,
                                                         model: request.model, tool: tool, usage: usage))
    }

    func toolCallEvents(tool: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope)
        -> [SSEEvent]? {
        writer(usage: usage, request: request, envelope: envelope).toolCall(tool)
    }

    func writer(usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope) -> OpenAIWire.ChunkWriter {
        OpenAIWire.ChunkWriter(
            id: envelope.completionID, created: envelope.created, model: request.model,
            includeUsage: request.includeUsage, includeObfuscation: request.includeObfuscation, usage: usage
        )
    }

    func headers(contentType: String, envelope: ResponsePlan.Envelope, step: FaultStep) -> [(String, String)] {
        let limits = envelope.limits
        return [
            ("content-type", contentType),
            ("x-request-id", envelope.requestID),
            ("openai-version", "2020-10-01"),
            ("x-ratelimit-limit-requests", String(limits.limitRequests)),
            ("x-ratelimit-limit-tokens", String(limits.limitTokens)),
            ("x-ratelimit-remaining-requests", String(limits.remainingRequests)),
            ("x-ratelimit-remaining-tokens", String(limits.remainingTokens)),
            ("x-ratelimit-reset-requests", OpenAIWire.duration(milliseconds: limits.resetRequestsMs)),
            ("x-ratelimit-reset-tokens", OpenAIWire.duration(milliseconds: limits.resetTokensMs)),
        ] + HeaderValue.retryAfter(step)
    }

    var timing: TimingHeader { .openAIProcessing }
}

extension OpenAIError {
    /// This error as the fake sends it.
    var wire: WireError {
        let (contentType, text) = body
        return WireError(
            status: status, contentType: contentType, body: text, event: SSEEvent(data: compactJSON),
            rateLimited: code == "rate_limit_exceeded"
        )
    }
}

extension OpenAIError.Context {
    init(_ context: ErrorContext) {
        self.init(
            model: context.model, promptTokens: context.promptTokens, rateLimitRequests: context.rateLimitRequests,
            retryAfterMs: context.retryAfterMs, exceeded: context.exceeded
        )
    }
}
