import Foundation

/// An HTTP request for a provider, before it meets the transport.
public struct ProviderHTTPRequest: Sendable {
    public var url: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
}

/// Token counts as the provider reported them.
public struct Usage: Sendable, Hashable, Decodable {
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var totalTokens: Int?

    public init(promptTokens: Int? = nil, completionTokens: Int? = nil, totalTokens: Int? = nil) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
    }

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens"
    }
}

/// One decoded piece of a streamed answer.
public enum StreamPiece: Sendable, Hashable {
    /// A canonical `chat.completion.chunk` JSON object, ready to hand to the app.
    case chunk([UInt8], usage: Usage?)
    /// The provider said the stream is complete.
    case done
    /// The provider sent an error event inside a 200 stream.
    case error(ProviderError)
}

/// OpenAI chat completions and every server that speaks the same API (vLLM, llama.cpp, Ollama's /v1, ...).
/// The canonical shape *is* this API, so requests pass through with the target's model and answers pass back as-is.
public struct OpenAIAdapter: Sendable {
    public var baseURL: String

    public init(baseURL: String) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
    }

    public func makeRequest(_ request: ChatRequest, model: String, apiKey: String?) throws -> ProviderHTTPRequest {
        var body = request.body
        body["model"] = .string(model)
        if request.stream {
            // Ask for the usage chunk so the daemon can report tokens in the call's trailers.
            var options = body["stream_options"]?.objectValue ?? [:]
            options["include_usage"] = .bool(true)
            body["stream_options"] = .object(options)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        var headers: [(name: String, value: String)] = [
            ("Content-Type", "application/json"),
            ("Accept", request.stream ? "text/event-stream" : "application/json"),
        ]
        if let apiKey { headers.append(("Authorization", "Bearer " + apiKey)) }
        return ProviderHTTPRequest(
            url: baseURL + "/chat/completions", headers: headers,
            body: Array(try encoder.encode(JSONValue.object(body)))
        )
    }

    /// Checks a complete non-streamed answer and reads its usage. The body itself goes to the app unchanged.
    public func parseResponse(status: Int, body: [UInt8]) throws(ProviderError) -> Usage? {
        guard (200..<300).contains(status) else { throw Self.error(status: status, body: body) }
        struct Envelope: Decodable { var choices: [JSONValue]?; var usage: Usage? }
        let envelope: Envelope
        do {
            envelope = try JSONDecoder().decode(Envelope.self, from: Data(body))
        } catch {
            throw ProviderError(.malformedResponse, "provider answered \(status) with a body that is not valid JSON")
        }
        guard envelope.choices != nil else {
            throw ProviderError(.malformedResponse, "provider answer has no \"choices\"")
        }
        return envelope.usage
    }

    /// Interprets one SSE event of a streamed answer.
    public func parseStreamEvent(_ event: SSEEvent) -> StreamPiece {
        if event.data == "[DONE]" { return .done }
        let bytes = Array(event.data.utf8)
        struct Chunk: Decodable { var usage: Usage?; var error: ErrorBody.Inner? }
        guard let chunk = try? JSONDecoder().decode(Chunk.self, from: Data(bytes)) else {
            return .error(ProviderError(.malformedResponse, "provider sent a stream event that is not valid JSON"))
        }
        if let e = chunk.error {
            return .error(ProviderError(.upstreamStatus(200), "provider sent an error event mid-stream" + e.suffix,
                                        providerCode: e.code ?? e.type))
        }
        return .chunk(bytes, usage: chunk.usage)
    }

    struct ErrorBody: Decodable {
        struct Inner: Decodable {
            var type: String?
            var code: String?
            var suffix: String {
                let parts = [type, code].compactMap { $0 }
                return parts.isEmpty ? "" : " (" + parts.joined(separator: "/") + ")"
            }
        }
        var error: Inner?
    }

    /// Builds the error for a non-2xx answer from the status and the provider's error type/code. The provider's
    /// free-text message is left out on purpose: it can quote parts of the key or the prompt.
    public static func error(status: Int, body: [UInt8]) -> ProviderError {
        let inner = (try? JSONDecoder().decode(ErrorBody.self, from: Data(body)))?.error
        let code = inner?.code ?? inner?.type
        return ProviderError(.upstreamStatus(status), "provider answered HTTP \(status)" + (inner?.suffix ?? ""),
                             providerCode: code)
    }
}
