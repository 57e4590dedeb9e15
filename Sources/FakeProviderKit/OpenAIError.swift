/// An error answer as OpenAI sends it: `{"error": {"message", "type", "param", "code"}}`, or, for the
/// gateway statuses Cloudflare answers itself (502, 504), an HTML page.
struct OpenAIError: Error, Sendable, Equatable {
    var status: Int
    var message: String
    var type: String
    var param: String?
    var code: String?
    /// Cloudflare's HTML body instead of JSON.
    var html: Bool = false

    /// What the context needs for messages that name the model, the limit or the wait.
    struct Context: Sendable {
        var model: String
        var promptTokens: Int
        var rateLimitRequests: Int
        var retryAfterMs: Int?
        /// The token bucket's limit, which the rate-limit message then quotes.
        var exceeded: ExceededLimit? = nil
    }

    // MARK: Errors the fake raises itself

    static let missingAPIKey = OpenAIError(
        status: 401,
        message: "You didn't provide an API key. You need to provide your API key in an Authorization header "
            + "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
            + "username) if you're accessing the API from your browser and are prompted for a username and "
            + "password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
        type: "invalid_request_error"
    )

    /// The key is never echoed, not even masked: the fake's answers end up in callers' logs.
    static let incorrectAPIKey = OpenAIError(
        status: 401,
        message: "Incorrect API key provided. You can find your API key at "
            + "https://platform.openai.com/account/api-keys.",
        type: "invalid_request_error",
        code: "invalid_api_key"
    )

    static let unparsableJSON = OpenAIError(
        status: 400,
        message: "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            + "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
            + "JSON. If you have trouble figuring out how to fix this, please contact us through our help center "
            + "at help.openai.com.)",
        type: "invalid_request_error"
    )

    static let missingModel = OpenAIError(
        status: 400, message: "you must provide a model parameter", type: "invalid_request_error"
    )

    static let missingMessages = OpenAIError(
        status: 400,
        message: "Missing required parameter: 'messages'.",
        type: "invalid_request_error",
        param: "messages",
        code: "missing_required_parameter"
    )

    static let bodyTooLarge = OpenAIError(
        status: 413, message: "Request entity too large.", type: "invalid_request_error"
    )

    static func invalidURL(method: String, path: String) -> OpenAIError {
        OpenAIError(status: 404, message: "Invalid URL (\(method) \(path))", type: "invalid_request_error")
    }

    // MARK: Scripted errors

    /// The error for a scripted `status`, refined by a scripted `error_code`.
    static func scripted(status: Int, code: String?, context: Context) -> OpenAIError {
        if let code, let known = known(code: code, status: status, context: context) {
            return known
        }
        var error = byStatus(status, context: context)
        if let code {
            error.code = code
            error.html = false
        }
        return error
    }

    private static func known(code: String, status: Int, context: Context) -> OpenAIError? {
        switch code {
        case "invalid_api_key":
            var error = incorrectAPIKey
            error.status = status
            return error
        case "rate_limit_exceeded":
            return rateLimited(status: status, context: context)
        case "insufficient_quota":
            return OpenAIError(
                status: status,
                message: "You exceeded your current quota, please check your plan and billing details. For more "
                    + "information on this error, read the docs: "
                    + "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                type: "insufficient_quota",
                code: "insufficient_quota"
            )
        case "model_not_found":
            return OpenAIError(
                status: status,
                message: "The model `\(context.model)` does not exist or you do not have access to it.",
                type: "invalid_request_error",
                code: "model_not_found"
            )
        case "context_length_exceeded":
            return OpenAIError(
                status: status,
                message: "This model's maximum context length is 128000 tokens. However, your messages resulted "
                    + "in \(max(context.promptTokens, 128_001)) tokens. Please reduce the length of the messages.",
                type: "invalid_request_error",
                param: "messages",
                code: "context_length_exceeded"
            )
        case "server_is_overloaded":
            return overloaded(status: status)
        case "slow_down":
            return OpenAIError(
                status: status,
                message: "Please reduce your request rate and try again.",
                type: "rate_limit_error",
                code: "slow_down"
            )
        default:
            return nil
        }
    }

    private static func byStatus(_ status: Int, context: Context) -> OpenAIError {
        switch status {
        case 400:
            return OpenAIError(status: 400, message: "Invalid request.", type: "invalid_request_error")
        case 401:
            return incorrectAPIKey
        case 403:
            return OpenAIError(
                status: 403,
                message: "Country, region, or territory not supported",
                type: "request_forbidden",
                code: "unsupported_country_region_territory"
            )
        case 404:
            return known(code: "model_not_found", status: 404, context: context)!
        case 429:
            return rateLimited(status: 429, context: context)
        case 500:
            return serverError(status: 500)
        case 502, 504:
            var error = serverError(status: status)
            error.html = true
            return error
        case 503:
            return overloaded(status: 503)
        case 500...599:
            return serverError(status: status)
        default:
            return OpenAIError(
                status: status, message: "Request failed with status \(status).", type: "invalid_request_error"
            )
        }
    }

    /// "Rate limit reached ... on requests per min (RPM)" (or tokens per min), quoting the token bucket's
    /// numbers when it refused the request; "Request too large" when the request's tokens never fit.
    private static func rateLimited(status: Int, context: Context) -> OpenAIError {
        let wait = OpenAIWire.duration(milliseconds: context.retryAfterMs ?? 1000)
        let exceeded = context.exceeded
        let tokens = exceeded?.quantity == .tokens
        let per = tokens ? "tokens per min (TPM)" : "requests per min (RPM)"
        let limit = exceeded?.limit ?? context.rateLimitRequests
        let learnMore = "Visit https://platform.openai.com/account/rate-limits to learn more."
        let message: String
        if let exceeded, !exceeded.fits {
            message = "Request too large for \(context.model) in organization org-fakeprovider on \(per): "
                + "Limit \(limit), Requested \(exceeded.requested). The input or output tokens must be reduced in "
                + "order to run successfully. " + learnMore
        } else {
            message = "Rate limit reached for \(context.model) in organization org-fakeprovider on \(per): "
                + "Limit \(limit), Used \(exceeded?.used ?? limit), Requested \(exceeded?.requested ?? 1). "
                + "Please try again in \(wait). " + learnMore
        }
        return OpenAIError(
            status: status, message: message, type: tokens ? "tokens" : "requests", code: "rate_limit_exceeded"
        )
    }

    private static func serverError(status: Int) -> OpenAIError {
        OpenAIError(
            status: status,
            message: "The server had an error while processing your request. Sorry about that!",
            type: "server_error"
        )
    }

    private static func overloaded(status: Int) -> OpenAIError {
        OpenAIError(
            status: status,
            message: "The server is overloaded or not ready yet.",
            type: "service_unavailable_error",
            code: "server_is_overloaded"
        )
    }

    // MARK: Bodies

    /// The error object as one compact line, for error events inside a stream.
    var compactJSON: String {
        var out = "{\"error\":{\"message\":"
        JSONText.appendQuoted(message, to: &out)
        out += ",\"type\":"
        JSONText.appendQuoted(type, to: &out)
        out += ",\"param\":" + (param.map(JSONText.quoted) ?? "null")
        out += ",\"code\":" + (code.map(JSONText.quoted) ?? "null") + "}}"
        return out
    }

    /// The response body and its content type. OpenAI pretty-prints error bodies with a trailing newline.
    var body: (contentType: String, text: String) {
        if html {
            let title = "\(status) \(status == 504 ? "Gateway Time-out" : "Bad Gateway")"
            return (
                "text/html",
                "<html>\r\n<head><title>\(title)</title></head>\r\n<body>\r\n<center><h1>\(title)</h1></center>\r\n"
                    + "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
            )
        }
        let text = """
            {
                "error": {
                    "message": \(JSONText.quoted(message)),
                    "type": \(JSONText.quoted(type)),
                    "param": \(param.map(JSONText.quoted) ?? "null"),
                    "code": \(code.map(JSONText.quoted) ?? "null")
                }
            }

            """
        return ("application/json", text)
    }
}
