import Foundation

/// An HTTP request for a provider, before it meets the transport.
public struct ProviderHTTPRequest: Sendable {
    public var url: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
}

/// Token counts as the provider reported them.
public struct Usage: Sendable, Hashable {
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var totalTokens: Int?

    public init(promptTokens: Int? = nil, completionTokens: Int? = nil, totalTokens: Int? = nil) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
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
public struct OpenAIAdapter: ProviderAdapter {
    public var baseURL: String

    public init(baseURL: String) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
    }

    public func makeRequest(_ request: ChatRequest, model: String, apiKey: String?) -> ProviderHTTPRequest {
        let auth = apiKey.map { [(name: "Authorization", value: "Bearer " + $0)] } ?? []
        return makeRequest(request, model: model, path: "/chat/completions", headers: auth)
    }

    /// The request with a given path and auth headers; Azure OpenAI reuses it with its deployment URL and `api-key`.
    func makeRequest(_ request: ChatRequest, model: String, path: String,
                     headers auth: [(name: String, value: String)]) -> ProviderHTTPRequest {
        var headers: [(name: String, value: String)] = [
            ("Content-Type", "application/json"),
            ("Accept", request.stream ? "text/event-stream" : "application/json"),
        ]
        headers += auth
        return ProviderHTTPRequest(url: baseURL + path, headers: headers, body: request.openAIBody(model: model))
    }

    public func parseResponse(status: Int, body: [UInt8], model: String) throws(ProviderError) -> ParsedResponse {
        ParsedResponse(body: body, usage: try parseResponse(status: status, body: body))
    }

    public func makeStreamTranslator(model: String) -> any StreamTranslator {
        OpenAIStreamTranslator(adapter: self)
    }

    public func error(status: Int, body: [UInt8]) -> ProviderError {
        Self.error(status: status, body: body)
    }

    /// Checks a complete non-streamed answer and reads its usage. The body itself goes to the app unchanged.
    public func parseResponse(status: Int, body: [UInt8]) throws(ProviderError) -> Usage? {
        guard (200..<300).contains(status) else { throw Self.error(status: status, body: body) }
        let scanner = JSONScanner(body)
        guard let root = scanner.document(), scanner.kind(root) == .object else {
            throw ProviderError(.malformedResponse, "provider answered \(status) with a body that is not valid JSON")
        }
        var (choices, usage): (Range<Int>?, Range<Int>?) = (nil, nil)
        scanner.forEachMember(root) { key, value in
            if choices == nil, scanner.string(key, is: "choices") {
                choices = value
            } else if usage == nil, scanner.string(key, is: "usage") {
                usage = value
            }
            return true
        }
        guard let choices, scanner.kind(choices) == .array else {
            throw ProviderError(.malformedResponse, "provider answer has no \"choices\"")
        }
        return usage.flatMap { Self.usage(scanner, $0) }
    }

    /// Interprets one SSE event of a streamed answer.
    public func parseStreamEvent(_ event: SSEEvent) -> StreamPiece {
        let bytes = event.data
        if bytes.elementsEqual("[DONE]".utf8) { return .done }
        let scanner = JSONScanner(bytes)
        guard let root = scanner.document(), scanner.kind(root) == .object else {
            return .error(ProviderError(.malformedResponse, "provider sent a stream event that is not valid JSON"))
        }
        var usage: Usage?
        var error: Range<Int>?
        scanner.forEachMember(root) { key, value in
            if scanner.string(key, is: "error"), scanner.kind(value) == .object {
                error = value
                return false
            }
            if scanner.string(key, is: "usage") { usage = Self.usage(scanner, value) }
            return true
        }
        if let error {
            let (type, code) = Self.errorTypeAndCode(scanner, error)
            return .error(ProviderError(.upstreamStatus(200), "provider sent an error event mid-stream"
                + Self.suffix(type, code), providerCode: code ?? type))
        }
        return .chunk(bytes, usage: usage)
    }

    static func usage(_ scanner: JSONScanner, _ range: Range<Int>) -> Usage? {
        guard scanner.kind(range) == .object else { return nil }
        var u = Usage()
        scanner.forEachMember(range) { key, value in
            if scanner.string(key, is: "prompt_tokens") {
                u.promptTokens = scanner.int(value)
            } else if scanner.string(key, is: "completion_tokens") {
                u.completionTokens = scanner.int(value)
            } else if scanner.string(key, is: "total_tokens") {
                u.totalTokens = scanner.int(value)
            }
            return true
        }
        return u
    }

    /// The error's `type` and `code`; a numeric code (Azure and some OpenAI-compatible servers send `"code": 429`)
    /// is read as its digits.
    static func errorTypeAndCode(_ scanner: JSONScanner, _ range: Range<Int>) -> (String?, String?) {
        let code = scanner.member(range, "code").flatMap { scanner.string($0) ?? scanner.int($0).map(String.init) }
        return (scanner.member(range, "type").flatMap(scanner.string), code)
    }

    static func suffix(_ type: String?, _ code: String?) -> String {
        let parts = [type, code].compactMap { $0 }
        return parts.isEmpty ? "" : " (" + parts.joined(separator: "/") + ")"
    }

    /// Builds the error for a non-2xx answer from the status and the provider's error type/code. The provider's
    /// free-text message is left out on purpose: it can quote parts of the key or the prompt.
    public static func error(status: Int, body: [UInt8]) -> ProviderError {
        let scanner = JSONScanner(body)
        var type: String?
        var code: String?
        if let root = scanner.document(), scanner.kind(root) == .object,
           let inner = scanner.member(root, "error"), scanner.kind(inner) == .object {
            (type, code) = errorTypeAndCode(scanner, inner)
        }
        return ProviderError(.upstreamStatus(status), "provider answered HTTP \(status)" + suffix(type, code),
                             providerCode: code ?? type)
    }
}

/// OpenAI's stream is already canonical: each event passes through; `[DONE]` ends it.
struct OpenAIStreamTranslator: StreamTranslator {
    let adapter: OpenAIAdapter

    mutating func translate(_ event: SSEEvent) -> [StreamPiece] {
        [adapter.parseStreamEvent(event)]
    }

    mutating func finish() -> [StreamPiece] { [] }
}
