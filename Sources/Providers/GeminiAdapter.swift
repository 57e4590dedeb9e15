import Foundation

/// Google's Gemini API (`models/{model}:generateContent`, streamed `:streamGenerateContent?alt=sse`), translated to
/// and from the canonical OpenAI shapes.
///
/// Follows the Gemini API reference (ai.google.dev/api/generate-content, /api/caching#Content, function calling and
/// thought-signature guides): roles `user`/`model`, `systemInstruction`, `inlineData`/`fileData` parts,
/// `functionCall`/`functionResponse` parts, `tools[].functionDeclarations` and `generationConfig`. The key travels in
/// the `x-goog-api-key` header, never in the URL, because URLs reach logs.
public struct GeminiAdapter: ProviderAdapter {
    /// The API root, e.g. `https://generativelanguage.googleapis.com/v1beta`.
    public var baseURL: String

    /// Google's documented stand-in for a missing thought signature on a replayed function call (a history written
    /// by another provider, or by an app that dropped the signature). Gemini 3 refuses such calls without one.
    static let skipThoughtSignature = "skip_thought_signature_validator"

    /// An adapter for the API at `baseURL` (a trailing slash is ignored).
    public init(baseURL: String) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
    }

    public func makeRequest(_ request: ChatRequest, model: String, apiKey: String?) throws(ProviderError)
        -> ProviderHTTPRequest {
        let conversation = try CanonicalConversation(request)
        var headers: [(name: String, value: String)] = [
            ("Content-Type", "application/json"),
            ("Accept", request.stream ? "text/event-stream" : "application/json"),
        ]
        if let apiKey { headers.append(("x-goog-api-key", apiKey)) }
        let method = request.stream ? ":streamGenerateContent?alt=sse" : ":generateContent"
        let body = try Self.body(conversation, model: model)
        return ProviderHTTPRequest(url: baseURL + "/" + Self.resourceName(model) + method, headers: headers,
                                   body: body.bytes)
    }

    public func parseResponse(status: Int, body: [UInt8], model: String) throws(ProviderError) -> ParsedResponse {
        guard (200..<300).contains(status) else { throw Self.error(status: status, body: body) }
        guard let root = JSONNode.parse(body), root.members != nil else {
            throw ProviderError(.malformedResponse, "provider answered \(status) with a body that is not valid JSON")
        }
        let id = root["responseId"]?.string
        let candidate = root["candidates"]?.array?.first
        let (texts, calls) = Self.read(candidate?["content"]?["parts"], responseID: id, firstCall: 0)
        let finish: String? = if let reason = candidate?["finishReason"]?.string {
            Self.finishReason(reason, calledTools: !calls.isEmpty)
        } else if root["promptFeedback"]?["blockReason"] != nil {
            "content_filter"
        } else {
            nil
        }
        let counts = root["usageMetadata"].map(Self.counts)
        let answer = CanonicalAnswer.completion(
            id: id ?? Self.fallbackID, model: root["modelVersion"]?.string ?? model,
            text: texts.isEmpty && !calls.isEmpty ? nil : texts.joined(), toolCalls: calls, finishReason: finish,
            counts: counts)
        return ParsedResponse(body: answer, usage: counts?.usage)
    }

    public func makeStreamTranslator(model: String) -> any StreamTranslator {
        GeminiStreamTranslator(model: model)
    }

    public func error(status: Int, body: [UInt8]) -> ProviderError {
        Self.error(status: status, body: body)
    }

    /// The error for a non-2xx answer, from the status and Google's `error.status`
    /// (`{"error":{"code":429,"message":...,"status":"RESOURCE_EXHAUSTED"}}`, sometimes inside an array); the
    /// message is left out.
    public static func error(status: Int, body: [UInt8]) -> ProviderError {
        var root = JSONNode.parse(body)
        if let first = root?.array?.first { root = first }
        let code = root?["error"]?["status"]?.string
        let suffix = code.map { " (\($0))" } ?? ""
        return ProviderError(.upstreamStatus(status), "provider answered HTTP \(status)" + suffix, providerCode: code)
    }

    // MARK: - Request

    /// `models/{model}`, or the name as given when it already names a collection (`tunedModels/...`). Each segment is
    /// percent-encoded so a name cannot change the URL's shape.
    static func resourceName(_ model: String) -> String {
        let segments = model.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let path = segments.count > 1 ? segments : ["models"] + segments
        return path.map(percentEncodedPathSegment).joined(separator: "/")
    }

    static func body(_ c: CanonicalConversation, model: String) throws(ProviderError) -> JSONNode {
        let wantsSignatures = model.split(separator: "/").last?.hasPrefix("gemini-3") ?? false
        var contents: [JSONNode] = []
        for turn in c.messages.mergingRoles({ $0 == .assistant ? "model" : "user" }) {
            var parts: [JSONNode] = []
            var signed = false
            for part in turn.parts {
                if case .toolCall(var call) = part {
                    // Gemini 3 checks the first function call of each model turn for a signature.
                    if wantsSignatures, !signed, call.thoughtSignature == nil {
                        call.thoughtSignature = skipThoughtSignature
                    }
                    signed = true
                    parts.append(functionCall(call))
                } else {
                    parts.append(try self.part(part))
                }
            }
            contents.append(.fields(["role": .string(turn.role), "parts": .array(parts)]))
        }
        let system: JSONNode? = c.system.isEmpty ? nil
            : .fields(["parts": .array(c.system.map { .fields(["text": .string($0)]) })])
        let tools: JSONNode? = c.tools.isEmpty ? nil : .array([.fields([
            "functionDeclarations": .array(c.tools.map { tool in
                .fields([
                    "name": .string(tool.name),
                    "description": tool.description.map(JSONNode.string),
                    // JSON Schema as OpenAI tools carry it; `parameters` takes only an OpenAPI subset.
                    "parametersJsonSchema": tool.parameters,
                ])
            }),
        ])])
        let config = generationConfig(c)
        return JSONNode.fields([
            "contents": .array(contents),
            "systemInstruction": system,
            "tools": tools,
            "toolConfig": c.tools.isEmpty ? nil : toolConfig(c.toolChoice),
            "generationConfig": config.isEmpty ? nil : .object(config),
        ])
    }

    private static func part(_ part: CanonicalConversation.Part) throws(ProviderError) -> JSONNode {
        switch part {
        case .text(let text):
            return .fields(["text": .string(text)])
        case .image(let media), .document(let media):
            switch media {
            case .base64(let mediaType, let data):
                return .fields(["inlineData": .fields(["mimeType": .string(mediaType), "data": .string(data)])])
            case .url(let url):
                return .fields(["fileData": .fields(["mimeType": .string(mimeType(ofURL: url)),
                                                     "fileUri": .string(url)])])
            }
        case .audio(let data, let format):
            return .fields(["inlineData": .fields(["mimeType": .string("audio/" + format), "data": .string(data)])])
        case .toolCall(let call):
            return functionCall(call)
        case .toolResult(let result):
            guard let name = result.name else {
                throw ProviderError(.badRequest, "a tool message answers a tool_call_id no earlier assistant message"
                    + " made; Gemini needs the function's name")
            }
            // A JSON object result is the response itself; anything else goes under "output", as the reference
            // for FunctionResponse.response suggests.
            let response: JSONNode = if let object = JSONNode.parse(result.content), object.members != nil {
                object
            } else {
                .fields(["output": .string(result.content)])
            }
            return .fields(["functionResponse": .fields(["name": .string(name), "response": response])])
        }
    }

    private static func functionCall(_ call: CanonicalConversation.ToolCall) -> JSONNode {
        .fields([
            "functionCall": .fields(["name": .string(call.name), "args": call.arguments]),
            "thoughtSignature": call.thoughtSignature.map(JSONNode.string),
        ])
    }

    /// `fileData` needs a MIME type; an http(s) image URL only has its extension to go by.
    static func mimeType(ofURL url: String) -> String {
        let path = url.split(separator: "?").first.map(String.init) ?? url
        switch path.split(separator: ".").last?.lowercased() {
        case "png": return "image/png"
        case "gif": return "image/gif"
        case "webp": return "image/webp"
        case "heic": return "image/heic"
        case "heif": return "image/heif"
        case "pdf": return "application/pdf"
        default: return "image/jpeg"
        }
    }

    static func toolConfig(_ choice: CanonicalConversation.ToolChoice?) -> JSONNode? {
        let mode: String
        var allowed: JSONNode?
        switch choice {
        case nil: return nil
        case .auto?: mode = "AUTO"
        case .none?: mode = "NONE"
        case .required?: mode = "ANY"
        case .function(let name)?:
            mode = "ANY"
            allowed = .array([.string(name)])
        }
        return .fields(["functionCallingConfig": .fields(["mode": .string(mode), "allowedFunctionNames": allowed])])
    }

    private static func generationConfig(_ c: CanonicalConversation) -> [JSONNode.Member] {
        var schema: JSONNode?
        var mimeType: JSONNode?
        switch c.responseFormat {
        case nil: break
        case .jsonObject?: mimeType = .string("application/json")
        case .jsonSchema(let s)?:
            mimeType = .string("application/json")
            schema = s
        }
        return JSONNode.fields([
            "maxOutputTokens": c.maxTokens.map(JSONNode.integer),
            "temperature": c.temperature,
            "topP": c.topP,
            "stopSequences": c.stop.isEmpty ? nil : .array(c.stop.map(JSONNode.string)),
            "seed": c.seed,
            "responseMimeType": mimeType,
            "responseJsonSchema": schema,
        ]).members ?? []
    }

    // MARK: - Answer

    static let fallbackID = "chatcmpl-gemini"

    /// The text (thought summaries left out) and function calls of a candidate's parts. Calls without an id of
    /// their own get one from the response id and their position, so ids are stable and do not repeat across turns.
    static func read(_ parts: JSONNode?, responseID: String?, firstCall: Int)
        -> (texts: [String], calls: [CanonicalAnswer.ToolCall]) {
        var texts: [String] = []
        var calls: [CanonicalAnswer.ToolCall] = []
        for part in parts?.array ?? [] {
            if let call = part["functionCall"] {
                let n = firstCall + calls.count
                calls.append(CanonicalAnswer.ToolCall(
                    id: call["id"]?.string ?? "call_" + (responseID.map { $0 + "_" } ?? "") + String(n),
                    name: call["name"]?.string ?? "", arguments: (call["args"] ?? .object([])).text,
                    thoughtSignature: part["thoughtSignature"]?.string))
            } else if let text = part["text"]?.string, part["thought"]?.bool != true {
                texts.append(text)
            }
        }
        return (texts, calls)
    }

    /// Gemini's `finishReason` as an OpenAI `finish_reason`. A natural stop after function calls is `tool_calls`,
    /// which is what OpenAI apps loop on.
    static func finishReason(_ reason: String, calledTools: Bool) -> String {
        switch reason {
        case "MAX_TOKENS": "length"
        case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY": "content_filter"
        default: calledTools ? "tool_calls" : "stop"
        }
    }

    /// `usageMetadata`. OpenAI's `completion_tokens` includes reasoning, so Gemini's thought tokens are added to its
    /// candidate tokens and also reported as `reasoning_tokens`.
    static func counts(_ usage: JSONNode) -> CanonicalAnswer.TokenCounts {
        let candidates = usage["candidatesTokenCount"]?.int
        let thoughts = usage["thoughtsTokenCount"]?.int
        let prompt = usage["promptTokenCount"]?.int
        return CanonicalAnswer.TokenCounts(
            promptTokens: prompt.map { $0 + (usage["toolUsePromptTokenCount"]?.int ?? 0) },
            completionTokens: candidates == nil && thoughts == nil ? nil : (candidates ?? 0) + (thoughts ?? 0),
            totalTokens: usage["totalTokenCount"]?.int,
            cachedTokens: usage["cachedContentTokenCount"]?.int,
            reasoningTokens: thoughts)
    }
}

/// Gemini's stream: every SSE event is a whole `GenerateContentResponse` holding the next parts. There is no end
/// marker, and some servers repeat `finishReason` on every event, so the finish chunk, the usage chunk and `.done`
/// wait for `finish()` (the body ended cleanly) and come only if a finish reason was seen.
struct GeminiStreamTranslator: StreamTranslator {
    private var id: String?
    private var model: String
    private var started = false
    private var toolCalls = 0
    private var finishReason: String?
    private var blocked = false
    private var counts: CanonicalAnswer.TokenCounts?

    init(model: String) {
        self.model = model
    }

    mutating func translate(_ event: SSEEvent) -> [StreamPiece] {
        guard let root = JSONNode.parse(event.data), root.members != nil else {
            return [.error(ProviderError(.malformedResponse, "provider sent a stream event that is not valid JSON"))]
        }
        if let error = root["error"] {
            let code = error["status"]?.string
            return [.error(ProviderError(.upstreamStatus(200), "provider sent an error event mid-stream"
                + (code.map { " (\($0))" } ?? ""), providerCode: code))]
        }
        id = id ?? root["responseId"]?.string
        model = root["modelVersion"]?.string ?? model
        if let usage = root["usageMetadata"] { counts = GeminiAdapter.counts(usage) }
        if root["promptFeedback"]?["blockReason"] != nil { blocked = true }

        let candidate = root["candidates"]?.array?.first
        if let reason = candidate?["finishReason"]?.string { finishReason = reason }
        let (texts, calls) = GeminiAdapter.read(candidate?["content"]?["parts"], responseID: id, firstCall: toolCalls)
        let text = texts.joined()
        guard !text.isEmpty || !calls.isEmpty else { return [] }
        var delta = opening()
        if !text.isEmpty { delta.append(.init("content", .string(text))) }
        if !calls.isEmpty {
            delta.append(.init("tool_calls", .array(calls.enumerated().map {
                CanonicalAnswer.toolCall($0.element, index: toolCalls + $0.offset)
            })))
            toolCalls += calls.count
        }
        return [.chunk(CanonicalAnswer.chunk(id: currentID, model: model, delta: delta), usage: nil)]
    }

    mutating func finish() -> [StreamPiece] {
        let reason: String
        if let finishReason {
            reason = GeminiAdapter.finishReason(finishReason, calledTools: toolCalls > 0)
        } else if blocked {
            reason = "content_filter"
        } else {
            return []  // cut before the answer was complete
        }
        var pieces: [StreamPiece] = []
        let open = opening()
        if !open.isEmpty {
            pieces.append(.chunk(CanonicalAnswer.chunk(id: currentID, model: model, delta: open), usage: nil))
        }
        pieces.append(.chunk(CanonicalAnswer.chunk(id: currentID, model: model, delta: [], finishReason: reason),
                             usage: nil))
        if let counts {
            pieces.append(.chunk(CanonicalAnswer.usageChunk(id: currentID, model: model, counts: counts),
                                 usage: counts.usage))
        }
        pieces.append(.done)
        return pieces
    }

    private var currentID: String { id ?? GeminiAdapter.fallbackID }

    /// `role: assistant`, for the first delta only.
    private mutating func opening() -> [JSONNode.Member] {
        guard !started else { return [] }
        started = true
        return [.init("role", .string("assistant"))]
    }
}
