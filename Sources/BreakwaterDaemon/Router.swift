import Config
import CurlTransport
import Providers

/// A configured provider ready to call: its adapter, transport settings and API key.
struct ProviderRuntime: Sendable {
    let name: String
    let config: ProviderConfig
    let adapter: any ProviderAdapter
    /// Nil when neither the credential file nor the environment variable has a key.
    let apiKey: Secret?

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

/// The config turned into what the request path needs: routes resolved to providers, keys loaded.
public struct Router: Sendable {
    let routes: [String: [ResolvedTarget]]
    public let config: BreakwaterConfig

    public init(config: BreakwaterConfig, environment: [String: String]) {
        self.config = config
        var providers: [String: ProviderRuntime] = [:]
        for (name, p) in config.providers {
            providers[name] = ProviderRuntime(
                name: name, config: p, adapter: OpenAIAdapter(baseURL: p.baseURL),
                apiKey: CredentialResolver.apiKey(for: p, environment: environment)
            )
        }
        var routes: [String: [ResolvedTarget]] = [:]
        for (name, chain) in config.routes {
            routes[name] = chain.compactMap { t in providers[t.provider].map { ResolvedTarget(provider: $0, model: t.model) } }
        }
        self.routes = routes
    }

    /// Provider names that have no API key, for a start-up warning (names only, never values).
    public var providersWithoutKey: [String] {
        Set(routes.values.flatMap { $0 }.filter { $0.provider.apiKey == nil }.map(\.provider.name)).sorted()
    }
}
