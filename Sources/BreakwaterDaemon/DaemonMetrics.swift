import BreakwaterWire
import Config
import CurlTransport
import Prometheus
import Providers
import Resilience
import Synchronization
import Systemd

/// The daemon's Prometheus metrics (`GET /metrics` on the HTTP front), kept in swift-prometheus' registry, which
/// also writes the text exposition. Names follow the OpenTelemetry GenAI semantic conventions where one exists
/// (`gen_ai_client_token_usage`, `gen_ai_client_operation_duration_seconds`,
/// `gen_ai_server_time_to_first_token_seconds`, with their buckets); the rest are `breakwater_*`.
///
/// Label values come only from the config and the policy (routes, providers, models, rule names) and from fixed
/// sets (outcomes, error codes, failure kinds, breaker states): never a request id, agent, prompt or token, so the
/// number of series is bounded by the config. The README's "Metrics" lists every metric and its labels.
final class DaemonMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// `http.metrics_agents` as the daemon started: the agents with series of their own.
    let agents: Set<String>

    init(agents: Set<String> = []) {
        self.agents = agents
    }

    /// A metric's name, unit suffix and help (swift-prometheus' `MetricNameDescriptor` is not `Sendable`, so the
    /// strings are kept and the descriptor made when a series is looked up).
    struct Metric: Sendable {
        var name: String
        var unit: String
        var help: String
        var descriptor: MetricNameDescriptor { MetricNameDescriptor(metricName: name, unitName: unit, helpText: help) }
    }

    private static func name(_ metric: String, _ unit: String, _ help: String) -> Metric {
        Metric(name: metric, unit: unit, help: help)
    }

    static let calls = name("breakwater_calls", "total", "Calls that ended, by route and outcome (ok, cancelled, "
                            + "handed_back, or the protocol error code)")
    static let agentCalls = name("breakwater_agent_calls", "total", "Calls that ended, by agent (those in "
                                 + "http.metrics_agents) and outcome")
    static let agentTokens = name("breakwater_agent_tokens", "total", "Tokens of answered calls, by agent (those in "
                                  + "http.metrics_agents) and type (input, output)")
    static let attempts = name("breakwater_upstream_attempts", "total", "Upstream requests, by provider, model "
                               + "and outcome (ok or the failure kind)")
    static let retries = name("breakwater_retries", "total", "Retries of a target after a failed attempt")
    static let fallbacks = name("breakwater_fallbacks", "total", "Calls that moved on from a target to the next "
                                + "one of their route")
    static let budgetRefusals = name("breakwater_retry_budget_refusals", "total", "Retries the host-wide retry "
                                     + "budget refused")
    static let keyWaits = name("breakwater_rate_limit_waits", "total", "Attempts that waited for a provider key's "
                               + "rate limits (RPM/TPM pacing)")
    static let keyWaitSeconds = name("breakwater_rate_limit_wait_seconds", "total", "Time attempts waited for a "
                                     + "provider key's rate limits")
    static let breakerState = name("breakwater_circuit_breaker_state", "", "Circuit breaker per target: 0 closed, "
                                   + "1 half-open, 2 open")
    static let breakerTransitions = name("breakwater_circuit_breaker_transitions", "total", "Circuit breaker "
                                         + "transitions, by the state entered")
    static let duration = name("gen_ai_client_operation_duration", "seconds", "Duration of each upstream request "
                               + "(GenAI client operation)")
    static let firstToken = name("gen_ai_server_time_to_first_token", "seconds", "Time from an upstream request "
                                 + "to its first streamed chunk")
    static let tokens = name("gen_ai_client_token_usage", "", "Tokens used per answered upstream request, by type "
                             + "(input, output)")
    static let decisions = name("breakwater_policy_decisions", "total", "Policy decisions on calls, by decision "
                                + "and rule")
    static let approvalsPending = name("breakwater_approvals_pending", "", "Calls waiting for an approval")
    static let auditEntries = name("breakwater_audit_entries", "total", "Audit entries, by state (written, "
                                   + "unwritten: journald refused them, dropped: the queue was full)")
    static let connections = name("breakwater_connections", "", "Open app connections (binary protocol and HTTP)")
    static let callsInFlight = name("breakwater_calls_in_flight", "", "Calls in flight")
    static let waitingForReader = name("breakwater_calls_waiting_for_reader", "", "Streamed calls paused because "
                                       + "their app is not reading")
    static let upstreamRunning = name("breakwater_upstream_calls_running", "", "Calls running to a provider under its "
                                      + "max_connections (× max_concurrent_streams over HTTP/2)")
    static let upstreamWaiting = name("breakwater_upstream_calls_waiting", "", "Calls waiting for a connection to a "
                                      + "provider (its max_connections are all in use)")
    static let clusterReachable = name("breakwater_cluster_store_reachable", "", "1 while the cluster store answers, "
                                       + "0 while cluster limits run on local shares (only with cluster:)")
    static let clusterLiveDaemons = name("breakwater_cluster_live_daemons", "", "Daemons the cluster store last "
                                         + "counted alive")
    static let clusterOutages = name("breakwater_cluster_store_outages", "total", "Times the cluster store was lost "
                                     + "since start")

    /// The semantic conventions' advised buckets.
    static let durationBuckets: [Duration] = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                                              20.48, 40.96, 81.92].map { .milliseconds(Int64($0 * 1000)) }
    static let firstTokenBuckets: [Duration] = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                                1.0, 2.5, 5.0, 7.5, 10.0].map { .microseconds(Int64($0 * 1_000_000)) }
    static let tokenBuckets: [Double] = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                                         16777216, 67108864]

    /// `gen_ai.provider.name`'s well-known values for the provider kinds.
    static func genAIProvider(_ kind: ProviderConfig.Kind) -> String {
        switch kind {
        case .openai: "openai"
        case .anthropic: "anthropic"
        case .gemini: "gcp.gemini"
        case .azure: "azure.ai.openai"
        }
    }

    /// The labels of everything about one upstream target: GenAI's, plus the provider's name in the config.
    fileprivate static func labels(_ target: ResolvedTarget) -> [(String, String)] {
        [("gen_ai_operation_name", "chat"), ("gen_ai_provider_name", genAIProvider(target.provider.config.kind)),
         ("gen_ai_request_model", target.model), ("breakwater_provider", target.provider.name)]
    }

    // MARK: The common case's series, looked up once

    /// The series every answered call touches, per target: made in the registry once (its lookup checks names and
    /// labels each time, which cost several microseconds per call) and kept here, behind one short lock.
    private final class TargetSeries: Sendable {
        let answered: Counter
        let duration: DurationHistogram
        let inputTokens: ValueHistogram
        let outputTokens: ValueHistogram
        let firstChunk: DurationHistogram

        init(_ target: ResolvedTarget, _ registry: PrometheusCollectorRegistry) {
            let labels = DaemonMetrics.labels(target)
            answered = registry.makeCounter(descriptor: DaemonMetrics.attempts.descriptor, labels: [
                ("provider", target.provider.name), ("model", target.model), ("outcome", "ok"),
            ])
            duration = registry.makeDurationHistogram(descriptor: DaemonMetrics.duration.descriptor, labels: labels,
                                                      buckets: DaemonMetrics.durationBuckets)
            inputTokens = registry.makeValueHistogram(descriptor: DaemonMetrics.tokens.descriptor,
                                                      labels: labels + [("gen_ai_token_type", "input")],
                                                      buckets: DaemonMetrics.tokenBuckets)
            outputTokens = registry.makeValueHistogram(descriptor: DaemonMetrics.tokens.descriptor,
                                                       labels: labels + [("gen_ai_token_type", "output")],
                                                       buckets: DaemonMetrics.tokenBuckets)
            firstChunk = registry.makeDurationHistogram(descriptor: DaemonMetrics.firstToken.descriptor,
                                                        labels: labels, buckets: DaemonMetrics.firstTokenBuckets)
        }
    }

    private struct TargetKey: Hashable {
        var provider: String
        var model: String
    }

    /// The values of a series' two labels: (route, outcome) for calls, (rule, decision) for policy decisions.
    private struct TwoLabels: Hashable {
        var first: String
        var second: String
    }

    private let targets = Mutex<[TargetKey: TargetSeries]>([:])
    private let callCounters = Mutex<[TwoLabels: Counter]>([:])
    /// Policy decisions by (rule, decision), kept as the calls counters are: every governed call makes one.
    private let decisionCounters = Mutex<[TwoLabels: Counter]>([:])

    private func series(_ target: ResolvedTarget) -> TargetSeries {
        Self.cached(TargetKey(provider: target.provider.name, model: target.model), in: targets) {
            TargetSeries(target, registry)
        }
    }

    /// The series kept under `key`, made (once) by `make` when it is not there yet.
    private static func cached<Key: Hashable & Sendable, Series: Sendable>(_ key: Key, in store: borrowing Mutex<[Key: Series]>,
                                                               _ make: () -> Series) -> Series {
        if let series = store.withLock({ $0[key] }) { return series }
        // Made outside the lock (the registry has its own); two racing callers get the same series from it.
        let made = make()
        return store.withLock { known in
            if let series = known[key] { return series }
            known[key] = made
            return made
        }
    }

    // MARK: Recording

    func callEnded(route: String?, outcome: CallOutcome) {
        let key = TwoLabels(first: route ?? "", second: outcome.metricName)
        Self.cached(key, in: callCounters) {
            registry.makeCounter(descriptor: Self.calls.descriptor,
                                 labels: [("route", key.first), ("outcome", key.second)])
        }.increment()
    }

    /// A call's end, for an agent the config names in `http.metrics_agents` (nothing for any other).
    func agentCallEnded(_ agent: String?, outcome: CallOutcome) {
        guard let agent, agents.contains(agent) else { return }
        registry.makeCounter(descriptor: Self.agentCalls.descriptor,
                             labels: [("agent", agent), ("outcome", outcome.metricName)]).increment()
        if case .answered(let usage) = outcome {
            for (type, count) in [("input", usage?.promptTokens), ("output", usage?.completionTokens)] {
                guard let count else { continue }
                registry.makeCounter(descriptor: Self.agentTokens.descriptor, labels: [("agent", agent), ("type", type)])
                    .increment(by: Int64(count))
            }
        }
    }

    /// One upstream request's end: `failure` nil when it answered (with its usage, when the provider gave it).
    func attemptEnded(_ target: ResolvedTarget, failure: String?, duration: Duration, usage: Usage?) {
        guard let failure else {
            let s = series(target)
            s.answered.increment()
            s.duration.record(duration)
            if let p = usage?.promptTokens { s.inputTokens.record(Double(p)) }
            if let c = usage?.completionTokens { s.outputTokens.record(Double(c)) }
            return
        }
        // Failures are rarer: straight to the registry.
        registry.makeCounter(descriptor: Self.attempts.descriptor, labels: [
            ("provider", target.provider.name), ("model", target.model), ("outcome", failure),
        ]).increment()
        registry.makeDurationHistogram(descriptor: Self.duration.descriptor,
                                       labels: Self.labels(target) + [("error_type", failure)],
                                       buckets: Self.durationBuckets).record(duration)
    }

    /// Called on the libcurl thread (the histogram is safe from any thread).
    func firstChunk(_ target: ResolvedTarget, after: Duration) {
        series(target).firstChunk.record(after)
    }

    func retried(_ target: ResolvedTarget) {
        registry.makeCounter(descriptor: Self.retries.descriptor, labels: [
            ("provider", target.provider.name), ("model", target.model),
        ]).increment()
    }

    func movedOn(route: String?, from target: ResolvedTarget) {
        registry.makeCounter(descriptor: Self.fallbacks.descriptor, labels: [
            ("route", route ?? ""), ("from_provider", target.provider.name), ("from_model", target.model),
        ]).increment()
    }

    func retryBudgetRefused(_ target: ResolvedTarget) {
        registry.makeCounter(descriptor: Self.budgetRefusals.descriptor, labels: [("provider", target.provider.name)])
            .increment()
    }

    func waitedForKey(_ target: ResolvedTarget, _ wait: Duration) {
        let labels = [("provider", target.provider.name)]
        registry.makeCounter(descriptor: Self.keyWaits.descriptor, labels: labels).increment()
        registry.makeCounter(descriptor: Self.keyWaitSeconds.descriptor, labels: labels)
            .increment(by: Double(wait.nanoseconds) / 1e9)
    }

    func breakerTransition(provider: String, model: String, to state: String) {
        registry.makeCounter(descriptor: Self.breakerTransitions.descriptor, labels: [
            ("provider", provider), ("model", model), ("to", state),
        ]).increment()
    }

    func policyDecision(_ decision: String, rule: String) {
        Self.cached(TwoLabels(first: rule, second: decision), in: decisionCounters) {
            registry.makeCounter(descriptor: Self.decisions.descriptor, labels: [("decision", decision), ("rule", rule)])
        }.increment()
    }

    // MARK: The exposition

    /// The text exposition, with the figures that are read rather than counted (breaker states, connections,
    /// calls in flight, pending approvals, upstream pools, audit totals) brought up to date first.
    func exposition(_ shared: DaemonContext) -> [UInt8] {
        for breaker in shared.resilience.breakerReport() {
            let parts = breaker.target.split(separator: "/", maxSplits: 1).map(String.init)
            let value: Double = switch breaker.state {
            case "open": 2
            case "half_open": 1
            default: 0
            }
            registry.makeGauge(descriptor: Self.breakerState.descriptor, labels: [
                ("provider", parts.first ?? ""), ("model", parts.count > 1 ? parts[1] : ""),
            ]).set(value)
        }
        registry.makeGauge(descriptor: Self.connections.descriptor).set(Double(shared.stats.connections.load(ordering: .relaxed)))
        registry.makeGauge(descriptor: Self.callsInFlight.descriptor)
            .set(Double(shared.stats.callsInFlight.load(ordering: .relaxed)))
        registry.makeGauge(descriptor: Self.waitingForReader.descriptor)
            .set(Double(shared.stats.callsWaitingForReader.load(ordering: .relaxed)))
        registry.makeGauge(descriptor: Self.approvalsPending.descriptor).set(Double(shared.governance?.pending.count ?? 0))
        for (provider, pool) in shared.router.poolSnapshots {
            registry.makeGauge(descriptor: Self.upstreamRunning.descriptor, labels: [("provider", provider)])
                .set(Double(pool.running))
            registry.makeGauge(descriptor: Self.upstreamWaiting.descriptor, labels: [("provider", provider)])
                .set(Double(pool.waiting))
        }
        if let cluster = shared.resilience.clusterReport() {
            registry.makeGauge(descriptor: Self.clusterReachable.descriptor)
                .set(cluster["reachable"] as? Bool == true ? 1.0 : 0.0)
            registry.makeGauge(descriptor: Self.clusterLiveDaemons.descriptor)
                .set(Double(cluster["live_daemons"] as? Int ?? 0))
            let outages = cluster["outages"] as? Int ?? 0
            clusterOutagesSeen.withLock { last in
                let counter = registry.makeCounter(descriptor: Self.clusterOutages.descriptor)
                if outages > last { counter.increment(by: Int64(outages - last)) }
                last = max(last, outages)
            }
        }
        if let audit = shared.auditWriter?.statistics {
            // Counters hold what the writer reports: set by adding what changed since the last scrape.
            auditTotals.withLock { last in
                for (state, now) in [("written", audit.written), ("unwritten", audit.unwritten),
                                     ("dropped", audit.dropped)] {
                    let counter = registry.makeCounter(descriptor: Self.auditEntries.descriptor, labels: [("state", state)])
                    let delta = now - last[state, default: 0]
                    if delta > 0 { counter.increment(by: Int64(delta)) }
                    last[state] = now
                }
            }
        }
        return registry.emitToBuffer()
    }

    private let auditTotals = Mutex<[String: Int]>([:])
    private let clusterOutagesSeen = Mutex(0)
}

extension CallOutcome {
    /// The `outcome` label: `ok`, `cancelled`, `handed_back`, or the error code in lowercase.
    var metricName: String {
        switch self {
        case .answered: "ok"
        case .failed(let code): code.name.lowercased()
        case .cancelled: "cancelled"
        case .handedBack: "handed_back"
        }
    }
}
