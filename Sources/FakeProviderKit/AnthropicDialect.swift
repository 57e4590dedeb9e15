import Foundation
import NIOCore
import NIOHTTP1

/// Anthropic's Messages API: `x-api-key` and `anthropic-version` headers, `message` objects, named SSE events
/// (`message_start` ... `message_stop`), `{"type": "error", "error": {...}}` bodies and
/// `anthropic-ratelimit-*` headers with RFC 3339 reset times.
struct AnthropicDialect: ProviderDialect {
    /// The `request-id` header's value, which error bodies repeat as `request_id`.
    let requestID: String

    init(envelope: ResponsePlan.Envelope) {
        requestID = AnthropicWire.requestID(prefix: envelope.idPrefix, sequence: envelope.sequence)
    }

    /// The key is checked before the version header. It is taken from `x-api-key` or, as recent official SDKs
    /// send API keys, from `Authorization: Bearer`.
    func reject(_ headers: HTTPHeaders, requiredKey: String?) -> WireError? {
        switch Self.keyProblem(apiKey(headers), requiredKey: requiredKey) {
        case .missing:
            return error(401, "authentication_error", "x-api-key header is required")
        case .wrong:
            return error(401, "authentication_error", "invalid x-api-key")
        case nil:
            break
        }
        guard let version = headers.first(name: "anthropic-version"), !version.isEmpty else {
            return error(400, "invalid_request_error", "anthropic-version: header is required")
        }
        return nil
    }

    func apiKey(_ headers: HTTPHeaders) -> String? {
        headers.first(name: "x-api-key") ?? HeaderValue.bearerKey(headers.first(name: "authorization"))
    }

    func parse(_ body: ByteBufferView) -> Result<ChatRequest, WireError> {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            return .failure(
                error(400, "invalid_request_error",
                      "The request body is not valid JSON: unexpected character: line 1 column 1 (char 0)")
            )
        }
        guard let model = object["model"] as? String, !model.isEmpty else {
            return .failure(error(400, "invalid_request_error", "model: Field required"))
        }
        guard let messages = object["messages"] as? [[String: Any]] else {
            return .failure(error(400, "invalid_request_error", "messages: Field required"))
        }
        guard let maxTokens = object["max_tokens"] as? Int else {
            return .failure(error(400, "invalid_request_error", "max_tokens: Field required"))
        }
        var promptTokens = ChatRequest.wordCount(ChatRequest.text(of: object["system"]))
        var lastUserText = ""
        for message in messages {
            let text = ChatRequest.text(of: message["content"])
            promptTokens += ChatRequest.wordCount(text)
            if message["role"] as? String == "user" {
                lastUserText = text
            }
        }
        return .success(
            ChatRequest(
                model: model, stream: object["stream"] as? Bool ?? false, lastUserText: lastUserText,
                promptTokens: promptTokens, maxTokens: maxTokens
            )
        )
    }

    /// Cloudflare answers it before the API sees the request, in the API's shape.
    var bodyTooLarge: WireError {
        error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
    }

    /// The type follows the status (529 `overloaded_error`, 429 `rate_limit_error`, ...); `error_code` names
    /// another type to send with the scripted status.
    func error(status: Int, code: String?, context: ErrorContext) -> WireError {
        let type = code ?? AnthropicError.type(forStatus: status)
        var error = AnthropicError(
            status: status, type: type, message: AnthropicError.message(forType: type, context: context),
            requestID: requestID
        ).wire
        error.rateLimited = type == "rate_limit_error"
        return error
    }

    /// `event: error` with `overloaded_error` unless `error_code` names another type; the stream then ends
    /// without `message_stop`.
    func streamError(code: String?, context: ErrorContext) -> WireError {
        error(status: 529, code: code ?? "overloaded_error", context: context)
    }

    func completion(
        content: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope
    ) -> (contentType: String, body: String) {
        let id = AnthropicWire.messageID(prefix: envelope.idPrefix, sequence: envelope.sequence)
        var out = "{\"id\":\"\(id)\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
        JSONText.appendQuoted(request.model, to: &out)
        out += ",\"content\":[{\"type\":\"text\",\"text\":"
        JSONText.appendQuoted(content, to: &out)
        out += "}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":"
        out += AnthropicWire.usage(input: usage.promptTokens, output: usage.completionTokens) + "}"
        return ("application/json", out)
    }

    func writer(usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope) -> AnthropicWire.EventWriter {
        AnthropicWire.EventWriter(
            id: AnthropicWire.messageID(prefix: envelope.idPrefix, sequence: envelope.sequence),
            model: request.model, usage: usage
        )
    }

    /// `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`; the resets are the RFC 3339 times the
    /// buckets are full again.
    func headers(contentType: String, envelope: ResponsePlan.Envelope, step: FaultStep) -> [(String, String)] {
        let limits = envelope.limits
        let requestsReset = RFC3339.format(epochMilliseconds: envelope.created * 1000 + limits.resetRequestsMs)
        let tokensReset = RFC3339.format(epochMilliseconds: envelope.created * 1000 + limits.resetTokensMs)
        return [
            ("content-type", contentType),
            ("request-id", requestID),
            ("anthropic-organization-id", "6f2a7c1e-3b5d-4e8f-9a0b-1c2d3e4f5a6b"),
            ("anthropic-ratelimit-requests-limit", String(limits.limitRequests)),
            ("anthropic-ratelimit-requests-remaining", String(limits.remainingRequests)),
            ("anthropic-ratelimit-requests-reset", requestsReset),
            ("anthropic-ratelimit-tokens-limit", String(limits.limitTokens)),
            ("anthropic-ratelimit-tokens-remaining", String(limits.remainingTokens)),
            ("anthropic-ratelimit-tokens-reset", tokensReset),
        ] + HeaderValue.retryAfter(step)
    }

    var timing: TimingHeader { .envoyUpstream }

    private func error(_ status: Int, _ type: String, _ message: String) -> WireError {
        AnthropicError(status: status, type: type, message: message, requestID: requestID).wire
    }
}

/// An error as Anthropic sends it: `{"type":"error","error":{"type","message"},"request_id"}`.
struct AnthropicError: Sendable {
    var status: Int
    var type: String
    var message: String
    var requestID: String?

    /// The error type Anthropic documents for each status; other 4xx are `invalid_request_error` and other 5xx
    /// `api_error`, except 503, which the fake answers as overload.
    static func type(forStatus status: Int) -> String {
        switch status {
        case 401: "authentication_error"
        case 402: "billing_error"
        case 403: "permission_error"
        case 404: "not_found_error"
        case 413: "request_too_large"
        case 429: "rate_limit_error"
        case 503, 529: "overloaded_error"
        case 504: "timeout_error"
        case 500...599: "api_error"
        default: "invalid_request_error"
        }
    }

    static func message(forType type: String, context: ErrorContext) -> String {
        switch type {
        case "authentication_error":
            "invalid x-api-key"
        case "billing_error":
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade "
                + "or purchase credits."
        case "permission_error":
            "Your API key does not have permission to use the specified resource."
        case "not_found_error":
            "model: \(context.model)"
        case "request_too_large":
            "Request exceeds the maximum allowed number of bytes."
        case "rate_limit_error":
            "This request would exceed the rate limit for your organization "
                + "(6f2a7c1e-3b5d-4e8f-9a0b-1c2d3e4f5a6b) of "
                + (context.exceeded.map { "\($0.limit) \($0.quantity == .tokens ? "tokens" : "requests")" }
                    ?? "\(context.rateLimitRequests) requests")
                + " per minute. "
                + "For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response "
                + "headers for current usage. Please reduce the prompt length or the maximum tokens requested, or "
                + "try again later. You may also contact sales at https://www.anthropic.com/contact-sales to "
                + "discuss your options for a rate limit increase."
        case "api_error":
            "Internal server error"
        case "timeout_error":
            "Request timed out"
        case "overloaded_error":
            "Overloaded"
        default:
            "Invalid request"
        }
    }

    /// The body, compact and without a trailing newline, as Anthropic sends it.
    var json: String {
        var out = "{\"type\":\"error\",\"error\":{\"type\":"
        JSONText.appendQuoted(type, to: &out)
        out += ",\"message\":"
        JSONText.appendQuoted(message, to: &out)
        out += "}"
        if let requestID {
            out += ",\"request_id\":\"" + requestID + "\""
        }
        return out + "}"
    }

    var wire: WireError {
        let json = json
        return WireError(
            status: status, contentType: "application/json", body: json, event: SSEEvent(name: "error", data: json)
        )
    }
}

/// The JSON Anthropic's Messages API sends, written by hand like `OpenAIWire`.
enum AnthropicWire {
    /// `usage` with the cache fields current models report.
    static func usage(input: Int, output: Int) -> String {
        "{\"input_tokens\":\(input),\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
            + "\"output_tokens\":\(output),\"service_tier\":\"standard\"}"
    }

    /// `msg_01` and 22 alphanumerics.
    static func messageID(prefix: String, sequence: UInt64) -> String {
        "msg_01" + prefix.prefix(12) + padded(sequence, to: 10)
    }

    /// `req_011C` and 20 alphanumerics, like Anthropic's `request-id`.
    static func requestID(prefix: String, sequence: UInt64) -> String {
        "req_011C" + prefix.suffix(10) + padded(sequence, to: 10)
    }

    private static func padded(_ sequence: UInt64, to width: Int) -> String {
        let digits = String(sequence, radix: 36)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// The named events of one streamed message.
    struct EventWriter: StreamWriter {
        let id: String
        let model: String
        let usage: Usage

        var contentType: String { "text/event-stream; charset=utf-8" }
        var framing: StreamFraming { .lf }

        /// `message_start` (an empty message with the input usage), `content_block_start` and a `ping`.
        var opening: [SSEEvent] {
            var start = "{\"type\":\"message_start\",\"message\":{\"id\":\"\(id)\",\"type\":\"message\","
                + "\"role\":\"assistant\",\"model\":"
            JSONText.appendQuoted(model, to: &start)
            start += ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
                + AnthropicWire.usage(input: usage.promptTokens, output: 1) + "}}"
            return [
                SSEEvent(name: "message_start", data: start),
                SSEEvent(
                    name: "content_block_start",
                    data: "{\"type\":\"content_block_start\",\"index\":0,"
                        + "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"
                ),
                SSEEvent(name: "ping", data: "{\"type\": \"ping\"}"),
            ]
        }

        func content(_ piece: String) -> SSEEvent {
            var data = "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":"
            JSONText.appendQuoted(piece, to: &data)
            return SSEEvent(name: "content_block_delta", data: data + "}}")
        }

        /// `content_block_stop`, `message_delta` with the stop reason and output tokens, `message_stop`.
        var closing: [SSEEvent] {
            [
                SSEEvent(name: "content_block_stop", data: "{\"type\":\"content_block_stop\",\"index\":0}"),
                SSEEvent(
                    name: "message_delta",
                    data: "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},"
                        + "\"usage\":{\"output_tokens\":\(usage.completionTokens)}}"
                ),
                SSEEvent(name: "message_stop", data: "{\"type\":\"message_stop\"}"),
            ]
        }
    }
}

/// RFC 3339 timestamps in UTC with second precision (`2025-08-21T12:40:59Z`), as Anthropic's reset headers
/// write them. By hand: a formatter per request would cost more than the rest of the answer.
enum RFC3339 {
    /// The time, rounded up to the next whole second.
    static func format(epochMilliseconds: Int) -> String {
        let seconds = (epochMilliseconds + 999) / 1000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : String(n) }
        return "\(year)-\(two(month))-\(two(day))T\(two(secondOfDay / 3600)):\(two(secondOfDay % 3600 / 60))"
            + ":\(two(secondOfDay % 60))Z"
    }
}
