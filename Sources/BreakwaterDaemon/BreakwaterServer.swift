import BreakwaterWire
import Config
import CurlTransport
import Foundation
import Governance
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import Resilience
import ServiceLifecycle
import Synchronization
import Systemd
import UnixSignals

/// Where the daemon listens.
public enum ListenAddress: Sendable, Equatable {
    /// A listening socket passed by systemd (socket activation).
    case inheritedFD(Int32)
    /// A Unix socket path the daemon binds itself (run by hand).
    case path(String)
    /// A loopback TCP address (the HTTP front's optional `http.tcp`).
    case tcp(host: String, port: Int)
}

/// The daemon as a `Service`: binds (or adopts) the socket, serves until graceful shutdown, then sends GOAWAY on
/// every connection and waits for in-flight calls to drain.
public final class BreakwaterServer: Service, Sendable {
    public let stats = DaemonStats()
    private let settings: DaemonSettings
    private let sources: DaemonSettings.Sources
    private let address: ListenAddress
    /// The HTTP front's listeners: a socket from systemd or a path, and `http.tcp` when configured.
    private let httpAddresses: [ListenAddress]
    private let logger: Logger
    private let group: any EventLoopGroup
    private let stateDirectory: String?
    private let environment: [String: String]
    private let faults: TestFaults

    /// `settings.policy` nil: no runtime enforcement (every local caller may use every route), logged at start-up.
    /// `sources`: where SIGHUP re-reads the settings from. `stateDirectory` nil: nothing survives a restart.
    public init(settings: DaemonSettings, sources: DaemonSettings.Sources, address: ListenAddress,
                httpAddresses: [ListenAddress] = [], logger: Logger,
                stateDirectory: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.httpAddresses = httpAddresses
        self.settings = settings
        self.sources = sources
        self.stateDirectory = stateDirectory
        self.address = address
        self.logger = logger
        self.environment = environment
        self.faults = TestFaults(environment: environment)
        self.group = group
    }

    /// From the serving event loop itself: STATUS= with live figures every 2 s and, when systemd asked for a
    /// watchdog, WATCHDOG=1 at half its interval — so a wedged loop stops the pings and systemd restarts us.
    private func startHeartbeat(shared: DaemonContext, loop: any EventLoop) -> RepeatedTask {
        let watchdog = Systemd.watchdogInterval()
        let period = watchdog.map { min(.seconds(2), $0 / 2) } ?? .seconds(2)
        let stats = self.stats
        let rate = Mutex(CallRate())  // touched every 2 s only
        let trimmedWhileIdle = Atomic<Bool>(true)
        return loop.scheduleRepeatedTask(initialDelay: .zero, delay: .nanoseconds(period.nanoseconds)) { _ in
            // Approvals restored after a restart have no waiting call to expire them; this does.
            shared.governance?.expireDue()
            // Once no call is in flight, hand the memory a burst of calls used back to the system (once per idle
            // spell): glibc keeps freed pages in its arenas otherwise, and the daemon's RSS would stay at its peak.
            if stats.callsInFlight.load(ordering: .relaxed) == 0 {
                if !trimmedWhileIdle.exchange(true, ordering: .relaxed) { Systemd.releaseFreedMemory() }
            } else {
                trimmedWhileIdle.store(false, ordering: .relaxed)
            }
            var line = watchdog != nil ? "WATCHDOG=1\n" : ""
            let perSecond = rate.withLock { $0.sample(stats) }
            if let perSecond { stats.callsPerSecondMilli.store(Int(perSecond * 1000), ordering: .relaxed) }
            line += "STATUS=serving; " + Self.statusFigures(shared, callsPerSecond: perSecond)
            Systemd.notify(line)
        }
    }

    /// The live figures STATUS= shows (and `breakwater status` shows in detail).
    static func statusFigures(_ shared: DaemonContext, callsPerSecond: Double?) -> String {
        var line = shared.stats.statusLine
        if let callsPerSecond { line += ", calls/s: " + String(format: "%.1f", callsPerSecond) }
        line += ", open breakers: \(shared.resilience.openBreakers.count)"
        line += ", pending approvals: \(shared.governance?.pending.count ?? 0)"
        let waiting = shared.router.poolSnapshots.reduce(0) { $0 + $1.pool.waiting }
        if waiting > 0 { line += ", calls waiting for a connection: \(waiting)" }
        if shared.resilience.clusterDegraded { line += ", cluster store unreachable (local shares)" }
        if let audit = shared.auditWriter?.statistics {
            line += ", unwritten audit entries: \(audit.unwritten + audit.dropped)"
        }
        return line
    }

    public func run() async throws {
        let router = Router(config: settings.config, environment: environment)
        // The pools are the limit; libcurl's own caps are set just wide enough never to hold a call back unseen.
        let caps = router.connectionCaps
        let streams = settings.config.providers.values.map { Int($0.maxConcurrentStreams) }.max() ?? 100
        let handoff = EngineHandoff()
        let engine = try CurlEngine(maxHostConnections: caps.perHost, maxTotalConnections: caps.total,
                                    maxConcurrentStreams: streams,
                                    coalescingWindow: settings.config.limits.streamCoalescingWindow,
                                    turnObserver: handoff)
        defer { engine.shutdown() }
        let clock = SystemClock()
        let store = try stateDirectory.map { try StateStore(directory: $0, logger: logger) }
        defer { store?.flush() }
        let governance = try settings.policy.map {
            try GovernanceRegistry(policy: $0, clock: clock, store: store)
        }
        var auditWriter: JournalAuditWriter?
        do {
            auditWriter = try JournalAuditWriter()
        } catch {
            logger.error("the journal audit writer did not start; decisions will not be audited",
                         metadata: ["error": "\(error)"])
        }
        defer { _ = auditWriter?.shutdown(timeout: .seconds(5)) }
        let metrics = DaemonMetrics(agents: settings.config.http.metricsAgents)
        let resilience = ResilienceRegistry(clock: clock, logger: logger, audit: auditWriter, store: store,
                                            metrics: metrics)
        resilience.restoreBreakers(router: router)
        if let cluster = settings.config.cluster {
            try resilience.attachCluster(cluster, environment: environment, budgets: governance)
        }
        defer { resilience.detachCluster() }
        let shared = DaemonContext(router: router, engine: engine, stats: stats, logger: logger,
                                   resilience: resilience, governance: governance, auditWriter: auditWriter,
                                   metrics: metrics, handoff: handoff)
        // NIO's quiescing helper watches one server channel: one per listener, all drained at a graceful stop.
        let quiesce = ServerQuiescingHelper(group: group)
        let limits = shared.limits
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            // The per-connection bound (PROTOCOL.md, "Flow control"): past 1 MiB waiting for the app's socket,
            // the connection's calls stop reading their providers; under 256 KiB they go on.
            .childChannelOption(.writeBufferWaterMark, value: ConnectionHandler.writeBufferWaterMark)
            .childChannelInitializer { channel in
                // The peer's uid/gid/pid first, so every frame is judged knowing who sent it.
                PeerCredentials.read(from: channel).flatMapThrowing { peer in
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(FrameDecoderHandler(limits: limits)),
                        MessageToByteHandler(FrameEncoderHandler()),
                        ConnectionHandler(shared: shared, peer: peer),
                    ])
                }
            }

        // The HTTP front first: once the binary socket answers (what clients wait for), both are open.
        var httpChannels: [any Channel] = []
        var httpWhere: [String] = []
        var httpQuiesce: [ServerQuiescingHelper] = []
        for http in httpAddresses {
            let overTCP = if case .tcp = http { true } else { false }
            let helper = ServerQuiescingHelper(group: group)
            httpQuiesce.append(helper)
            let (c, w) = try await Self.bind(httpBootstrap(shared: shared, quiesce: helper, overTCP: overTCP), to: http)
            httpChannels.append(c)
            httpWhere.append(w)
        }
        let (channel, where_) = try await Self.bind(bootstrap, to: address)
        logger.info("breakwaterd serving", metadata: [
            "listen": "\(where_)", "http": "\(httpWhere.isEmpty ? "off" : httpWhere.joined(separator: ", "))",
            "routes": "\(router.routes.keys.sorted().joined(separator: ","))",
        ])
        if settings.policy == nil {
            logger.warning("no policy file: runtime enforcement is off, every local caller may use every route")
        }
        warnAboutMissingKeys(router)
        Systemd.notify("READY=1\nSTATUS=serving; " + stats.statusLine)
        let heartbeat = startHeartbeat(shared: shared, loop: channel.eventLoop)
        defer { heartbeat.cancel() }

        // The signal watchers are child tasks of serving: they end (their streams finish on cancellation) when
        // serving stops, instead of outliving it as unstructured tasks.
        await withDiscardingTaskGroup { watchers in
            watchers.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    self.reload(shared)
                }
            }
            if faults.wedgeOnSIGUSR2 {
                watchers.addTask { [logger] in
                    for await _ in await UnixSignalsSequence(trapping: .sigusr2) {
                        logger.critical("test fault: wedging the serving event loop (BREAKWATER_TEST_FAULTS)")
                        channel.eventLoop.execute { TestFaults.wedgeForever() }
                    }
                }
            }
            // Wait for SIGTERM/SIGINT (delivered by ServiceGroup as graceful shutdown), or for cancellation.
            try? await gracefulShutdown()
            watchers.cancelAll()
        }

        Systemd.notify("STOPPING=1\nSTATUS=draining; " + stats.statusLine)
        logger.info("draining", metadata: ["calls_in_flight": "\(stats.callsInFlight.load(ordering: .relaxed))"])
        // Every listener stops accepting and every connection drains at once; then wait for all of them.
        let drains = ([quiesce] + httpQuiesce).map { helper in
            let drained = group.next().makePromise(of: Void.self)
            helper.initiateShutdown(promise: drained)
            return drained.futureResult
        }
        for drained in drains { try? await drained.get() }
        _ = (channel, httpChannels)
        logger.info("stopped")
    }

    /// Binds (or adopts) one listening socket; returns it and where it listens, for the log.
    private static func bind(_ bootstrap: ServerBootstrap, to address: ListenAddress) async throws
        -> (any Channel, String) {
        switch address {
        case .inheritedFD(let fd):
            return (try await bootstrap.withBoundSocket(fd).get(), "socket from systemd (fd \(fd))")
        case .path(let path):
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let channel = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            chmod(path, 0o660)
            return (channel, path)
        case .tcp(let host, let port):
            return (try await bootstrap.bind(host: host, port: port).get(), "tcp \(host):\(port)")
        }
    }

    /// The HTTP front's pipeline: the connection guard on raw bytes, NIO's HTTP/1 codec with its pipelining and
    /// error handlers (a request it cannot parse gets 400 and the connection closes), then the front itself.
    private func httpBootstrap(shared: DaemonContext, quiesce: ServerQuiescingHelper, overTCP: Bool) -> ServerBootstrap {
        let settings = HTTPFrontSettings(self.settings.config.http, overTCP: overTCP)
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.writeBufferWaterMark, value: ConnectionHandler.writeBufferWaterMark)
            .childChannelInitializer { channel in
                // TCP has no peer credentials (SO_PEERCRED there reads as the overflow uid): nil, never a uid.
                let peer = overTCP ? channel.eventLoop.makeSucceededFuture(nil) : PeerCredentials.read(from: channel)
                return peer.flatMapThrowing { peer in
                    let front = HTTPFrontHandler(shared: shared, settings: settings, peer: peer)
                    let connectionGuard = HTTPConnectionGuard(shared: shared, settings: settings, peer: peer,
                                                              front: front)
                    front.connectionGuard = connectionGuard
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(connectionGuard)
                    try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                    try pipeline.addHandler(front)
                }
            }
    }

    /// SIGHUP: re-reads the config, the policy and the provider keys, between RELOADING=1 and READY=1. Settings
    /// with any error are refused whole (each error logged with its file and line) and the running ones stay.
    /// Calls already running keep the route they started with; the next call uses the new one.
    private func reload(_ shared: DaemonContext) {
        Systemd.notify("RELOADING=1\nMONOTONIC_USEC=\(Systemd.monotonicMicroseconds())\nSTATUS=reloading")
        defer { Systemd.notify("READY=1\nSTATUS=serving; " + Self.statusFigures(shared, callsPerSecond: nil)) }
        let fresh: DaemonSettings
        do {
            fresh = try sources.load()
        } catch {
            for issue in error.issues {
                logger.error("reload refused; keeping the running config and policy", metadata: ["error": "\(issue)"])
            }
            return
        }
        if fresh.config.cluster != shared.router.config.cluster {
            // The store's client starts with the daemon; a provider moved to scope cluster with no client would
            // take the whole cluster limit on this host alone.
            logger.error("reload refused: adding, removing or changing cluster: needs a restart")
            return
        }
        switch (shared.governance, fresh.policy) {
        case (nil, .some):
            logger.error("reload refused: turning runtime enforcement on needs a restart")
            return
        case (.some, nil):
            logger.error("reload refused: the new settings name no policy; turning enforcement off needs a restart")
            return
        case (.some(let governance), .some(let policy)):
            governance.replacePolicy(policy)
        case (nil, nil):
            break
        }
        let old = shared.router
        if fresh.config.limits != old.config.limits || fresh.config.socketPath != old.config.socketPath {
            logger.notice("limits and socket_path changes take effect at the next restart")
        }
        let router = Router(config: fresh.config, environment: environment, generation: old.generation + 1,
                            pools: old.pools)
        let caps = router.connectionCaps
        if caps.perHost > shared.connectionCaps.perHost || caps.total > shared.connectionCaps.total {
            logger.warning("""
                max_connections raised past what the daemon started with: until a restart, libcurl holds \
                connections to one host at \(shared.connectionCaps.perHost) and in all at \
                \(shared.connectionCaps.total), and calls past that wait inside it, not shown in status
                """)
        }
        shared.replaceRouter(router)
        warnAboutMissingKeys(router)
        logger.notice("reloaded", metadata: [
            "config": "\(sources.configPath ?? "built-in defaults")", "policy": "\(fresh.policyPath ?? "none")",
            "routes": "\(router.routes.keys.sorted().joined(separator: ","))",
        ])
    }

    private func warnAboutMissingKeys(_ router: Router) {
        for (provider, credential) in router.unreadableCredentials(environment: environment) {
            logger.error("configuration error: an API key credential file cannot be read (api_key_env is used if set)",
                         metadata: ["provider": "\(provider)", "credential": "\(credential)"])
        }
        for name in router.providersWithoutKey {
            logger.warning("provider has no API key; calls to it will fail", metadata: ["provider": "\(name)"])
        }
    }
}

/// Calls per second between two heartbeats.
private struct CallRate {
    var last: (calls: Int, at: ContinuousClock.Instant)?

    mutating func sample(_ stats: DaemonStats) -> Double? {
        let now = ContinuousClock.now
        let calls = stats.callsStarted.load(ordering: .relaxed)
        defer { last = (calls, now) }
        guard let last else { return nil }
        let seconds = (now - last.at).seconds
        return seconds > 0 ? Double(calls - last.calls) / seconds : nil
    }
}

/// Faults a test can switch on through `BREAKWATER_TEST_FAULTS` (a comma-separated list). Off unless named, so
/// they cannot be triggered in a deployment that does not set the variable.
struct TestFaults: Sendable {
    /// `wedge-on-sigusr2`: SIGUSR2 blocks the serving event loop for good, as a deadlock would. The watchdog
    /// pings come from that loop, so they stop and systemd restarts the daemon.
    var wedgeOnSIGUSR2 = false

    init(environment: [String: String]) {
        let names = (environment["BREAKWATER_TEST_FAULTS"] ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }
        wedgeOnSIGUSR2 = names.contains("wedge-on-sigusr2")
    }

    static func wedgeForever() -> Never {
        while true { sleep(3600) }
    }
}
