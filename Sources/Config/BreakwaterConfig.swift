import Governance
import Resilience

/// The daemon's whole configuration. Every field has a built-in default, so the daemon runs with no file at all.
public struct BreakwaterConfig: Sendable, Equatable {
    /// Where the daemon binds its socket when systemd has not passed one.
    public var socketPath: String?
    public var limits = LimitsConfig()
    public var providers: [String: ProviderConfig]
    public var routes: [String: RouteConfig]
    /// The policy file (runtime enforcement); nil: none, every local caller may use every route.
    public var policyPath: String?
    /// Who may run admin commands (`admins: {uids: [...], gids: [...]}`); root and the daemon's own user by default.
    public var admins = PeerSet(uids: [0])
    /// The OpenAI-compatible HTTP front and `/metrics` (`http:`).
    public var http = HTTPFrontConfig()
    /// The cluster store that limits with `scope: cluster` are shared through (`cluster:`); nil: none.
    public var cluster: ClusterConfig?

    public init(socketPath: String? = nil, limits: LimitsConfig = LimitsConfig(),
                providers: [String: ProviderConfig], routes: [String: RouteConfig]) {
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
        routes: ["default": RouteConfig(targets: [RouteTarget(provider: "openai", model: "gpt-4o-mini")])]
    )
}

/// The cluster store (`cluster:`): a Redis server every daemon of a fleet shares, for provider rate limits and
/// budgets whose scope is `cluster`.
public struct ClusterConfig: Sendable, Equatable {
    /// `redis://HOST:PORT[/DB]` or `unix:///PATH[?db=N]`.
    public var redis: String
    /// A credential (`$CREDENTIALS_DIRECTORY/NAME`) holding the store's password; nil: none.
    public var passwordCredential: String?
    /// Every key the daemons write starts with this.
    public var keyPrefix = "breakwater:"
    /// The longest a connect or a command may take; past it the store counts as down until it answers again.
    public var timeout: Duration = .milliseconds(100)
    /// This daemon's name in the store's set of live daemons; nil: host name and PID.
    public var daemonID: String?
    /// The share of each cluster limit this daemon takes while the store is down; nil: one over the number of
    /// daemons last seen alive.
    public var fallbackShare: Double?

    public init(redis: String) {
        self.redis = redis
    }

}

/// The HTTP front (`http:`): the same calls as the binary protocol, spoken as OpenAI's chat-completions API.
public struct HTTPFrontConfig: Sendable, Equatable {
    /// Who may read `GET /metrics`.
    public enum MetricsAccess: String, Sendable, Equatable, CaseIterable {
        /// The config's `admins` (by SO_PEERCRED), as for admin commands. The default.
        case admins
        /// Anyone who can connect to the HTTP socket (or, with `tcp`, to the port).
        case everyone
    }

    /// The Unix socket the daemon binds for HTTP when systemd passes none (`breakwaterd --http-socket` overrides);
    /// nil: no HTTP socket unless systemd passes one.
    public var socketPath: String?
    /// A loopback TCP listener, `127.0.0.1:PORT` or `[::1]:PORT`; nil (the default): none. With no peer
    /// credentials on TCP, every call on it needs an agent token, so it needs a policy.
    public struct TCPListen: Sendable, Equatable {
        public var host: String
        public var port: Int
    }
    /// A loopback TCP listener (`tcp: 127.0.0.1:PORT` or `[::1]:PORT`); nil (the default): none. With no peer
    /// credentials on TCP, every call on it needs an agent token, so it needs a policy.
    public var tcpListen: TCPListen?
    /// A request, once its first byte arrived, must be whole (head and body) within this; else 408 and close.
    public var requestTimeout: Duration = .seconds(10)
    /// A keep-alive connection with no request for this long is closed.
    public var idleTimeout: Duration = .seconds(60)
    public var metrics = MetricsAccess.admins
    /// Agents (policy ids) that get series of their own in `/metrics` (calls and tokens by agent); none by
    /// default, so the number of series does not grow with the number of agents.
    public var metricsAgents: Set<String> = []

    public init() {}
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
    /// A call's deadline when the app gives none; a request body must also be whole within its call's deadline.
    public var defaultCallTimeout: Duration = .seconds(600)
    /// A connection's HELLO must arrive within this of connecting (else STALLED).
    public var helloTimeout: Duration = .seconds(5)
    /// A frame must be whole within this of its first byte arriving (else STALLED). Gaps between frames are free.
    public var frameTimeout: Duration = .seconds(5)
    /// Most connections open at once, over all peers (more are refused with TOO_MANY_CONNECTIONS).
    public var maxConnections: UInt32 = 4096
    /// Most connections open at once from one uid.
    public var maxConnectionsPerUID: UInt32 = 1024
    /// Each provider's `max_connections` unless it sets its own: the most HTTP connections open at once to it.
    /// Against an HTTP/1.1 provider this is the most calls to it in flight host-wide (further ones wait for a
    /// connection, shown in `breakwater status`); a streamed call paused for a slow reader holds its connection.
    /// Against HTTP/2, calls share connections (`max_concurrent_streams` each).
    public var upstreamConnectionsPerHost: UInt32 = 256
    /// How many idle connections are kept for reuse, and the most open at once to all providers (raised to the
    /// sum of the providers' `max_connections` when that is more).
    public var upstreamConnections: UInt32 = 1024
    /// With 256 or more upstream transfers open (streams, mostly), the libcurl thread looks at its sockets at most
    /// once per this long, so one wake-up carries every chunk that came meanwhile: a chunk (or an answer, or a new
    /// call's request) waits up to this long. Zero: never wait. Below 256 transfers nothing waits.
    public var streamCoalescingWindow: Duration = .milliseconds(5)
    /// The longest `stream_coalescing_window` the loader accepts.
    public static let maximumStreamCoalescingWindow: Duration = .milliseconds(100)

    public init() {}
}

public struct ProviderConfig: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        /// OpenAI's chat-completions API, and any server compatible with it.
        case openai
        /// Anthropic's Messages API (`base_url` like https://api.anthropic.com/v1; `api_version` is
        /// `anthropic-version`, default 2023-06-01).
        case anthropic
        /// Google Gemini `generateContent` (`base_url` like https://generativelanguage.googleapis.com/v1beta).
        case gemini
        /// Azure OpenAI (`base_url` like https://RESOURCE.openai.azure.com; the route's model is the deployment;
        /// `api_version` default 2024-10-21).
        case azure
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
    /// `retry_config:` retries, backoff and which statuses are retried.
    public var retry = RetryPolicy()
    /// The classification table (`retryable_status_codes`, `non_retryable_error_codes` under `retry_config:`).
    public var classifier = ErrorClassifier()
    /// `circuit_breaker:`, applied per (provider, model).
    public var breaker = BreakerPolicy()
    /// `retry_budget:`, host-wide for this provider.
    public var retryBudget = RetryBudgetSettings()
    /// `rate_limits: {rpm, tpm}` per API key.
    public var rateLimits = KeyPool.Limits()
    /// `api_keys:` more keys that rotate with the first (`api_key_credential`/`api_key_env`).
    public var additionalKeys: [KeySource] = []
    /// A PEM file of CA certificates to trust for this provider instead of the system's (a private CA).
    public var caFile: String?
    /// Azure OpenAI's `api-version`, or Anthropic's `anthropic-version` (`api_version`).
    public var apiVersion: String?
    /// `max_connections`: the most connections to this provider at once, host-wide; nil: the config's
    /// `limits.upstream_connections_per_host`. Over HTTP/1.1 each call in flight holds one, so this is also the
    /// most calls to it in flight (further ones wait, visibly, within their deadline).
    public var maxConnections: UInt32?
    /// `max_concurrent_streams`: over HTTP/2, the most calls one connection carries at once.
    public var maxConcurrentStreams: UInt32 = 100

    /// Whether calls to this provider multiplex over HTTP/2: asked for, and possible (`http_version: "2"` over a
    /// cleartext URL is HTTP/1.1, as libcurl only negotiates HTTP/2 by TLS ALPN).
    public var multiplexes: Bool {
        switch httpVersion {
        case .http1_1: false
        case .http2: baseURL.hasPrefix("https://")
        case .http2PriorKnowledge: true
        }
    }

    /// The most calls to this provider in flight at once, host-wide: its connections, times the streams each
    /// carries over HTTP/2.
    public func callsInFlightLimit(defaultConnections: UInt32) -> Int {
        let connections = Int(maxConnections ?? defaultConnections)
        guard multiplexes else { return connections }
        let (product, overflow) = connections.multipliedReportingOverflow(by: Int(maxConcurrentStreams))
        return overflow ? Int.max : product
    }

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

/// Where one API key comes from: a systemd credential name, else an environment variable.
public struct KeySource: Sendable, Equatable {
    public var credential: String?
    public var env: String?

    public init(credential: String? = nil, env: String? = nil) {
        self.credential = credential
        self.env = env
    }
}

/// `retry_budget:` settings.
public struct RetryBudgetSettings: Sendable, Equatable {
    /// Retries may be at most this share of live calls (`ratio`).
    public var ratio: Double = 0.5
    /// Retries always allowed per second, so a quiet host can still retry (`min_retries_per_second`).
    public var minRetriesPerSecond: Double = 2
    /// The window calls and retries are counted over (`window`).
    public var window: Duration = .seconds(10)

    public init() {}
}

/// A route: an ordered chain of targets, never random, and which failures move on along it.
public struct RouteConfig: Sendable, Equatable {
    public var targets: [RouteTarget]
    public var fallback: FallbackPolicy

    public init(targets: [RouteTarget], fallback: FallbackPolicy = FallbackPolicy()) {
        self.targets = targets
        self.fallback = fallback
    }
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
