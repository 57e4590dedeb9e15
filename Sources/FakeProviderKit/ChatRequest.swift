import Foundation

/// The parts of a chat request the fake answers from, whichever provider's format it came in.
struct ChatRequest: Sendable {
    var model: String
    var stream: Bool
    /// OpenAI's `stream_options.include_usage`.
    var includeUsage = false
    /// OpenAI's `stream_options.include_obfuscation`.
    var includeObfuscation = true
    /// Text of the last `user` message (text parts joined when the content is an array of parts).
    var lastUserText: String
    /// Words across all messages (and the system prompt): the fake's stand-in for prompt tokens.
    var promptTokens: Int
    /// The output cap (`max_completion_tokens`, `max_tokens`, `maxOutputTokens`), counted against the simulated
    /// token rate limit.
    var maxTokens: Int?
    /// The function names the request's `tools` offered (OpenAI's format), in order.
    var tools: [String] = []

    /// What the request is charged against token limits: its prompt tokens plus its output cap.
    var tokenCost: Int { promptTokens + (maxTokens ?? 0) }

    /// Parses an OpenAI chat-completions body, or returns the error OpenAI would answer with. Azure names the
    /// model in the path (`deployment`), so the body's `model` is then neither required nor used.
    static func parseOpenAI(
        _ bytes: some Sequence<UInt8>, deployment: String? = nil
    ) -> Result<ChatRequest, OpenAIError> {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            return .failure(.unparsableJSON)
        }
        let model: String
        if let deployment {
            model = deployment
        } else if let named = object["model"] as? String, !named.isEmpty {
            model = named
        } else {
            return .failure(.missingModel)
        }
        guard let messages = object["messages"] as? [[String: Any]] else {
            return .failure(.missingMessages)
        }
        var lastUserText = ""
        var promptTokens = 0
        for message in messages {
            let text = Self.text(of: message["content"])
            promptTokens += Self.wordCount(text)
            if message["role"] as? String == "user" {
                lastUserText = text
            }
        }
        let streamOptions = object["stream_options"] as? [String: Any]
        return .success(
            ChatRequest(
                model: model,
                stream: object["stream"] as? Bool ?? false,
                includeUsage: streamOptions?["include_usage"] as? Bool ?? false,
                includeObfuscation: streamOptions?["include_obfuscation"] as? Bool ?? true,
                lastUserText: lastUserText,
                promptTokens: promptTokens,
                maxTokens: (object["max_completion_tokens"] as? Int) ?? (object["max_tokens"] as? Int),
                tools: (object["tools"] as? [[String: Any]] ?? []).compactMap {
                    ($0["function"] as? [String: Any])?["name"] as? String
                }
            )
        )
    }

    /// A message's `content`: a string, or an array of parts of which the `text` ones count (OpenAI's and
    /// Anthropic's content blocks alike).
    static func text(of content: Any?) -> String {
        if let string = content as? String {
            return string
        }
        if let parts = content as? [[String: Any]] {
            return parts.compactMap { part in
                part["type"] as? String == "text" ? part["text"] as? String : nil
            }.joined(separator: "\n")
        }
        return ""
    }

    /// Whitespace-separated words; the fake's token count for prompts and completions.
    static func wordCount(_ text: String) -> Int {
        UTF8Scan.bytes(of: text) { bytes in
            var count = 0
            var inWord = false
            for index in bytes.indices {
                let byte = bytes[index]
                let isSpace = byte == 0x20 || (byte >= 0x09 && byte <= 0x0D)
                if !isSpace && !inWord {
                    count += 1
                }
                inWord = !isSpace
            }
            return count
        }
    }
}

/// Loops over a string's UTF-8 bytes in place. The fake runs inside the debug-built test process, where a loop
/// over `String.UTF8View` goes through unspecialised generic calls per byte: ~0.1 µs a byte, so the answers the
/// memory tests ask for (250 of 0.5 MB) took the fake ~50 s of CPU and held requests past their first-byte
/// timeout. Over a buffer pointer the same loops cost a tenth of that.
enum UTF8Scan {
    static func bytes<R>(of string: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let result = string.utf8.withContiguousStorageIfAvailable(body) {
            return result
        }
        var copy = string
        return copy.withUTF8(body)
    }

    /// Whether every byte satisfies `predicate`.
    static func all(of string: String, _ predicate: (UInt8) -> Bool) -> Bool {
        bytes(of: string) { bytes in
            for index in bytes.indices where !predicate(bytes[index]) {
                return false
            }
            return true
        }
    }
}
