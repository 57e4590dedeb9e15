import NIOCore
import NIOHTTP1
import NIOPosix

/// A stand-in for OpenAI's chat completions API on loopback, with faults scripted per request or rolled
/// from a personality. Tests and the benchmark start one in-process, point a provider's base URL at
/// `baseURL`, and read back what it saw with `stats()`.
///
/// Besides `POST /v1/chat/completions` it serves control endpoints: `POST /_fake/script` (append a JSON
/// array of fault steps), `DELETE /_fake/script`, `GET /_fake/script`, `GET /_fake/stats` and
/// `POST /_fake/reset`.
public final class FakeProvider: Sendable {
    /// The TCP port it listens on.
    public let port: Int
    /// The host it was bound to.
    public let host: String
    /// The personality it answers with when nothing is scripted.
    public var personality: Personality { state.personality }

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
            .serverChannelOption(.backlog, value: 256)
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
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "http://\(hostPart):\(port)/v1"
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

    /// What `POST /_fake/reset` does: zero the counters, clear the script, reseed the fault generator and
    /// empty the simulated rate-limit window.
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
