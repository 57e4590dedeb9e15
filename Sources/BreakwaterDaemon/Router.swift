import Config
import CurlTransport
import Providers
import Resilience
import Synchronization

/// A configured provider ready to call: its adapter, transport settings and API key.
///
/// A class, built once per config load: every call's chain, attempt, wait and attempt record names its target, and
/// as a struct (the whole `ProviderConfig` inline) each of those copies took ~0.6 KB (`ProviderConfig` is 476 bytes) and a retain per field — a
/// `CallDriver` was 1.9 KB (its phase holds two targets while it waits) and an open stream's call state 4.7 KB.
final class ProviderRuntime: Sendable {
    let name: String
    let config: ProviderConfig
    let adapter: any ProviderAdapter
    /// Every key found for the provider, in order; they rotate. Empty when none could be found.
    let apiKeys: [Secret]
    /// Which load of the config this comes from (0 at start, +1 per reload): host-wide state built for an older
    /// config is replaced only by calls on a newer one, never flipped back by calls still running on the old.
    let generation: Int
    /// Caps this provider's calls in flight host-wide (`max_connections`, × `max_concurrent_streams` over HTTP/2).
    let pool: ConnectionPool

    init(name: String, config: ProviderConfig, adapter: any ProviderAdapter, apiKeys: [Secret], generation: Int,
         pool: ConnectionPool) {
        self.name = name
        self.config = config
        self.adapter = adapter
        self.apiKeys = apiKeys
        self.generation = generation
        self.pool = pool
    }

    var apiKey: Secret? { apiKeys.first }

    var retry: RetryPolicy { config.retry }
    var classifier: ErrorClassifier { config.classifier }
    var breaker: BreakerPolicy { config.breaker }
    var retryBudget: RetryBudgetSettings { config.retryBudget }

    var httpVersion: HTTPVersion {
        switch config.httpVersion {
        case .http1_1: .http1_1
        case .http2: .http2
        case .http2PriorKnowledge: .http2PriorKnowledge
        }
    }
}

/// One step of a route, with its provider resolved.
struct ResolvedTarget: Sendable {
    let provider: ProviderRuntime
    let model: String
}

/// A route ready to walk.
struct ResolvedRoute: Sendable {
    let chain: [ResolvedTarget]
    let fallback: FallbackPolicy
}

/// The config turned into what the request path needs: routes resolved to providers, keys loaded.
public struct Router: Sendable {
    let routes: [String: ResolvedRoute]
    public let config: BreakwaterConfig
    let generation: Int
    /// The providers' pools, kept from one config load to the next.
    let pools: ConnectionPools

    /// `pools`: the previous load's, on a reload, so calls running and waiting keep their places.
    public init(config: BreakwaterConfig, environment: [String: String], generation: Int = 0,
                pools: ConnectionPools = ConnectionPools()) {
        self.config = config
        self.generation = generation
        self.pools = pools
        var providers: [String: ProviderRuntime] = [:]
        for (name, p) in config.providers {
            let limit = p.callsInFlightLimit(defaultConnections: config.limits.upstreamConnectionsPerHost)
            providers[name] = ProviderRuntime(
                name: name, config: p, adapter: Self.adapter(for: p),
                apiKeys: CredentialResolver.apiKeys(for: p, environment: environment), generation: generation,
                pool: pools.pool(name, limit: limit)
            )
        }
        var routes: [String: ResolvedRoute] = [:]
        for (name, route) in config.routes {
            let chain = route.targets.compactMap { t in
                providers[t.provider].map { ResolvedTarget(provider: $0, model: t.model) }
            }
            routes[name] = ResolvedRoute(chain: chain, fallback: route.fallback)
        }
        self.routes = routes
    }

    static func adapter(for p: ProviderConfig) -> any ProviderAdapter {
        switch p.kind {
        case .openai: OpenAIAdapter(baseURL: p.baseURL)
        case .anthropic: AnthropicAdapter(baseURL: p.baseURL, version: p.apiVersion ?? "2023-06-01")
        case .gemini: GeminiAdapter(baseURL: p.baseURL)
        case .azure: AzureOpenAIAdapter(baseURL: p.baseURL, apiVersion: p.apiVersion ?? "2024-10-21")
        }
    }

    /// (provider, credential) pairs whose key file is there but unreadable, for a configuration error in the log.
    public func unreadableCredentials(environment: [String: String]) -> [(provider: String, credential: String)] {
        config.providers.keys.sorted().flatMap { name in
            CredentialResolver.unreadableCredentials(for: config.providers[name]!, environment: environment)
                .map { (name, $0) }
        }
    }

    /// Each configured provider's pool now, by name.
    var poolSnapshots: [(provider: String, pool: ConnectionPool.Snapshot)] {
        config.providers.keys.sorted().map { name in
            (name, pools.pool(name, limit: nil).snapshot)
        }
    }

    /// What libcurl must allow for the pools to be the limit: per host, the most connections the providers on it
    /// may open together; over all, their sum (at least `upstream_connections`).
    public var connectionCaps: (perHost: Int, total: Int) {
        var byHost: [String: Int] = [:]
        for p in config.providers.values {
            let connections = Int(p.maxConnections ?? config.limits.upstreamConnectionsPerHost)
            byHost[Self.host(of: p.baseURL), default: 0] += connections
        }
        let total = byHost.values.reduce(0, +)
        return (byHost.values.max() ?? Int(config.limits.upstreamConnectionsPerHost),
                max(total, Int(config.limits.upstreamConnections)))
    }

    /// `scheme://host:port` of a base URL, as libcurl tells hosts apart (a missing port is the scheme's).
    static func host(of url: String) -> String {
        let parts = url.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        // "https:", "", "host:port", "path..."
        guard parts.count >= 3, parts[0].hasSuffix(":"), parts[1].isEmpty else { return url }
        let authority = parts[2].prefix { $0 != "?" && $0 != "#" }
        let hostPort = authority.split(separator: "@").last.map(String.init) ?? ""
        return parts[0] + "//" + hostPort.lowercased()
    }

    /// Provider names that have no API key, for a start-up warning (names only, never values).
    public var providersWithoutKey: [String] {
        Set(routes.values.flatMap(\.chain).filter { $0.provider.apiKey == nil }.map(\.provider.name)).sorted()
    }
}

/// The providers' connection pools by name. One registry lives as long as the daemon: a reload changes a pool's
/// limit, and calls already running or waiting under it keep their places.
public final class ConnectionPools: Sendable {
    private let pools = Mutex<[String: ConnectionPool]>([:])

    public init() {}

    /// The pool of provider `name`, made on first use; `limit`, when given, becomes its limit.
    func pool(_ name: String, limit: Int?) -> ConnectionPool {
        pools.withLock { pools in
            if let pool = pools[name] {
                if let limit { pool.limit = limit }
                return pool
            }
            let pool = ConnectionPool(name: name, limit: limit ?? Int.max)
            pools[name] = pool
            return pool
        }
    }
}
