import Config
import CurlTransport
import Providers
import Resilience

/// A configured provider ready to call: its adapter, transport settings and API key.
struct ProviderRuntime: Sendable {
    let name: String
    let config: ProviderConfig
    let adapter: any ProviderAdapter
    /// Every key found for the provider, in order; they rotate. Empty when none could be found.
    let apiKeys: [Secret]
    /// Which load of the config this comes from (0 at start, +1 per reload): host-wide state built for an older
    /// config is replaced only by calls on a newer one, never flipped back by calls still running on the old.
    let generation: Int

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

    public init(config: BreakwaterConfig, environment: [String: String], generation: Int = 0) {
        self.config = config
        self.generation = generation
        var providers: [String: ProviderRuntime] = [:]
        for (name, p) in config.providers {
            providers[name] = ProviderRuntime(
                name: name, config: p, adapter: Self.adapter(for: p),
                apiKeys: CredentialResolver.apiKeys(for: p, environment: environment), generation: generation
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

    /// Provider names that have no API key, for a start-up warning (names only, never values).
    public var providersWithoutKey: [String] {
        Set(routes.values.flatMap(\.chain).filter { $0.provider.apiKey == nil }.map(\.provider.name)).sorted()
    }
}
