/// Token usage as OpenAI reports it, with the detail objects current models send.
struct Usage: Sendable {
    var promptTokens: Int
    var completionTokens: Int

    var json: String {
        """
        {"prompt_tokens":\(promptTokens),"completion_tokens":\(completionTokens),\
        "total_tokens":\(promptTokens + completionTokens),\
        "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},\
        "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,\
        "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}
        """
    }
}

/// The JSON OpenAI's chat completions endpoint sends, written by hand: the shapes are fixed, and building
/// strings keeps the per-request cost to a few allocations.
enum OpenAIWire {
    static let systemFingerprint = "fp_5f1e2c9a7b"

    /// Azure's per-choice content filter verdict: every category checked and found safe.
    static let contentFilterResults = """
        {"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},\
        "sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}
        """

    /// Azure's verdict on the prompt, sent with the answer (and as the first event of a stream).
    static let promptFilterResults = """
        [{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},\
        "jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},\
        "sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]
        """

    /// A plain `chat.completion` object; `azure` adds Azure's content filter results and drops `service_tier`.
    static func completion(
        id: String, created: Int, model: String, content: String, usage: Usage, azure: Bool = false
    ) -> String {
        var out = "{\"id\":\"\(id)\",\"object\":\"chat.completion\",\"created\":\(created),\"model\":"
        JSONText.appendQuoted(model, to: &out)
        out += ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        JSONText.appendQuoted(content, to: &out)
        out += ",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\""
        if azure {
            out += ",\"content_filter_results\":" + contentFilterResults
        }
        out += "}],\"usage\":" + usage.json
        if azure {
            out += ",\"prompt_filter_results\":" + promptFilterResults
        } else {
            out += ",\"service_tier\":\"default\""
        }
        out += ",\"system_fingerprint\":\"\(systemFingerprint)\"}"
        return out
    }

    /// A `chat.completion` in which the model calls `tool` with `{}`: `content` null, `finish_reason: tool_calls`.
    static func toolCallCompletion(id: String, created: Int, model: String, tool: String, usage: Usage) -> String {
        var out = "{\"id\":\"\(id)\",\"object\":\"chat.completion\",\"created\":\(created),\"model\":"
        JSONText.appendQuoted(model, to: &out)
        out += ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
            + "[{\"id\":\"call_\(id.suffix(12))\",\"type\":\"function\",\"function\":{\"name\":"
        JSONText.appendQuoted(tool, to: &out)
        out += ",\"arguments\":\"{}\"}}],\"refusal\":null,\"annotations\":[]},\"logprobs\":null,"
            + "\"finish_reason\":\"tool_calls\"}],\"usage\":" + usage.json + ",\"service_tier\":\"default\","
            + "\"system_fingerprint\":\"\(systemFingerprint)\"}"
        return out
    }

    /// Builds the `chat.completion.chunk` events of one stream; every chunk shares id, created and model.
    /// Azure's chunks carry content filter results instead of OpenAI's `service_tier` and `obfuscation`, and
    /// its stream opens with a chunk that has no choices, only the prompt's filter results.
    struct ChunkWriter: StreamWriter {
        private let prefix: String
        private let includeUsage: Bool
        private let includeObfuscation: Bool
        private let azure: Bool
        private let usage: Usage

        init(
            id: String, created: Int, model: String, includeUsage: Bool, includeObfuscation: Bool,
            usage: Usage, azure: Bool = false
        ) {
            var prefix = "{\"id\":\"\(id)\",\"object\":\"chat.completion.chunk\",\"created\":\(created),\"model\":"
            JSONText.appendQuoted(model, to: &prefix)
            if !azure {
                prefix += ",\"service_tier\":\"default\""
            }
            prefix += ",\"system_fingerprint\":\"\(OpenAIWire.systemFingerprint)\",\"choices\":["
            self.prefix = prefix
            self.includeUsage = includeUsage
            self.includeObfuscation = includeObfuscation && !azure
            self.azure = azure
            self.usage = usage
        }

        var contentType: String { "text/event-stream; charset=utf-8" }
        var framing: StreamFraming { .lf }

        var opening: [SSEEvent] {
            guard azure else { return [SSEEvent(data: role)] }
            let filters = "{\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
                + "\"prompt_filter_results\":" + OpenAIWire.promptFilterResults + "}"
            return [SSEEvent(data: filters), SSEEvent(data: role)]
        }

        func content(_ piece: String) -> SSEEvent {
            SSEEvent(data: contentChunk(piece))
        }

        /// The finishing chunk, the usage chunk when asked for, and `[DONE]`.
        var closing: [SSEEvent] {
            var events = [SSEEvent(data: finish)]
            if includeUsage {
                events.append(SSEEvent(data: usage(usage)))
            }
            events.append(SSEEvent(data: "[DONE]"))
            return events
        }

        /// The first chunk: the assistant role with empty content.
        var role: String {
            chunk(
                choice: "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"
                    + "\"logprobs\":null,\"finish_reason\":null" + filters(empty: true) + "}",
                padding: 6
            )
        }

        func contentChunk(_ piece: String) -> String {
            var choice = "{\"index\":0,\"delta\":{\"content\":"
            JSONText.appendQuoted(piece, to: &choice)
            choice += "},\"logprobs\":null,\"finish_reason\":null" + filters(empty: false) + "}"
            return chunk(choice: choice, padding: max(1, 12 - piece.utf8.count % 12))
        }

        /// The last choice chunk: empty delta, `finish_reason: "stop"`.
        var finish: String {
            chunk(
                choice: "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\""
                    + filters(empty: true) + "}",
                padding: 4
            )
        }

        /// A streamed tool call, as OpenAI sends one: the name (with the call's id) in the first tool-call delta,
        /// the arguments in the next, then `finish_reason: tool_calls`, the usage chunk when asked for, `[DONE]`.
        func toolCall(_ tool: String) -> [SSEEvent] {
            var named = "{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\","
                + "\"type\":\"function\",\"function\":{\"name\":"
            JSONText.appendQuoted(tool, to: &named)
            named += ",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}"
            let arguments = "{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
                + "{\"arguments\":\"{}\"}}]},\"logprobs\":null,\"finish_reason\":null}"
            let finish = "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}"
            var events = [named, arguments, finish].map { SSEEvent(data: chunk(choice: $0, padding: 3)) }
            if includeUsage { events.append(SSEEvent(data: usage(usage))) }
            events.append(SSEEvent(data: "[DONE]"))
            return events
        }

        /// The `stream_options.include_usage` chunk: no choices, the whole request's usage.
        func usage(_ usage: Usage) -> String {
            prefix + "],\"usage\":" + usage.json + "}"
        }

        /// Azure's per-choice filter results: empty on the role and finish chunks, all safe on content.
        private func filters(empty: Bool) -> String {
            guard azure else { return "" }
            return ",\"content_filter_results\":" + (empty ? "{}" : OpenAIWire.contentFilterResults)
        }

        /// OpenAI pads stream chunks with a random `obfuscation` string (against length side channels);
        /// clients must ignore it. `include_usage` adds `"usage":null` to every other chunk.
        private func chunk(choice: String, padding: Int) -> String {
            var out = prefix + choice + "]"
            if includeUsage {
                out += ",\"usage\":null"
            }
            if includeObfuscation {
                out += ",\"obfuscation\":\"" + String("q7XbR2mLzK4wPe9D".prefix(padding)) + "\""
            }
            out += "}"
            return out
        }
    }

    /// Go-style durations as OpenAI writes them in `x-ratelimit-reset-*`: "6ms", "1s", "8.64s", "6m0s".
    static func duration(milliseconds ms: Int) -> String {
        let ms = max(0, ms)
        if ms == 0 {
            return "0s"
        }
        if ms < 1000 {
            return "\(ms)ms"
        }
        if ms < 60_000 {
            let seconds = ms / 1000
            var fraction = String(ms % 1000)
            guard fraction != "0" else { return "\(seconds)s" }
            fraction = String(repeating: "0", count: 3 - fraction.count) + fraction
            while fraction.hasSuffix("0") { fraction.removeLast() }
            return "\(seconds).\(fraction)s"
        }
        let totalSeconds = ms / 1000
        let hours = totalSeconds / 3600
        let minutes = (totalSeconds % 3600) / 60
        let seconds = totalSeconds % 60
        return hours > 0 ? "\(hours)h\(minutes)m\(seconds)s" : "\(minutes)m\(seconds)s"
    }

    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// `chatcmpl-` and 29 alphanumerics, like OpenAI's completion ids.
    static func completionID(prefix: String, sequence: UInt64) -> String {
        let digits = String(sequence, radix: 36)
        let pad = max(0, 13 - digits.count)
        return "chatcmpl-" + prefix + String(repeating: "0", count: pad) + digits
    }

    /// A UUID-shaped id (Azure's `apim-request-id`) from 16 hex digits per server and the sequence number.
    static func uuid(prefix: String, sequence: UInt64) -> String {
        let hex = Array(prefix + hex(sequence))
        return String(hex[0..<8]) + "-" + String(hex[8..<12]) + "-" + String(hex[12..<16]) + "-"
            + String(hex[16..<20]) + "-" + String(hex[20..<32])
    }

    /// `req_` and 32 hex digits, like OpenAI's `x-request-id`.
    static func requestID(prefix: String, sequence: UInt64) -> String {
        "req_" + prefix + hex(sequence)
    }
}

/// JSON string literals: quotes, backslashes and control characters escaped, everything else verbatim.
enum JSONText {
    static func appendQuoted(_ string: String, to out: inout String) {
        out.append("\"")
        if UTF8Scan.all(of: string, { $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            out.append(string)
        } else {
            for scalar in string.unicodeScalars {
                switch scalar {
                case "\"": out.append("\\\"")
                case "\\": out.append("\\\\")
                case "\n": out.append("\\n")
                case "\r": out.append("\\r")
                case "\t": out.append("\\t")
                case "\u{08}": out.append("\\b")
                case "\u{0C}": out.append("\\f")
                case _ where scalar.value < 0x20:
                    let digits = String(scalar.value, radix: 16)
                    out.append("\\u" + String(repeating: "0", count: 4 - digits.count) + digits)
                default: out.unicodeScalars.append(scalar)
                }
            }
        }
        out.append("\"")
    }

    static func quoted(_ string: String) -> String {
        var out = ""
        appendQuoted(string, to: &out)
        return out
    }
}
