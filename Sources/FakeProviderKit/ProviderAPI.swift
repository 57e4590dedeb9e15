import Foundation
import NIOHTTP1

/// The provider APIs the fake speaks. One server answers all of them on their own paths, with one script,
/// one personality and one set of stats; a test starts one fake per simulated provider.
public enum ProviderAPI: String, Sendable, CaseIterable, Codable {
    /// OpenAI chat completions: `POST /v1/chat/completions`.
    case openai
    /// Anthropic Messages: `POST /v1/messages`.
    case anthropic
    /// Google Gemini: `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`.
    case gemini
    /// Azure OpenAI: `POST /openai/deployments/{deployment}/chat/completions?api-version=...`.
    case azure
}

/// Which chat endpoint a request is for, worked out from its method and URI before the body is read.
struct Route: Sendable {
    var api: ProviderAPI
    /// The model the path names: Gemini's `{model}`, Azure's `{deployment}`.
    var pathModel: String?
    /// Gemini: the method was `streamGenerateContent`.
    var pathStream = false
    /// Gemini: the version segment of the path, "v1beta" or "v1".
    var version = ""
    /// Query parameters, percent-decoded; only read for the APIs that use them (Gemini, Azure).
    var query: [String: String] = [:]

    /// The chat endpoint `path` names, or nil when it is none of them.
    static func chat(method: HTTPMethod, path: String, query: Substring?) -> Route? {
        guard method == .POST else { return nil }
        switch path {
        case "/v1/chat/completions":
            return Route(api: .openai)
        case "/v1/messages":
            return Route(api: .anthropic)
        default:
            break
        }
        if path.hasPrefix("/openai/deployments/") {
            let rest = path.dropFirst("/openai/deployments/".count)
            let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 3, !parts[0].isEmpty, parts[1] == "chat", parts[2] == "completions" else { return nil }
            let deployment = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            return Route(api: .azure, pathModel: deployment, query: parseQuery(query))
        }
        for version in ["v1beta", "v1"] {
            let prefix = "/\(version)/models/"
            guard path.hasPrefix(prefix) else { continue }
            let rest = path.dropFirst(prefix.count)
            guard let colon = rest.lastIndex(of: ":") else { return nil }
            let model = rest[..<colon]
            let method = rest[rest.index(after: colon)...]
            guard !model.isEmpty, !model.contains("/"),
                method == "generateContent" || method == "streamGenerateContent"
            else { return nil }
            return Route(
                api: .gemini, pathModel: String(model), pathStream: method == "streamGenerateContent",
                version: version, query: parseQuery(query)
            )
        }
        return nil
    }

    /// The 404 for a path no endpoint answers, in the shape of the API whose paths it resembles.
    static func notFound(method: HTTPMethod, path: String) -> WireError {
        if path.hasPrefix("/openai/") {
            return AzureError.resourceNotFound
        }
        if path.hasPrefix("/v1/messages") {
            return AnthropicError(status: 404, type: "not_found_error", message: "Not Found", requestID: nil).wire
        }
        if path.hasPrefix("/v1beta/") || path.hasPrefix("/v1/models/") {
            return GoogleError(status: 404, state: "NOT_FOUND", message: "Method not found.").wire
        }
        return OpenAIError.invalidURL(method: method.rawValue, path: path).wire
    }

    private static func parseQuery(_ query: Substring?) -> [String: String] {
        guard let query, !query.isEmpty else { return [:] }
        var result: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = decode(parts[0])
            result[name] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return result
    }

    private static func decode(_ text: Substring) -> String {
        let plusAsSpace = text.replacingOccurrences(of: "+", with: " ")
        return plusAsSpace.removingPercentEncoding ?? plusAsSpace
    }
}
