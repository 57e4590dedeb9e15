/// The daemon's whole configuration. Every field has a built-in default, so the daemon runs with no file at all.
public struct BreakwaterConfig: Sendable, Equatable {
    /// Where the daemon binds its socket when systemd has not passed one.
    public var socketPath: String?
    public var limits = LimitsConfig()
    public var providers: [String: ProviderConfig]
    public var routes: [String: [RouteTarget]]

    public init(socketPath: String? = nil, limits: LimitsConfig = LimitsConfig(),
                providers: [String: ProviderConfig], routes: [String: [RouteTarget]]) {
        self.socketPath = socketPath
        self.limits = limits
        self.providers = providers
        self.routes = routes
    }

    /// Built-in defaults: OpenAI with its key from `$CREDENTIALS_DIRECTORY/openai_api_key` or `$OPENAI_API_KEY`,
    /// and a route `default` to `gpt-4o-mini`.
    public static let defaults = BreakwaterConfig(
        providers: ["openai": ProviderConfig(
            kind: .openai, baseURL: "https://api.openai.com/v1",
            apiKeyCredential: "openai_api_key", apiKeyEnv: "OPENAI_API_KEY"
        )],
        routes: ["default": [RouteTarget(provider: "openai", model: "gpt-4o-mini")]]
    )
}

public struct LimitsConfig: Sendable, Equatable {
    /// Largest frame payload the daemon accepts, in bytes.
    public var maxFrameBytes: UInt32 = 1 << 20
    /// Largest request body, in bytes.
    public var maxBodyBytes: UInt32 = 8 << 20
    /// Most calls open at once on one connection.
    public var maxConcurrentCalls: UInt32 = 256
    /// How long SIGTERM waits for in-flight calls before closing connections anyway.
    public var drainTimeout: Duration = .seconds(30)
    /// A call's deadline when the app gives none.
    public var defaultCallTimeout: Duration = .seconds(600)

    public init() {}
}

public struct ProviderConfig: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        /// OpenAI's chat-completions API, and any server compatible with it.
        case openai
    }

    public enum HTTPVersion: String, Sendable, Equatable, CaseIterable {
        case http1_1 = "1.1"
        /// HTTP/2 negotiated by ALPN over TLS; HTTP/1.1 otherwise.
        case http2 = "2"
        /// HTTP/2 without TLS (h2c), for local servers that speak it.
        case http2PriorKnowledge = "2-prior-knowledge"
    }

    public var kind: Kind
    public var baseURL: String
    /// File name under `$CREDENTIALS_DIRECTORY` holding the API key (systemd `LoadCredential=`).
    public var apiKeyCredential: String?
    /// Environment variable holding the API key, used when the credential file is absent.
    public var apiKeyEnv: String?
    public var httpVersion: HTTPVersion = .http2
    public var timeouts = TimeoutsConfig()
    /// A PEM file of CA certificates to trust for this provider instead of the system's (a private CA).
    public var caFile: String?

    public init(kind: Kind, baseURL: String, apiKeyCredential: String? = nil, apiKeyEnv: String? = nil,
                httpVersion: HTTPVersion = .http2, timeouts: TimeoutsConfig = TimeoutsConfig()) {
        self.kind = kind
        self.baseURL = baseURL
        self.apiKeyCredential = apiKeyCredential
        self.apiKeyEnv = apiKeyEnv
        self.httpVersion = httpVersion
        self.timeouts = timeouts
    }
}

public struct TimeoutsConfig: Sendable, Equatable {
    public var connect: Duration = .seconds(10)
    /// From sending the request to the first byte of the answer.
    public var firstByte: Duration = .seconds(120)
    /// Longest quiet gap between two pieces of an answer.
    public var idle: Duration = .seconds(60)
    /// The whole upstream attempt.
    public var total: Duration = .seconds(600)

    public init() {}
}

/// One step of a route's chain.
public struct RouteTarget: Sendable, Equatable {
    public var provider: String
    public var model: String

    public init(provider: String, model: String) {
        self.provider = provider
        self.model = model
    }
}
