import Foundation
import NIOCore
import NIOHTTP1

/// Google's Gemini API: the model and the method (`generateContent`, `streamGenerateContent`) in the path,
/// the key in `x-goog-api-key` or `?key=`, `GenerateContentResponse` objects, `data:` events with CRLF line
/// ends and no `[DONE]` (`alt=sse`) or a JSON array sent element by element (no `alt`), and Google's
/// `{"error": {"code", "message", "status"}}` bodies. No rate-limit headers: a 429 says when to retry in its
/// `RetryInfo` detail.
struct GeminiDialect: ProviderDialect {
    let model: String
    let stream: Bool
    let sse: Bool
    /// "v1beta" or "v1", for messages that name the API version.
    let version: String
    /// The `key` query parameter, used when there is no `x-goog-api-key` header.
    let queryKey: String?
    let responseID: String

    init(route: Route, envelope: ResponsePlan.Envelope) {
        model = route.pathModel ?? ""
        stream = route.pathStream
        sse = route.query["alt"] == "sse"
        version = route.version
        queryKey = route.query["key"]
        responseID = GeminiWire.responseID(prefix: envelope.idPrefix, sequence: envelope.sequence)
    }

    /// No key at all is a 403 (the caller has no identity); a key that is not the required one is a 400.
    /// `x-goog-api-key`, else the `key` query parameter.
    func apiKey(_ headers: HTTPHeaders) -> String? {
        headers.first(name: "x-goog-api-key") ?? queryKey
    }

    func reject(_ headers: HTTPHeaders, requiredKey: String?) -> WireError? {
        switch Self.keyProblem(apiKey(headers), requiredKey: requiredKey) {
        case .missing:
            return GoogleError(
                status: 403, state: "PERMISSION_DENIED",
                message: "Method doesn't allow unregistered callers (callers without established identity). Please "
                    + "use API Key or other form of API consumer identity to call this API."
            ).wire
        case .wrong:
            let message = "API key not valid. Please pass a valid API key."
            return GoogleError(
                status: 400, state: "INVALID_ARGUMENT", message: message,
                details: [
                    .object([
                        ("@type", .string("type.googleapis.com/google.rpc.ErrorInfo")),
                        ("reason", .string("API_KEY_INVALID")),
                        ("domain", .string("googleapis.com")),
                        ("metadata", .object([("service", .string("generativelanguage.googleapis.com"))])),
                    ]),
                    .object([
                        ("@type", .string("type.googleapis.com/google.rpc.LocalizedMessage")),
                        ("locale", .string("en-US")),
                        ("message", .string(message)),
                    ]),
                ]
            ).wire
        case nil:
            return nil
        }
    }

    func parse(_ body: ByteBufferView) -> Result<ChatRequest, WireError> {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            return .failure(
                GoogleError(status: 400, state: "INVALID_ARGUMENT", message: "Invalid JSON payload received. "
                    + "Unexpected token.").wire
            )
        }
        guard let contents = object["contents"] as? [[String: Any]], !contents.isEmpty else {
            return .failure(
                GoogleError(
                    status: 400, state: "INVALID_ARGUMENT",
                    message: "* GenerateContentRequest.contents: contents is not specified\n"
                ).wire
            )
        }
        let system = (object["systemInstruction"] ?? object["system_instruction"]) as? [String: Any]
        var promptTokens = ChatRequest.wordCount(Self.text(of: system))
        var lastUserText = ""
        for content in contents {
            let text = Self.text(of: content)
            promptTokens += ChatRequest.wordCount(text)
            // A single-turn request may leave the role out; it is the user's turn then.
            if (content["role"] as? String ?? "user") == "user" {
                lastUserText = text
            }
        }
        let config = (object["generationConfig"] ?? object["generation_config"]) as? [String: Any]
        let maxTokens = (config?["maxOutputTokens"] ?? config?["max_output_tokens"]) as? Int
        return .success(
            ChatRequest(
                model: model, stream: stream, lastUserText: lastUserText, promptTokens: promptTokens,
                maxTokens: maxTokens
            )
        )
    }

    /// A `Content`'s text: its `parts[].text` joined by newlines.
    private static func text(of content: [String: Any]?) -> String {
        guard let parts = content?["parts"] as? [[String: Any]] else { return "" }
        return parts.compactMap { $0["text"] as? String }.joined(separator: "\n")
    }

    var bodyTooLarge: WireError {
        GoogleError(
            status: 400, state: "INVALID_ARGUMENT",
            message: "Request payload size exceeds the limit: \(FakeProviderHTTPHandler.maxBodyBytes) bytes."
        ).wire
    }

    /// The status name follows the HTTP status (429 `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`, ...); `error_code`
    /// names another status to send with the scripted HTTP status.
    func error(status: Int, code: String?, context: ErrorContext) -> WireError {
        let state = code ?? GoogleError.state(forStatus: status)
        var details: [GoogleError.Value] = []
        if state == "RESOURCE_EXHAUSTED" {
            details = GoogleError.quotaDetails(
                model: model, retryAfterMs: context.retryAfterMs, exceeded: context.exceeded
            )
        }
        var error = GoogleError(
            status: status, state: state, message: message(forState: state), details: details
        ).wire
        error.rateLimited = state == "RESOURCE_EXHAUSTED"
        return error
    }

    /// `{"error": {...}}` as a `data:` event, `UNAVAILABLE` unless `error_code` names another status; the
    /// stream then ends.
    func streamError(code: String?, context: ErrorContext) -> WireError {
        let state = code ?? "UNAVAILABLE"
        return error(status: GoogleError.status(forState: state), code: state, context: context)
    }

    private func message(forState state: String) -> String {
        switch state {
        case "INVALID_ARGUMENT":
            "Request contains an invalid argument."
        case "UNAUTHENTICATED":
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
                + "valid authentication credential. See "
                + "https://developers.google.com/identity/sign-in/web/devconsole-project."
        case "PERMISSION_DENIED":
            "The caller does not have permission"
        case "NOT_FOUND":
            "models/\(model) is not found for API version \(version), or is not supported for generateContent. "
                + "Call ListModels to see the list of available models and their supported methods."
        case "RESOURCE_EXHAUSTED":
            "You exceeded your current quota, please check your plan and billing details. For more information on "
                + "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
        case "CANCELLED":
            "The operation was cancelled."
        case "DEADLINE_EXCEEDED":
            "Deadline expired before operation could complete."
        case "UNAVAILABLE":
            "The model is overloaded. Please try again later."
        case "INTERNAL":
            "An internal error has occurred. Please retry or report in "
                + "https://developers.generativeai.google/guide/troubleshooting"
        default:
            "Request failed with status \(state)."
        }
    }

    func completion(
        content: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope
    ) -> (contentType: String, body: String) {
        let response = GeminiWire.response(
            text: content, finished: true, promptTokens: usage.promptTokens,
            candidatesTokens: usage.completionTokens, model: model, responseID: responseID
        )
        return ("application/json; charset=UTF-8", response.pretty() + "\n")
    }

    func writer(usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope) -> GeminiWire.ChunkWriter {
        GeminiWire.ChunkWriter(sse: sse, model: model, responseID: responseID, usage: usage)
    }

    func headers(contentType: String, envelope: ResponsePlan.Envelope, step: FaultStep) -> [(String, String)] {
        [
            ("content-type", contentType),
            ("vary", "Origin, X-Origin, Referer"),
            ("server", "scaffolding on HTTPServer2"),
            ("x-xss-protection", "0"),
            ("x-frame-options", "SAMEORIGIN"),
            ("x-content-type-options", "nosniff"),
        ] + HeaderValue.retryAfter(step)
    }

    var timing: TimingHeader { .googleServerTiming }
}

/// An error as Google's APIs send it: `{"error": {"code", "message", "status", "details"}}`, pretty-printed
/// with a trailing newline; inside a stream, the same object on one line.
struct GoogleError: Sendable {
    var status: Int
    /// The canonical status name: `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, `UNAVAILABLE`, ...
    var state: String
    var message: String
    var details: [Value] = []

    typealias Value = GoogleJSON

    static func state(forStatus status: Int) -> String {
        switch status {
        case 400: "INVALID_ARGUMENT"
        case 401: "UNAUTHENTICATED"
        case 403: "PERMISSION_DENIED"
        case 404: "NOT_FOUND"
        case 409: "ABORTED"
        case 429: "RESOURCE_EXHAUSTED"
        case 499: "CANCELLED"
        case 501: "NOT_IMPLEMENTED"
        case 503: "UNAVAILABLE"
        case 504: "DEADLINE_EXCEEDED"
        case 500...599: "INTERNAL"
        default: "FAILED_PRECONDITION"
        }
    }

    /// The HTTP status Google maps a status name to.
    static func status(forState state: String) -> Int {
        switch state {
        case "INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE": 400
        case "UNAUTHENTICATED": 401
        case "PERMISSION_DENIED": 403
        case "NOT_FOUND": 404
        case "ABORTED", "ALREADY_EXISTS": 409
        case "RESOURCE_EXHAUSTED": 429
        case "CANCELLED": 499
        case "NOT_IMPLEMENTED": 501
        case "UNAVAILABLE": 503
        case "DEADLINE_EXCEEDED": 504
        default: 500
        }
    }

    /// What a Gemini 429 carries: the quota that ran out (requests or, when the token bucket says so, input
    /// tokens per minute, with its value when known), a link, and (when a wait is known) `RetryInfo`.
    static func quotaDetails(model: String, retryAfterMs: Int?, exceeded: ExceededLimit? = nil) -> [Value] {
        let tokens = exceeded?.quantity == .tokens
        var violation: [(String, Value)] = [
            ("quotaMetric", .string(
                "generativelanguage.googleapis.com/"
                    + (tokens ? "generate_content_input_token_count" : "generate_content_requests")
            )),
            ("quotaId", .string(
                tokens ? "GenerateContentInputTokensPerModelPerMinute" : "GenerateRequestsPerMinutePerProjectPerModel"
            )),
            ("quotaDimensions", .object([("location", .string("global")), ("model", .string(model))])),
        ]
        if let exceeded {
            violation.append(("quotaValue", .string(String(exceeded.limit))))
        }
        var details: [Value] = [
            .object([
                ("@type", .string("type.googleapis.com/google.rpc.QuotaFailure")),
                ("violations", .array([.object(violation)])),
            ]),
            .object([
                ("@type", .string("type.googleapis.com/google.rpc.Help")),
                ("links", .array([
                    .object([
                        ("description", .string("Learn more about Gemini API quotas")),
                        ("url", .string("https://ai.google.dev/gemini-api/docs/rate-limits")),
                    ])
                ])),
            ]),
        ]
        if let retryAfterMs {
            details.append(
                .object([
                    ("@type", .string("type.googleapis.com/google.rpc.RetryInfo")),
                    ("retryDelay", .string(GoogleJSON.duration(milliseconds: retryAfterMs))),
                ])
            )
        }
        return details
    }

    private var object: GoogleJSON {
        var fields: [(String, GoogleJSON)] = [
            ("code", .int(status)), ("message", .string(message)), ("status", .string(state)),
        ]
        if !details.isEmpty {
            fields.append(("details", .array(details)))
        }
        return .object([("error", .object(fields))])
    }

    var wire: WireError {
        let object = object
        return WireError(
            status: status, contentType: "application/json; charset=UTF-8", body: object.pretty() + "\n",
            event: SSEEvent(data: object.compact())
        )
    }
}

/// Just enough JSON to write Google's shapes: pretty-printed with two spaces and `"key": value` for whole
/// bodies, and on one line with `": "` after keys and bare commas for stream events, as Google's servers do.
indirect enum GoogleJSON: Sendable {
    case string(String)
    case int(Int)
    case object([(String, GoogleJSON)])
    case array([GoogleJSON])

    func pretty(indent: Int = 0) -> String {
        let inner = String(repeating: " ", count: indent + 2)
        let outer = String(repeating: " ", count: indent)
        switch self {
        case .string(let text): return JSONText.quoted(text)
        case .int(let value): return String(value)
        case .object(let fields):
            let lines = fields.map { inner + JSONText.quoted($0.0) + ": " + $0.1.pretty(indent: indent + 2) }
            return "{\n" + lines.joined(separator: ",\n") + "\n" + outer + "}"
        case .array(let elements):
            let lines = elements.map { inner + $0.pretty(indent: indent + 2) }
            return "[\n" + lines.joined(separator: ",\n") + "\n" + outer + "]"
        }
    }

    func compact() -> String {
        switch self {
        case .string(let text): JSONText.quoted(text)
        case .int(let value): String(value)
        case .object(let fields):
            "{" + fields.map { JSONText.quoted($0.0) + ": " + $0.1.compact() }.joined(separator: ",") + "}"
        case .array(let elements): "[" + elements.map { $0.compact() }.joined(separator: ",") + "]"
        }
    }

    /// A protobuf `Duration` in JSON: "1s", "1.500s".
    static func duration(milliseconds: Int) -> String {
        let ms = max(0, milliseconds)
        guard ms % 1000 != 0 else { return "\(ms / 1000)s" }
        let fraction = String(ms % 1000)
        return "\(ms / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction + "s"
    }
}

/// The `GenerateContentResponse` objects Gemini sends.
enum GeminiWire {
    /// 23 URL-safe characters, like Gemini's `responseId`.
    static func responseID(prefix: String, sequence: UInt64) -> String {
        let digits = String(sequence, radix: 36)
        return prefix.prefix(13) + String(repeating: "0", count: max(0, 10 - digits.count)) + digits
    }

    /// One response: the candidate's text, `finishReason: STOP` when `finished`, and usage so far.
    static func response(
        text: String, finished: Bool, promptTokens: Int, candidatesTokens: Int, model: String, responseID: String
    ) -> GoogleJSON {
        var candidate: [(String, GoogleJSON)] = [
            ("content", .object([
                ("parts", .array([.object([("text", .string(text))])])),
                ("role", .string("model")),
            ]))
        ]
        if finished {
            candidate.append(("finishReason", .string("STOP")))
        }
        candidate.append(("index", .int(0)))
        return .object([
            ("candidates", .array([.object(candidate)])),
            ("usageMetadata", .object([
                ("promptTokenCount", .int(promptTokens)),
                ("candidatesTokenCount", .int(candidatesTokens)),
                ("totalTokenCount", .int(promptTokens + candidatesTokens)),
                ("promptTokensDetails", .array([
                    .object([("modality", .string("TEXT")), ("tokenCount", .int(promptTokens))])
                ])),
            ])),
            ("modelVersion", .string(model)),
            ("responseId", .string(responseID)),
        ])
    }

    /// One response per piece of text, each with the usage so far, then one with no text and
    /// `finishReason: STOP`; no `[DONE]`.
    struct ChunkWriter: StreamWriter {
        let sse: Bool
        let model: String
        let responseID: String
        let usage: Usage
        private var sent = ""

        init(sse: Bool, model: String, responseID: String, usage: Usage) {
            self.sse = sse
            self.model = model
            self.responseID = responseID
            self.usage = usage
        }

        var contentType: String { sse ? "text/event-stream" : "application/json; charset=UTF-8" }
        var framing: StreamFraming { sse ? .crlf : .jsonArray }
        var opening: [SSEEvent] { [] }

        mutating func content(_ piece: String) -> SSEEvent {
            sent += piece
            let response = GeminiWire.response(
                text: piece, finished: false, promptTokens: usage.promptTokens,
                candidatesTokens: ChatRequest.wordCount(sent), model: model, responseID: responseID
            )
            return SSEEvent(data: response.compact())
        }

        var closing: [SSEEvent] {
            let response = GeminiWire.response(
                text: "", finished: true, promptTokens: usage.promptTokens, candidatesTokens: usage.completionTokens,
                model: model, responseID: responseID
            )
            return [SSEEvent(data: response.compact())]
        }
    }
}
