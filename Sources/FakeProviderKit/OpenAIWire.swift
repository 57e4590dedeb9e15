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

    /// A plain `chat.completion` object.
    static func completion(id: String, created: Int, model: String, content: String, usage: Usage) -> String {
        var out = "{\"id\":\"\(id)\",\"object\":\"chat.completion\",\"created\":\(created),\"model\":"
        JSONText.appendQuoted(model, to: &out)
        out += ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        JSONText.appendQuoted(content, to: &out)
        out += ",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":"
        out += usage.json
        out += ",\"service_tier\":\"default\",\"system_fingerprint\":\"\(systemFingerprint)\"}"
        return out
    }

    /// Builds the `chat.completion.chunk` events of one stream; every chunk shares id, created and model.
    struct ChunkWriter {
        private let prefix: String
        private let includeUsage: Bool
        private let includeObfuscation: Bool

        init(id: String, created: Int, model: String, includeUsage: Bool, includeObfuscation: Bool) {
            var prefix = "{\"id\":\"\(id)\",\"object\":\"chat.completion.chunk\",\"created\":\(created),\"model\":"
            JSONText.appendQuoted(model, to: &prefix)
            prefix += ",\"service_tier\":\"default\",\"system_fingerprint\":\"\(OpenAIWire.systemFingerprint)\""
            prefix += ",\"choices\":["
            self.prefix = prefix
            self.includeUsage = includeUsage
            self.includeObfuscation = includeObfuscation
        }

        /// The first chunk: the assistant role with empty content.
        var role: String {
            chunk(
                choice: "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"
                    + "\"logprobs\":null,\"finish_reason\":null}",
                padding: 6
            )
        }

        func content(_ piece: String) -> String {
            var choice = "{\"index\":0,\"delta\":{\"content\":"
            JSONText.appendQuoted(piece, to: &choice)
            choice += "},\"logprobs\":null,\"finish_reason\":null}"
            return chunk(choice: choice, padding: max(1, 12 - piece.utf8.count % 12))
        }

        /// The last choice chunk: empty delta, `finish_reason: "stop"`.
        var finish: String {
            chunk(choice: "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}", padding: 4)
        }

        /// The `stream_options.include_usage` chunk: no choices, the whole request's usage.
        func usage(_ usage: Usage) -> String {
            prefix + "],\"usage\":" + usage.json + "}"
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

    /// One server-sent event line pair: `data: <payload>\n\n`.
    static func event(_ payload: String) -> String {
        "data: " + payload + "\n\n"
    }

    static let done = "data: [DONE]\n\n"

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

    /// `req_` and 32 hex digits, like OpenAI's `x-request-id`.
    static func requestID(prefix: String, sequence: UInt64) -> String {
        "req_" + prefix + hex(sequence)
    }
}

/// JSON string literals: quotes, backslashes and control characters escaped, everything else verbatim.
enum JSONText {
    static func appendQuoted(_ string: String, to out: inout String) {
        out.append("\"")
        if !string.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
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
