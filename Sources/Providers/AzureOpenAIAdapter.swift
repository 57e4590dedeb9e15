/// Azure OpenAI chat completions: OpenAI's body and answers at a deployment URL,
/// `{base}/openai/deployments/{deployment}/chat/completions?api-version=...`, with the key in `api-key`.
/// The route's model is the deployment name (Azure ignores the body's `model`).
///
/// Requests, answers and error bodies (`{"error":{"code":"429","message":...}}`) are OpenAI's, so this reuses
/// `OpenAIAdapter`; the stream only loses Azure's content-filter annotation events, which carry no delta an
/// OpenAI app expects (Azure OpenAI "content filter streaming" guide).
public struct AzureOpenAIAdapter: ProviderAdapter {
    /// The resource endpoint, e.g. `https://RESOURCE.openai.azure.com`.
    public var baseURL: String { openAI.baseURL }
    /// The `api-version` query parameter.
    public var apiVersion: String
    private let openAI: OpenAIAdapter

    /// An adapter for the resource at `baseURL` (a trailing slash is ignored), calling `api-version=apiVersion`.
    public init(baseURL: String, apiVersion: String = "2024-10-21") {
        self.openAI = OpenAIAdapter(baseURL: baseURL)
        self.apiVersion = apiVersion
    }

    public func makeRequest(_ request: ChatRequest, model: String, apiKey: String?) -> ProviderHTTPRequest {
        let path = "/openai/deployments/" + percentEncodedPathSegment(model) + "/chat/completions?api-version="
            + percentEncodedPathSegment(apiVersion)
        return openAI.makeRequest(request, model: model, path: path,
                                  headers: apiKey.map { [(name: "api-key", value: $0)] } ?? [])
    }

    public func parseResponse(status: Int, body: [UInt8], model: String) throws(ProviderError) -> ParsedResponse {
        try openAI.parseResponse(status: status, body: body, model: model)
    }

    public func makeStreamTranslator(model: String) -> any StreamTranslator {
        AzureOpenAIStreamTranslator(adapter: openAI)
    }

    public func error(status: Int, body: [UInt8]) -> ProviderError {
        OpenAIAdapter.error(status: status, body: body)
    }
}

/// OpenAI's stream translation, minus Azure's annotation-only events: the prompt annotations that open every stream
/// (`"choices":[]`, no usage) and the asynchronous filter's annotations (choices with neither `delta` nor
/// `finish_reason`). A filter's verdict with `finish_reason: content_filter` still passes.
struct AzureOpenAIStreamTranslator: StreamTranslator {
    let adapter: OpenAIAdapter

    mutating func translate(_ event: SSEEvent) -> [StreamPiece] {
        let piece = adapter.parseStreamEvent(event)
        guard case .chunk(let bytes, let usage) = piece, usage == nil, Self.isAnnotationOnly(bytes) else {
            return [piece]
        }
        return []
    }

    mutating func finish() -> [StreamPiece] { [] }

    static func isAnnotationOnly(_ bytes: [UInt8]) -> Bool {
        let scanner = JSONScanner(bytes)
        guard let root = scanner.document(), let choices = scanner.member(root, "choices"),
              scanner.kind(choices) == .array else { return false }
        return scanner.elements(choices).allSatisfy { choice in
            scanner.kind(choice) == .object && scanner.member(choice, "delta") == nil
                && scanner.member(choice, "finish_reason").map { scanner.kind($0) == .null } ?? true
        }
    }
}
