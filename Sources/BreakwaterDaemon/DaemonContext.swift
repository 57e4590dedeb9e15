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
    let helloTimeout: Duration
    let frameTimeout: Duration
    /// Open connections, in total and per uid, under `max_connections` and `max_connections_per_uid`.
    private let connections: Mutex<(total: Int, perUID: [UInt32: Int])> = Mutex((0, [:]))
    let maxConnections: Int
    let maxConnectionsPerUID: Int
    let resilience: ResilienceRegistry
    /// Nil when no policy is configured: every local caller may use every route.
    let governance: GovernanceRegistry?
    /// The journal audit trail; nil if the writer could not start (logged).
    let auditWriter: JournalAuditWriter?
    /// What `GET /metrics` shows.
    let metrics: DaemonMetrics
    /// How upstream calls' reports reach the event loops (the curl engine's turn observer).
    let handoff: EngineHandoff
    /// The connection caps libcurl was started with (`Router.connectionCaps` of the first config).
    let connectionCaps: (perHost: Int, total: Int)

    init(router: Router, engine: any TransferEngine, stats: DaemonStats, logger: Logger, resilience: ResilienceRegistry,
         governance: GovernanceRegistry?, auditWriter: JournalAuditWriter?, metrics: DaemonMetrics? = nil,
         handoff: EngineHandoff = EngineHandoff()) {
        self.handoff = handoff
        self.auditWriter = auditWriter
        self.metrics = metrics ?? resilience.metrics ?? DaemonMetrics()
        self.current = Mutex(router)
        self.connectionCaps = router.connectionCaps
        self.engine = engine
        // Frame and body limits are promised in every HELLO, so they stay as started until a restart.
        let l = router.config.limits
        self.limits = Limits(maxFramePayload: l.maxFrameBytes, maxBody: l.maxBodyBytes,
                             maxConcurrentCalls: l.maxConcurrentCalls)
        self.stats = stats
        self.logger = logger
        self.drainTimeout = l.drainTimeout
        self.defaultCallTimeout = l.defaultCallTimeout
        self.helloTimeout = l.helloTimeout
        self.frameTimeout = l.frameTimeout
        self.maxConnections = Int(l.maxConnections)
        self.maxConnectionsPerUID = Int(l.maxConnectionsPerUID)
        self.resilience = resilience
        self.governance = governance
    }

    /// Takes a connection slot for a peer (nil: not on a Unix socket, counted in the total only), or says why
    /// not. A slot taken is given back with `releaseConnection` when the connection closes.
    func admitConnection(uid: UInt32?) -> String? {
        connections.withLock { c in
            if c.total >= maxConnections {
                return "the daemon already has \(c.total) connections open (max_connections \(maxConnections))"
            }
            if let uid {
                let mine = c.perUID[uid, default: 0]
                if mine >= maxConnectionsPerUID {
                    return "uid \(uid) already has \(mine) connections open "
                        + "(max_connections_per_uid \(maxConnectionsPerUID))"
                }
                c.perUID[uid] = mine + 1
            }
            c.total += 1
            return nil
        }
    }

    func releaseConnection(uid: UInt32?) {
        connections.withLock { c in
            c.total -= 1
            if let uid, let n = c.perUID[uid] { c.perUID[uid] = n > 1 ? n - 1 : nil }
        }
    }
}
