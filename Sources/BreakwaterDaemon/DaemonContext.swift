import BreakwaterWire
import Config
import CurlTransport
import Logging
import Synchronization
import Systemd

/// Everything a connection needs from the daemon; shared by all connections.
final class DaemonContext: Sendable {
    /// The routes and config in force, replaced whole by a reload. A call reads the router once when it starts and
    /// keeps that route (targets, keys, fallback policy) to its end, so a reload never changes a call mid-way.
    private let current: Mutex<Router>
    var router: Router { current.withLock { $0 } }

    func replaceRouter(_ router: Router) {
        current.withLock { $0 = router }
    }
    let engine: any TransferEngine
    let limits: Limits
    let stats: DaemonStats
    let logger: Logger
    let drainTimeout: Duration
    let defaultCallTimeout: Duration
    let resilience: ResilienceRegistry
    /// Nil when no policy is configured: every local caller may use every route.
    let governance: GovernanceRegistry?
    /// The journal audit trail; nil if the writer could not start (logged).
    let auditWriter: JournalAuditWriter?

    init(router: Router, engine: any TransferEngine, stats: DaemonStats, logger: Logger, resilience: ResilienceRegistry,
         governance: GovernanceRegistry?, auditWriter: JournalAuditWriter?) {
        self.auditWriter = auditWriter
        self.current = Mutex(router)
        self.engine = engine
        // Frame and body limits are promised in every HELLO, so they stay as started until a restart.
        let l = router.config.limits
        self.limits = Limits(maxFramePayload: l.maxFrameBytes, maxBody: l.maxBodyBytes,
                             maxConcurrentCalls: l.maxConcurrentCalls)
        self.stats = stats
        self.logger = logger
        self.drainTimeout = l.drainTimeout
        self.defaultCallTimeout = l.defaultCallTimeout
        self.resilience = resilience
        self.governance = governance
    }
}
