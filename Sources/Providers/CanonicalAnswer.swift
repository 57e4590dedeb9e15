/// Builds the canonical answers that translating adapters hand to the app: OpenAI `chat.completion` objects and
/// `chat.completion.chunk` objects, in the field order OpenAI's API reference shows. `created` is always 0: the
/// translation is pure and the providers translated from do not all send a creation time.
enum CanonicalAnswer {
    struct ToolCall {
        var id: String
        var name: String
        /// The arguments object as compact JSON text.
        var arguments: String
        /// Gemini's thought signature, handed out where Google's OpenAI-compatible API puts it so the app's next
        /// request carries it back.
        var thoughtSignature: String?
    }

    /// Token counts with the details OpenAI reports beside them.
    struct TokenCounts: Equatable {
        var promptTokens: Int?
        var completionTokens: Int?
        var totalTokens: Int?
        /// Prompt tokens read from the provider's cache (`prompt_tokens_details.cached_tokens`).
        var cachedTokens: Int?
        /// Completion tokens spent thinking (`completion_tokens_details.reasoning_tokens`).
        var reasoningTokens: Int?

        var usage: Usage {
            Usage(promptTokens: promptTokens, completionTokens: completionTokens, totalTokens: totalTokens)
        }
    }

    static func completion(id: String, model: String, text: String?, toolCalls: [ToolCall], finishReason: String?,
                           counts: TokenCounts?) -> [UInt8] {
        let message = JSONNode.fields([
            "role": .string("assistant"),
            "content": text.map(JSONNode.string) ?? .null,
            "tool_calls": toolCalls.isEmpty ? nil : .array(toolCalls.map { toolCall($0, index: nil) }),
            "refusal": .null,
        ])
        let choice = JSONNode.fields([
            "index": .integer(0),
            "message": message,
            "logprobs": .null,
            "finish_reason": finishReason.map(JSONNode.string) ?? .null,
        ])
        return JSONNode.fields([
            "id": .string(id),
            "object": .string("chat.completion"),
            "created": .integer(0),
            "model": .string(model),
            "choices": .array([choice]),
            "usage": counts.map(usage),
        ]).bytes
    }

    /// A chunk with one choice whose `delta` holds `delta`'s members.
    static func chunk(id: String, model: String, delta: [JSONNode.Member], finishReason: String? = nil) -> [UInt8] {
        let choice = JSONNode.fields([
            "index": .integer(0),
            "delta": .object(delta),
            "logprobs": .null,
            "finish_reason": finishReason.map(JSONNode.string) ?? .null,
        ])
        return chunk(id: id, model: model, choices: [choice], usage: nil)
    }

    /// The last chunk of a stream whose app asked for usage: no choices, only `usage`.
    static func usageChunk(id: String, model: String, counts: TokenCounts) -> [UInt8] {
        chunk(id: id, model: model, choices: [], usage: usage(counts))
    }

    private static func chunk(id: String, model: String, choices: [JSONNode], usage: JSONNode?) -> [UInt8] {
        JSONNode.fields([
            "id": .string(id),
            "object": .string("chat.completion.chunk"),
            "created": .integer(0),
            "model": .string(model),
            "choices": .array(choices),
            "usage": usage,
        ]).bytes
    }

    /// A tool call; with an `index` it is the first delta of a streamed call.
    static func toolCall(_ call: ToolCall, index: Int?) -> JSONNode {
        JSONNode.fields([
            "index": index.map(JSONNode.integer),
            "id": .string(call.id),
            "type": .string("function"),
            "function": .fields(["name": .string(call.name), "arguments": .string(call.arguments)]),
            "extra_content": call.thoughtSignature.map {
                .fields(["google": .fields(["thought_signature": .string($0)])])
            },
        ])
    }

    /// A later piece of a streamed call's arguments.
    static func toolCallArguments(index: Int, piece: String) -> JSONNode {
        .fields(["index": .integer(index), "function": .fields(["arguments": .string(piece)])])
    }

    static func usage(_ counts: TokenCounts) -> JSONNode {
        JSONNode.fields([
            "prompt_tokens": .integer(counts.promptTokens ?? 0),
            "completion_tokens": .integer(counts.completionTokens ?? 0),
            "total_tokens": .integer(counts.totalTokens ?? (counts.promptTokens ?? 0) + (counts.completionTokens ?? 0)),
            "prompt_tokens_details": counts.cachedTokens.map { .fields(["cached_tokens": .integer($0)]) },
            "completion_tokens_details": counts.reasoningTokens.map { .fields(["reasoning_tokens": .integer($0)]) },
        ])
    }
}
