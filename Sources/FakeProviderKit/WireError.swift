/// One server-sent event as a provider writes it: an optional `event:` line and one `data:` line.
struct SSEEvent: Sendable {
    var name: String?
    var data: String

    init(name: String? = nil, data: String) {
        self.name = name
        self.data = data
    }
}

/// How a stream's events are laid on the wire.
enum StreamFraming: Sendable {
    /// `event: NAME\n` (when named) and `data: ...\n\n`: OpenAI, Azure, Anthropic.
    case lf
    /// `data: ...\r\n\r\n`: Google's front ends end SSE lines with CRLF (Gemini with `alt=sse`).
    case crlf
    /// A JSON array sent element by element: Gemini's `streamGenerateContent` without `alt=sse`.
    case jsonArray

    /// The bytes of `event`; `first` says whether it is the first thing in the body.
    func frame(_ event: SSEEvent, first: Bool) -> String {
        switch self {
        case .lf:
            if let name = event.name {
                return "event: " + name + "\ndata: " + event.data + "\n\n"
            }
            return "data: " + event.data + "\n\n"
        case .crlf:
            return "data: " + event.data + "\r\n\r\n"
        case .jsonArray:
            return (first ? "[" : "\n,\r\n") + event.data
        }
    }

    /// What closes the body after the last event; `empty` when no event was sent.
    func trailer(empty: Bool) -> String {
        switch self {
        case .lf, .crlf: ""
        case .jsonArray: empty ? "[]" : "\n]"
        }
    }
}

/// An error answer in one provider's shape, ready to send: as a whole body with its status, or as one event
/// inside a stream that already answered 200.
struct WireError: Error, Sendable {
    var status: Int
    var contentType: String
    var body: String
    /// The same error as a stream event.
    var event: SSEEvent
    /// The answer says the caller is rate limited, so the rate-limit headers show an empty request bucket.
    var rateLimited = false
}

/// The header that tells how long the provider took, added when the status line is written.
enum TimingHeader: Sendable {
    /// `openai-processing-ms: 12`.
    case openAIProcessing
    /// `x-envoy-upstream-service-time: 12`: Anthropic's and Azure's proxies.
    case envoyUpstream
    /// `server-timing: gfet4t7; dur=12`: Google's front end.
    case googleServerTiming

    func header(milliseconds: Int64) -> (String, String) {
        switch self {
        case .openAIProcessing: ("openai-processing-ms", String(milliseconds))
        case .envoyUpstream: ("x-envoy-upstream-service-time", String(milliseconds))
        case .googleServerTiming: ("server-timing", "gfet4t7; dur=\(milliseconds)")
        }
    }
}
