import BreakwaterWire
import Config
import CurlTransport
import Foundation
import Governance
import Logging
import NIOCore
import NIOExtras
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
}

/// The daemon as a `Service`: binds (or adopts) the socket, serves until graceful shutdown, then sends GOAWAY on
/// every connection and waits for in-flight calls to drain.
public final class BreakwaterServer: Service, Sendable {
    public let stats = DaemonStats()
    private let router: Router
    private let address: ListenAddress
    private let logger: Logger
    private let group: any EventLoopGroup
    private let policy: GovernancePolicy?
    private let stateDirectory: String?
    /// Re-read on SIGHUP.
    private let policyPath: String?

    /// `policy` nil: no runtime enforcement (every local caller may use every route), logged at start-up.
    /// `stateDirectory` nil: nothing survives a restart.
    public init(router: Router, address: ListenAddress, logger: Logger, policy: GovernancePolicy? = nil,
                policyPath: String? = nil, stateDirectory: String? = nil,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.router = router
        self.policyPath = policyPath
        self.policy = policy
        self.stateDirectory = stateDirectory
        self.address = address
        self.logger = logger
        self.group = group
    }

    /// From the serving event loop itself: STATUS= with live figures every 2 s and, when systemd asked for a
    /// watchdog, WATCHDOG=1 at half its interval — so a wedged loop stops the pings and systemd restarts us.
    private func startHeartbeat(shared: DaemonContext, loop: any EventLoop) -> RepeatedTask {
        let watchdog = Systemd.watchdogInterval()
        let period = watchdog.map { min(.seconds(2), $0 / 2) } ?? .seconds(2)
        let stats = self.stats
        return loop.scheduleRepeatedTask(initialDelay: .zero, delay: .nanoseconds(period.nanoseconds)) { _ in
            var line = watchdog != nil ? "WATCHDOG=1\n" : ""
            line += "STATUS=serving; " + stats.statusLine
            line += ", open breakers: \(shared.resilience.openBreakers.count)"
            line += ", pending approvals: \(shared.governance?.pending.count ?? 0)"
            if let audit = shared.auditWriter?.statistics {
                line += ", unwritten audit entries: \(audit.unwritten + audit.dropped)"
            }
            Systemd.notify(line)
        }
    }

    public func run() async throws {
        let engine = try CurlEngine()
        defer { engine.shutdown() }
        let clock = SystemClock()
        let store = try stateDirectory.map { try StateStore(directory: $0, logger: logger) }
        defer { store?.flush() }
        let governance = try policy.map { try GovernanceRegistry(policy: $0, clock: clock, store: store) }
        var auditWriter: JournalAuditWriter?
        do {
            auditWriter = try JournalAuditWriter()
        } catch {
            logger.error("the journal audit writer did not start; decisions will not be audited",
                         metadata: ["error": "\(error)"])
        }
        defer { _ = auditWriter?.shutdown(timeout: .seconds(5)) }
        let shared = DaemonContext(router: router, engine: engine, stats: stats, logger: logger,
                                   resilience: ResilienceRegistry(clock: clock, logger: logger, audit: auditWriter),
                                   governance: governance, auditWriter: auditWriter)
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

        let channel: any Channel
        let where_: String
        switch address {
        case .inheritedFD(let fd):
            channel = try await bootstrap.withBoundSocket(fd).get()
            where_ = "socket from systemd (fd \(fd))"
        case .path(let path):
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            channel = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            chmod(path, 0o660)
            where_ = path
        }
        logger.info("breakwaterd serving", metadata: [
            "listen": "\(where_)", "routes": "\(router.routes.keys.sorted().joined(separator: ","))",
        ])
        if policy == nil {
            logger.warning("no policy file: runtime enforcement is off, every local caller may use every route")
        }
        for name in router.providersWithoutKey {
            logger.warning("provider has no API key; calls to it will fail", metadata: ["provider": "\(name)"])
        }
        Systemd.notify("READY=1\nSTATUS=serving; " + stats.statusLine)
        let heartbeat = startHeartbeat(shared: shared, loop: channel.eventLoop)
        defer { heartbeat.cancel() }

        // SIGHUP re-reads the policy: credentials rotate and are revoked without a restart. A policy with errors is
        // refused (each error logged with its line) and the running one stays.
        let reloader = Task { [policyPath, logger] in
            guard let governance, let policyPath else { return }
            for await _ in await UnixSignalsSequence(trapping: .sighup) {
                do {
                    governance.replacePolicy(try PolicyLoader.load(file: policyPath))
                    logger.notice("policy reloaded", metadata: ["file": "\(policyPath)"])
                } catch let error as ConfigError {
                    for issue in error.issues {
                        logger.error("policy reload refused; keeping the running policy",
                                     metadata: ["error": "\(issue)"])
                    }
                } catch {
                    logger.error("policy reload refused; keeping the running policy")
                }
            }
        }
        defer { reloader.cancel() }

        // Wait for SIGTERM/SIGINT (delivered by ServiceGroup as graceful shutdown), or for cancellation.
        try? await gracefulShutdown()

        Systemd.notify("STOPPING=1\nSTATUS=draining; " + stats.statusLine)
        logger.info("draining", metadata: ["calls_in_flight": "\(stats.callsInFlight.load(ordering: .relaxed))"])
        let drained = group.next().makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: drained)
        try? await drained.futureResult.get()
        _ = channel
        logger.info("stopped")
    }
}
