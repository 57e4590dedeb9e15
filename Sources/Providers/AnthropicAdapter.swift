/// Anthropic's Messages API (`POST {base}/messages`), translated to and from the canonical OpenAI shapes.
///
/// Follows the Messages API reference and the streaming guide (docs.anthropic.com/en/api/messages,
/// /en/api/messages-streaming, /en/api/errors): system messages become the top-level `system`, tool calls and results
/// become `tool_use` / `tool_result` blocks, neighbouring turns of one role are merged because the API wants user and
/// assistant turns to alternate, and `max_tokens` (required there) defaults to 4096.
public struct AnthropicAdapter: ProviderAdapter {
    /// The API root, e.g. `https://api.anthropic.com/v1`.
    public var baseURL: String
    /// The `anthropic-version` header.
    public var version: String

    /// Anthropic requires `max_tokens`; this is sent when the app gave none.
    public static let defaultMaxTokens = 4096

    /// An adapter for the API at `baseURL` (a trailing slash is ignored), sending `version` as `anthropic-version`.
    public init(baseURL: String, version: String = "2023-06-01") {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.version = version
    }

    public func makeRequest(_ request: ChatRequest, model: String, apiKey: String?) throws(ProviderError)
        -> ProviderHTTPRequest {
        let conversation = try CanonicalConversation(request)
        var headers: [(name: String, value: String)] = []
        if let apiKey { headers.append(("x-api-key", apiKey)) }
        headers += [
            ("anthropic-version", version),
            ("content-type", "application/json"),
            ("accept", request.stream ? "text/event-stream" : "application/json"),
        ]
        let body = try Self.body(conversation, model: model, stream: request.stream)
        return ProviderHTTPRequest(url: baseURL + "/messages", headers: headers, body: body.bytes)
    }

    public func parseResponse(status: Int, body: [UInt8], model: String) throws(ProviderError) -> ParsedResponse {
        guard (200..<300).contains(status) else { throw Self.error(status: status, body: body) }
        guard let root = JSONNode.parse(body), let content = root["content"]?.array else {
            throw ProviderError(.malformedResponse, "provider answered \(status) with a body that is not a message")
        }
        var texts: [String] = []
        var calls: [CanonicalAnswer.ToolCall] = []
        for block in content {
            switch block["type"]?.string {
            case "text":
                texts.append(block["text"]?.string ?? "")
            case "tool_use":
                calls.append(CanonicalAnswer.ToolCall(
                    id: block["id"]?.string ?? "", name: block["name"]?.string ?? "",
                    arguments: (block["input"] ?? .object([])).text))
            default:
                break  // thinking, redacted_thinking, server tool blocks: no canonical place
            }
        }
        let counts = Self.counts(root["usage"])
        let answer = CanonicalAnswer.completion(
            id: root["id"]?.string ?? "msg", model: root["model"]?.string ?? model,
            text: texts.isEmpty && !calls.isEmpty ? nil : texts.joined(), toolCalls: calls,
            finishReason: Self.finishReason(root["stop_reason"]?.string), counts: counts)
        return ParsedResponse(body: answer, usage: counts.usage)
    }

    public func makeStreamTranslator(model: String) -> any StreamTranslator {
        AnthropicStreamTranslator(model: model)
    }

    public func error(status: Int, body: [UInt8]) -> ProviderError {
        Self.error(status: status, body: body)
    }

    /// The error for a non-2xx answer, from the status and Anthropic's `error.type`
    /// (`{"type":"error","error":{"type":"overloaded_error","message":...}}`); the message is left out.
    public static func error(status: Int, body: [UInt8]) -> ProviderError {
        let type = JSONNode.parse(body)?["error"]?["type"]?.string
        let suffix = type.map { " (\($0))" } ?? ""
        return ProviderError(.upstreamStatus(status), "provider answered HTTP \(status)" + suffix, providerCode: type)
    }

    // MARK: - Request

    static func body(_ c: CanonicalConversation, model: String, stream: Bool) throws(ProviderError) -> JSONNode {
        var messages: [JSONNode] = []
        for turn in c.messages.mergingRoles({ $0 == .assistant ? "assistant" : "user" }) {
            var blocks: [JSONNode] = []
            for part in turn.parts { blocks.append(try block(part)) }
            messages.append(.fields(["role": .string(turn.role), "content": .array(blocks)]))
        }
        let system: JSONNode? = switch c.system.count {
        case 0: nil
        case 1: .string(c.system[0])
        default: .array(c.system.map { .fields(["type": .string("text"), "text": .string($0)]) })
        }
        let tools: JSONNode? = c.tools.isEmpty ? nil : .array(c.tools.map { tool in
            .fields([
                "name": .string(tool.name),
                "description": tool.description.map(JSONNode.string),
                "input_schema": tool.parameters ?? .fields(["type": .string("object"), "properties": .object([])]),
            ])
        })
        return JSONNode.fields([
            "model": .string(model),
            "max_tokens": .integer(c.maxTokens ?? defaultMaxTokens),
            "system": system,
            "messages": .array(messages),
            "tools": tools,
            "tool_choice": c.tools.isEmpty ? nil : toolChoice(c.toolChoice, parallel: c.parallelToolCalls),
            // Anthropic's temperature range is 0...1, OpenAI's 0...2: higher values are sent as 1.
            "temperature": c.temperature.map { ($0.double ?? 0) > 1 ? .number("1") : $0 },
            "top_p": c.topP,
            "stop_sequences": c.stop.isEmpty ? nil : .array(c.stop.map(JSONNode.string)),
            "metadata": c.endUser.map { .fields(["user_id": .string($0)]) },
            "stream": stream ? .bool(true) : nil,
        ])
    }

    private static func block(_ part: CanonicalConversation.Part) throws(ProviderError) -> JSONNode {
        switch part {
        case .text(let text):
            return .fields(["type": .string("text"), "text": .string(text)])
        case .image(let media):
            return .fields(["type": .string("image"), "source": source(media)])
        case .document(let media):
            return .fields(["type": .string("document"), "source": source(media)])
        case .audio:
            throw ProviderError(.badRequest, "Anthropic's Messages API does not take audio input")
        case .toolCall(let call):
            return .fields([
                "type": .string("tool_use"), "id": .string(call.id), "name": .string(call.name),
                "input": call.arguments,
            ])
        case .toolResult(let result):
            return .fields([
                "type": .string("tool_result"), "tool_use_id": .string(result.callID),
                "content": .string(result.content),
            ])
        }
    }

    private static func source(_ media: CanonicalConversation.Media) -> JSONNode {
        switch media {
        case .base64(let mediaType, let data):
            .fields(["type": .string("base64"), "media_type": .string(mediaType), "data": .string(data)])
        case .url(let url):
            .fields(["type": .string("url"), "url": .string(url)])
        }
    }

    /// OpenAI's `tool_choice` and `parallel_tool_calls` in Anthropic's `tool_choice`.
    static func toolChoice(_ choice: CanonicalConversation.ToolChoice?, parallel: Bool?) -> JSONNode? {
        let oneAtATime: JSONNode? = parallel == false ? .bool(true) : nil
        switch choice {
        case nil:
            return oneAtATime.map { .fields(["type": .string("auto"), "disable_parallel_tool_use": $0]) }
        case .auto?:
            return .fields(["type": .string("auto"), "disable_parallel_tool_use": oneAtATime])
        case .none?:
            return .fields(["type": .string("none")])
        case .required?:
            return .fields(["type": .string("any"), "disable_parallel_tool_use": oneAtATime])
        case .function(let name)?:
            return .fields(["type": .string("tool"), "name": .string(name), "disable_parallel_tool_use": oneAtATime])
        }
    }

    // MARK: - Answer

    /// Anthropic's `stop_reason` as an OpenAI `finish_reason`.
    static func finishReason(_ stopReason: String?) -> String? {
        switch stopReason {
        case nil: nil
        case "max_tokens"?, "model_context_window_exceeded"?: "length"
        case "tool_use"?: "tool_calls"
        case "refusal"?: "content_filter"
        default: "stop"  // end_turn, stop_sequence, pause_turn
        }
    }

    /// Anthropic's `usage`. Its `input_tokens` leaves out cached tokens, which OpenAI's `prompt_tokens` counts, so
    /// the cache reads and writes are added in.
    static func counts(_ usage: JSONNode?) -> CanonicalAnswer.TokenCounts {
        var counts = CanonicalAnswer.TokenCounts()
        update(&counts, from: usage)
        return counts
    }

    /// Updates counts from a `usage` object that may carry only some fields (a stream's `message_delta`).
    static func update(_ counts: inout CanonicalAnswer.TokenCounts, from usage: JSONNode?) {
        guard let usage else { return }
        if let input = usage["input_tokens"]?.int {
            let cacheRead = usage["cache_read_input_tokens"]?.int
            counts.promptTokens = input + (usage["cache_creation_input_tokens"]?.int ?? 0) + (cacheRead ?? 0)
            counts.cachedTokens = cacheRead
        }
        if let output = usage["output_tokens"]?.int { counts.completionTokens = output }
        if let prompt = counts.promptTokens, let completion = counts.completionTokens {
            counts.totalTokens = prompt + completion
        }
    }
}

/// Anthropic's stream events as canonical chunks: `message_start` opens the answer (`delta.role`), text and
/// `input_json_delta` pieces become `content` and `tool_calls` deltas, `message_delta` carries the finish reason,
/// `message_stop` ends it with a usage chunk and `.done`. `ping` and event types added later are skipped, as the
/// streaming guide asks.
struct AnthropicStreamTranslator: StreamTranslator {
    private var id = "msg"
    private var model: String
    private var started = false
    private var finished = false
    private var counts = CanonicalAnswer.TokenCounts()
    /// Content block index → OpenAI tool call index, for `tool_use` blocks.
    private var toolIndex: [Int: Int] = [:]
    /// Tool calls (by OpenAI index) whose arguments have had a non-empty piece.
    private var toolHasArguments: Set<Int> = []

    init(model: String) {
        self.model = model
    }

    mutating func translate(_ event: SSEEvent) -> [StreamPiece] {
        guard let data = JSONNode.parse(event.data), data.members != nil else {
            return [.error(ProviderError(.malformedResponse, "provider sent a stream event that is not valid JSON"))]
        }
        switch data["type"]?.string ?? event.event {
        case "message_start":
            let message = data["message"]
            id = message?["id"]?.string ?? id
            model = message?["model"]?.string ?? model
            AnthropicAdapter.update(&counts, from: message?["usage"])
            return opening()
        case "content_block_start":
            return opening() + blockStart(index: data["index"]?.int ?? -1, block: data["content_block"])
        case "content_block_delta":
            return opening() + blockDelta(index: data["index"]?.int ?? -1, delta: data["delta"])
        case "content_block_stop":
            // A tool called without arguments streams none; OpenAI sends "{}", which apps parse.
            guard let n = toolIndex[data["index"]?.int ?? -1], !toolHasArguments.contains(n) else { return [] }
            toolHasArguments.insert(n)
            return [chunk(["tool_calls": .array([CanonicalAnswer.toolCallArguments(index: n, piece: "{}")])])]
        case "message_delta":
            AnthropicAdapter.update(&counts, from: data["usage"])
            guard !finished, let reason = AnthropicAdapter.finishReason(data["delta"]?["stop_reason"]?.string) else {
                return []
            }
            finished = true
            return opening() + [.chunk(CanonicalAnswer.chunk(id: id, model: model, delta: [], finishReason: reason),
                                       usage: nil)]
        case "message_stop":
            return opening() + [
                .chunk(CanonicalAnswer.usageChunk(id: id, model: model, counts: counts), usage: counts.usage), .done,
            ]
        case "error":
            let type = data["error"]?["type"]?.string
            return [.error(ProviderError(.upstreamStatus(200), "provider sent an error event mid-stream"
                + (type.map { " (\($0))" } ?? ""), providerCode: type))]
        default:
            return []  // ping, and event types added after this was written
        }
    }

    mutating func finish() -> [StreamPiece] { [] }

    /// The first chunk, `delta: {role: assistant, content: ""}`, once.
    private mutating func opening() -> [StreamPiece] {
        guard !started else { return [] }
        started = true
        return [chunk([.init("role", .string("assistant")), .init("content", .string(""))])]
    }

    private mutating func blockStart(index: Int, block: JSONNode?) -> [StreamPiece] {
        switch block?["type"]?.string {
        case "text":
            guard let text = block?["text"]?.string, !text.isEmpty else { return [] }
            return [chunk(["content": .string(text)])]
        case "tool_use":
            let n = toolIndex.count
            toolIndex[index] = n
            let call = CanonicalAnswer.ToolCall(id: block?["id"]?.string ?? "", name: block?["name"]?.string ?? "",
                                                arguments: "")
            return [chunk(["tool_calls": .array([CanonicalAnswer.toolCall(call, index: n)])])]
        default:
            return []
        }
    }

    private mutating func blockDelta(index: Int, delta: JSONNode?) -> [StreamPiece] {
        switch delta?["type"]?.string {
        case "text_delta":
            guard let text = delta?["text"]?.string, !text.isEmpty else { return [] }
            return [chunk(["content": .string(text)])]
        case "input_json_delta":
            guard let n = toolIndex[index], let piece = delta?["partial_json"]?.string, !piece.isEmpty else {
                return []
            }
            toolHasArguments.insert(n)
            return [chunk(["tool_calls": .array([CanonicalAnswer.toolCallArguments(index: n, piece: piece)])])]
        default:
            return []  // thinking_delta, signature_delta, citations_delta: no canonical place
        }
    }

    private func chunk(_ delta: KeyValuePairs<String, JSONNode>) -> StreamPiece {
        chunk(delta.map { JSONNode.Member($0.key, $0.value) })
    }

    private func chunk(_ delta: [JSONNode.Member]) -> StreamPiece {
        .chunk(CanonicalAnswer.chunk(id: id, model: model, delta: delta), usage: nil)
    }
}
