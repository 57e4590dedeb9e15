/// What the fake provider has seen since it started or was last reset.
///
/// Only chat requests are counted (every provider's endpoint: OpenAI, Anthropic, Gemini, Azure), not the
/// `/_fake/` control endpoints. Once a request has been answered it is in exactly one of `completed`, `aborted`
/// or `resets`; until then it is `inFlight`.
public struct FakeProviderStats: Codable, Sendable, Equatable {
    /// Chat requests received (whole request read).
    public var requests: Int
    /// Chat requests whose response was written to the socket in full.
    public var completed: Int
    /// Chat requests whose connection the client closed before the response was fully written:
    /// this is how a caller cancelling an upstream call shows up.
    public var aborted: Int
    /// Chat requests the fake cut off on purpose (`reset_after_chunks`); not counted in `aborted`.
    public var resets: Int
    /// Chat requests being answered right now. A gauge: `reset` does not zero it.
    public var inFlight: Int
    /// Status codes sent, keyed by the code as a string ("200", "429", ...), counted when the status line
    /// is written (so a stream that is later aborted still counts its "200").
    public var byStatus: [String: Int]
    /// Requests per provider API, keyed by `ProviderAPI` raw value ("openai", "anthropic", "gemini", "azure"),
    /// so a test can tell which provider's endpoint was called.
    public var byAPI: [String: Int]
    /// Requests per model asked for: the body's `model` (OpenAI, Anthropic), the path's model (Gemini) or the
    /// deployment (Azure). Counted once the model is known, even when the request is then refused.
    public var byModel: [String: Int]
    /// Chat requests the personality's `token_bucket` refused with 429 (not counting scripted or rolled 429s).
    public var rateLimited: Int
    /// The most requests the token bucket refused in a row, whatever their keys: a request it admits, for any
    /// key, ends a run. Requests answered before the bucket is asked (down, bad key, bad body) neither extend
    /// nor end one. A caller that backs off as told keeps this short.
    public var longestRateLimitedRun: Int
    /// How many accepted requests offered each tool (function) name in `tools` (OpenAI's format): what a caller
    /// left in or took out of its requests.
    public var toolsOffered: [String: Int]
    /// Prompt plus completion tokens of every answer sent, as its `usage` reports them (what a provider bills).
    public var usageTokens: Int

    /// Creates a snapshot; all zero by default.
    public init(
        requests: Int = 0,
        completed: Int = 0,
        aborted: Int = 0,
        resets: Int = 0,
        inFlight: Int = 0,
        byStatus: [String: Int] = [:],
        byAPI: [String: Int] = [:],
        byModel: [String: Int] = [:],
        rateLimited: Int = 0,
        longestRateLimitedRun: Int = 0,
        toolsOffered: [String: Int] = [:],
        usageTokens: Int = 0
    ) {
        self.toolsOffered = toolsOffered
        self.usageTokens = usageTokens
        self.requests = requests
        self.completed = completed
        self.aborted = aborted
        self.resets = resets
        self.inFlight = inFlight
        self.byStatus = byStatus
        self.byAPI = byAPI
        self.byModel = byModel
        self.rateLimited = rateLimited
        self.longestRateLimitedRun = longestRateLimitedRun
    }

    enum CodingKeys: String, CodingKey {
        case requests, completed, aborted, resets
        case inFlight = "in_flight"
        case byStatus = "by_status"
        case byAPI = "by_api"
        case byModel = "by_model"
        case rateLimited = "rate_limited"
        case longestRateLimitedRun = "longest_rate_limited_run"
        case toolsOffered = "tools_offered"
        case usageTokens = "usage_tokens"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            requests: try container.decode(Int.self, forKey: .requests),
            completed: try container.decode(Int.self, forKey: .completed),
            aborted: try container.decode(Int.self, forKey: .aborted),
            resets: try container.decodeIfPresent(Int.self, forKey: .resets) ?? 0,
            inFlight: try container.decode(Int.self, forKey: .inFlight),
            byStatus: try container.decode([String: Int].self, forKey: .byStatus),
            byAPI: try container.decodeIfPresent([String: Int].self, forKey: .byAPI) ?? [:],
            byModel: try container.decodeIfPresent([String: Int].self, forKey: .byModel) ?? [:],
            rateLimited: try container.decodeIfPresent(Int.self, forKey: .rateLimited) ?? 0,
            longestRateLimitedRun: try container.decodeIfPresent(Int.self, forKey: .longestRateLimitedRun) ?? 0,
            toolsOffered: try container.decodeIfPresent([String: Int].self, forKey: .toolsOffered) ?? [:],
            usageTokens: try container.decodeIfPresent(Int.self, forKey: .usageTokens) ?? 0
        )
    }
}
