import NIOCore
import NIOHTTP1

/// Azure OpenAI: OpenAI's bodies and streams (the code is shared with `OpenAIDialect`), reached through
/// `/openai/deployments/{deployment}/chat/completions?api-version=...` with an `api-key` header (or an Entra ID
/// bearer token). The deployment names the model, answers carry content filter results, and the gateway in
/// front answers missing versions, keys and deployments and rate limits with its own `{"error": {"code",
/// "message"}}` bodies.
struct AzureDialect: ProviderDialect {
    /// The `{deployment}` of the path; answers and stats name it as the model.
    let deployment: String
    /// The `api-version` query parameter, if there was one.
    let apiVersion: String?
    /// The `apim-request-id` header's value, which server errors quote.
    let requestID: String

    private let openAI = OpenAIDialect()

    init(route: Route, envelope: ResponsePlan.Envelope) {
        deployment = route.pathModel ?? ""
        apiVersion = route.query["api-version"]
        requestID = OpenAIWire.uuid(prefix: envelope.hexPrefix, sequence: envelope.sequence)
    }

    /// No `api-version` is a 404 (the gateway matches routes on it) and a malformed one a 400; then the key.
    func reject(_ headers: HTTPHeaders, requiredKey: String?) -> WireError? {
        guard let apiVersion else { return AzureError.resourceNotFound }
        guard Self.isAPIVersion(apiVersion) else { return AzureError.apiVersionNotSupported }
        return Self.keyProblem(apiKey(headers), requiredKey: requiredKey) == nil ? nil : AzureError.accessDenied
    }

    /// `api-key`, or an Entra ID token in `Authorization: Bearer`.
    func apiKey(_ headers: HTTPHeaders) -> String? {
        headers.first(name: "api-key") ?? HeaderValue.bearerKey(headers.first(name: "authorization"))
    }

    func parse(_ body: ByteBufferView) -> Result<ChatRequest, WireError> {
        ChatRequest.parseOpenAI(body, deployment: deployment).mapError(\.wire)
    }

    var bodyTooLarge: WireError { openAI.bodyTooLarge }

    /// The gateway's own answers for 401, 403, 404 and 429; OpenAI's bodies (passed through) otherwise, with
    /// JSON rather than Cloudflare's pages for 502 and 504. `error_code` may also be `content_filter`.
    func error(status: Int, code: String?, context: ErrorContext) -> WireError {
        if let code {
            switch code {
            case "content_filter":
                return AzureError.contentFilter(status: status)
            case "DeploymentNotFound":
                return AzureError.deploymentNotFound(status: status)
            case "429":
                return AzureError.rateLimited(status: status, apiVersion: apiVersion ?? "", context: context)
            default:
                return openAI.error(status: status, code: code, context: context)
            }
        }
        switch status {
        case 401:
            return AzureError.accessDenied
        case 403:
            return AzureError.gateway(
                status: 403, code: "403", message: "Access denied due to Virtual Network/Firewall rules."
            )
        case 404:
            return AzureError.deploymentNotFound(status: 404)
        case 429:
            return AzureError.rateLimited(status: 429, apiVersion: apiVersion ?? "", context: context)
        case 500, 502, 504:
            return AzureError.serverError(status: status, requestID: requestID)
        default:
            return openAI.error(status: status, code: nil, context: context)
        }
    }

    func streamError(code: String?, context: ErrorContext) -> WireError {
        guard let code else { return AzureError.serverError(status: 500, requestID: requestID) }
        return error(status: 500, code: code, context: context)
    }

    func completion(
        content: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope
    ) -> (contentType: String, body: String) {
        let body = OpenAIWire.completion(
            id: envelope.completionID, created: envelope.created, model: request.model, content: content,
            usage: usage, azure: true
        )
        return ("application/json", body)
    }

    func writer(usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope) -> OpenAIWire.ChunkWriter {
        OpenAIWire.ChunkWriter(
            id: envelope.completionID, created: envelope.created, model: request.model,
            includeUsage: request.includeUsage, includeObfuscation: false, usage: usage, azure: true
        )
    }

    /// Azure sends remaining counts and limits but no reset times; `retry-after` and `retry-after-ms` come with
    /// its 429s (here: when scripted).
    func headers(contentType: String, envelope: ResponsePlan.Envelope, step: FaultStep) -> [(String, String)] {
        let limits = envelope.limits
        return [
            ("content-type", contentType),
            ("apim-request-id", requestID),
            ("x-request-id", requestID),
            ("x-ms-region", "East US"),
            ("x-ratelimit-limit-requests", String(limits.limitRequests)),
            ("x-ratelimit-limit-tokens", String(limits.limitTokens)),
            ("x-ratelimit-remaining-requests", String(limits.remainingRequests)),
            ("x-ratelimit-remaining-tokens", String(limits.remainingTokens)),
        ] + HeaderValue.retryAfter(step)
    }

    var timing: TimingHeader { .envoyUpstream }

    /// `2024-10-21`, `2025-04-01-preview`, or the v1 API's `preview` and `latest`.
    static func isAPIVersion(_ version: String) -> Bool {
        if version == "preview" || version == "latest" {
            return true
        }
        let bytes = Array(version.utf8)
        guard bytes.count == 10 || (bytes.count == 18 && version.hasSuffix("-preview")) else { return false }
        for (index, byte) in bytes.prefix(10).enumerated() {
            let isDash = index == 4 || index == 7
            guard isDash ? byte == UInt8(ascii: "-") : (0x30...0x39).contains(byte) else { return false }
        }
        return true
    }
}

/// The error bodies Azure's gateway writes itself: `{"error": {"code": "...", "message": "..."}}`.
enum AzureError {
    static let accessDenied = gateway(
        status: 401, code: "401",
        message: "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
            + "valid key for an active subscription and use a correct regional API endpoint for your resource."
    )

    /// No route matched: what a request without `api-version` gets. Azure writes a space after this one's
    /// `"message":`.
    static let resourceNotFound: WireError = {
        let body = "{\"error\":{\"code\":\"404\",\"message\": \"Resource not found\"}}"
        return WireError(status: 404, contentType: "application/json", body: body, event: SSEEvent(data: body))
    }()

    static let apiVersionNotSupported = gateway(status: 400, code: "BadRequest", message: "API version not supported")

    static func deploymentNotFound(status: Int) -> WireError {
        gateway(
            status: status, code: "DeploymentNotFound",
            message: "The API deployment for this resource does not exist. If you created the deployment within the "
                + "last 5 minutes, please wait a moment and try again."
        )
    }

    static func rateLimited(status: Int, apiVersion: String, context: ErrorContext) -> WireError {
        let seconds = max(1, ((context.retryAfterMs ?? 1000) + 999) / 1000)
        let which = context.exceeded?.quantity == .tokens ? "token" : "call"
        var error = gateway(
            status: status, code: "429",
            message: "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version \(apiVersion) "
                + "have exceeded \(which) rate limit of your current OpenAI S0 pricing tier. Please retry after "
                + "\(seconds) second\(seconds == 1 ? "" : "s"). Please go here: https://aka.ms/oai/quotaincrease if "
                + "you would like to further increase the default rate limit."
        )
        error.contentType = "application/json; charset=UTF-8"
        error.rateLimited = true
        return error
    }

    /// OpenAI's `server_error` body with the message Azure puts in it.
    static func serverError(status: Int, requestID: String) -> WireError {
        OpenAIError(
            status: status,
            message: "The server had an error while processing your request. Sorry about that! You can retry your "
                + "request, or contact us through an Azure support request at: "
                + "https://go.microsoft.com/fwlink/?linkid=2213926 if the error persists. (Please include the "
                + "request ID \(requestID) in your message.)",
            type: "server_error"
        ).wire
    }

    /// The prompt tripped Azure's content filter.
    static func contentFilter(status: Int) -> WireError {
        let body = """
            {"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content \
            management policy. Please modify your prompt and retry. To learn more about our content filtering \
            policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",\
            "type":null,"param":"prompt","code":"content_filter","status":\(status),"innererror":{"code":\
            "ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"},\
            "jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},\
            "sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}}}
            """
        return WireError(status: status, contentType: "application/json", body: body, event: SSEEvent(data: body))
    }

    static func gateway(status: Int, code: String, message: String) -> WireError {
        var body = "{\"error\":{\"code\":"
        JSONText.appendQuoted(code, to: &body)
        body += ",\"message\":"
        JSONText.appendQuoted(message, to: &body)
        body += "}}"
        return WireError(status: status, contentType: "application/json", body: body, event: SSEEvent(data: body))
    }
}
