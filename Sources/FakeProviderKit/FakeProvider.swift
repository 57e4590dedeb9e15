import NIOCore
import NIOHTTP1
import NIOPosix

/// A stand-in for LLM providers on loopback, with faults scripted per request or rolled from a personality.
/// Tests and the benchmark start one in-process, point a provider's base URL at it, and read back what it saw
/// with `stats()`.
///
/// It speaks four providers' wire formats on their real paths, all on the same server: OpenAI
/// (`POST /v1/chat/completions`), Anthropic (`POST /v1/messages`), Gemini
/// (`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`) and Azure OpenAI
/// (`POST /openai/deployments/{deployment}/chat/completions?api-version=...`). Every fault step works in every
/// format, in that provider's shape. The script and the personality are shared by all formats, so a test
/// starts one fake per simulated provider.
///
/// Control endpoints: `POST /_fake/script` (append a JSON array of fault steps), `DELETE /_fake/script`,
/// `GET /_fake/script`, `GET /_fake/stats`, `POST /_fake/reset`, `POST /_fake/reset-stats` (counters only) and
/// `POST /_fake/personality` (replace the personality, e.g. `{"down": true}` and later `{}`).
public final class FakeProvider: Sendable {
    /// The TCP port it listens on.
    public let port: Int
    /// The host it was bound to.
    public let host: String
    /// The personality it answers with when nothing is scripted.
    public var personality: Personality { state.personality }

    /// Answers with `personality` from the next request on (e.g. `.down`, then `.healthy` to bring the provider
    /// back). The fault generator is reseeded from it; the script, stats and rate-limit window are kept, and so
    /// are the keys' token buckets unless its `tokenBucket` differs.
    ///
    /// An invalid personality (probabilities outside 0...1 or adding up to more than 1, limits not positive, a
    /// token bucket without a rate) is a mistake in the test, so it traps; `Personality(jsonData:)` checks one
    /// that comes from outside.
    public func setPersonality(_ personality: Personality) {
        do {
            try personality.validate()
        } catch {
            preconditionFailure("setPersonality: \(error)")
        }
        state.setPersonality(personality)
    }

    private let state: ProviderState
    private let serverChannel: any Channel

    private init(host: String, port: Int, state: ProviderState, serverChannel: any Channel) {
        self.host = host
        self.port = port
        self.state = state
        self.serverChannel = serverChannel
    }

    /// Binds and starts serving. Port 0 picks a free port; read it back from `port`.
    ///
    /// Without a group it runs on `MultiThreadedEventLoopGroup.singleton`. Throws when the personality is
    /// invalid or the address cannot be bound.
    public static func start(
        host: String = "127.0.0.1",
        port: Int = 0,
        personality: Personality = .healthy,
        eventLoopGroup: (any EventLoopGroup)? = nil
    ) async throws -> FakeProvider {
        try personality.validate()
        let state = ProviderState(personality: personality)
        let group = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        let bootstrap = ServerBootstrap(group: group)
            // Thousands of connections may arrive at once (a benchmark ramp): a short queue would drop SYNs and stall
            // them for seconds of retransmits.
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    state.register(channel)
                    channel.closeFuture.whenComplete { _ in state.unregister(channel) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(FakeProviderHTTPHandler(state: state))
                }
            }
        let channel = try await bootstrap.bind(host: host, port: port).get()
        guard let boundPort = channel.localAddress?.port else {
            try? await channel.close()
            throw FakeProviderError.noLocalAddress
        }
        return FakeProvider(host: host, port: boundPort, state: state, serverChannel: channel)
    }

    /// The OpenAI-style base URL, e.g. `http://127.0.0.1:PORT/v1`.
    public var baseURL: String {
        origin + "/v1"
    }

    /// Scheme, host and port, e.g. `http://127.0.0.1:PORT`: the base URL Anthropic's, Gemini's and Azure's SDKs
    /// take (they add `/v1/messages`, `/v1beta/models/...` and `/openai/deployments/...` themselves).
    public var origin: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "http://\(hostPart):\(port)"
    }

    /// The base URL an SDK for `api` would be configured with: `baseURL` for OpenAI, `origin` for the others.
    public func baseURL(for api: ProviderAPI) -> String {
        api == .openai ? baseURL : origin
    }

    /// Appends steps to the script; each following chat request takes the next one.
    public func script(_ steps: [FaultStep]) {
        _ = state.appendScript(steps)
    }

    /// Drops every step still queued.
    public func clearScript() {
        state.clearScript()
    }

    /// The steps still queued, next first.
    public func scriptedSteps() -> [FaultStep] {
        state.scriptSnapshot()
    }

    /// What it has seen since it started or was last reset.
    public func stats() -> FakeProviderStats {
        state.stats()
    }

    /// Zeroes the counters; the script and the fault generator are left alone.
    public func resetStats() {
        state.resetStats()
    }

    /// What `POST /_fake/reset` does: zero the counters, clear the script, reseed the fault generator, empty
    /// the simulated rate-limit window and fill every key's token bucket.
    public func reset() {
        state.resetAll()
    }

    /// Stops listening and closes every open connection; calling it again does nothing.
    public func shutdown() async throws {
        do {
            try await serverChannel.close()
        } catch ChannelError.alreadyClosed {
            // Already shut down.
        }
        for channel in state.openChannels() {
            try? await channel.close()
        }
    }
}
