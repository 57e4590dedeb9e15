import Foundation

/// The canonical request: an OpenAI chat-completions body, as apps already write it.
///
/// Kept as a whole JSON object so fields this version does not interpret still reach providers that understand them.
public struct ChatRequest: Sendable, Hashable {
    public var body: [String: JSONValue]

    public init(body: [String: JSONValue]) {
        self.body = body
    }

    /// Parses and checks an app's request body. Error messages name the problem, never the content.
    public init(json bytes: some Collection<UInt8>) throws(ProviderError) {
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
        } catch {
            throw ProviderError(.badRequest, "request body is not valid JSON")
        }
        guard case .object(let body) = value else {
            throw ProviderError(.badRequest, "request body must be a JSON object")
        }
        guard let messages = body["messages"]?.arrayValue else {
            throw ProviderError(.badRequest, "request body needs a \"messages\" array")
        }
        guard !messages.isEmpty else {
            throw ProviderError(.badRequest, "\"messages\" must not be empty")
        }
        for (i, m) in messages.enumerated() {
            guard m["role"]?.stringValue != nil else {
                throw ProviderError(.badRequest, "messages[\(i)] has no \"role\" string")
            }
        }
        self.body = body
    }

    public var stream: Bool {
        if case .bool(let b) = body["stream"] { return b }
        return false
    }

    public var model: String? { body["model"]?.stringValue }
    public var maxTokens: Int? { (body["max_completion_tokens"] ?? body["max_tokens"])?.intValue }
}
