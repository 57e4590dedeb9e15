import Fleet
import Foundation
import Resilience
import Yams

/// One problem in a config file, with where it is.
public struct ConfigIssue: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public var description: String { "\(file):\(line):\(column): \(message)" }

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }
}

/// Every problem found in a config file; thrown only after the whole file has been checked.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var issues: [ConfigIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }

    public init(issues: [ConfigIssue]) {
        self.issues = issues
    }
}

/// Reads the YAML config. Walks Yams' node tree (not Codable) so every error can point at its line and column,
/// and so all errors in a file are reported at once rather than the first one only.
public enum ConfigLoader {
    public static func load(file path: String) throws(ConfigError) -> BreakwaterConfig {
        try parse(NodeReader.readFile(path), file: path)
    }

    public static func parse(_ yaml: String, file: String = "<config>") throws(ConfigError) -> BreakwaterConfig {
        var (reader, root) = try NodeReader.compose(yaml, file: file)
        var config = BreakwaterConfig.defaults
        if let root { reader.readRoot(root, into: &config) }
        if !reader.issues.isEmpty { throw ConfigError(issues: reader.issues) }
        return config
    }
}


/// The config file's sections.
extension NodeReader {
    mutating func readRoot(_ root: Node, into config: inout BreakwaterConfig) {
        let rootKeys: Set = ["socket", "limits", "providers", "routes", "admins", "policy", "http", "cluster"]
        for (key, _, value) in entries(root, "config", allowed: rootKeys) {
            switch key {
            case "policy":
                config.policyPath = string(value, "policy")
            case "admins":
                config.admins = peerSet(value, "admins")
            case "socket":
                config.socketPath = string(value, "socket")
            case "limits":
                readLimits(value, into: &config.limits)
            case "http":
                readHTTP(value, into: &config.http)
            case "cluster":
                config.cluster = readCluster(value)
            case "providers":
                config.providers = [:]
                for (name, _, p) in entries(value, "providers") {
                    if let provider = readProvider(p, name: name) { config.providers[name] = provider }
                }
            case "routes":
                config.routes = [:]
                for (name, _, r) in entries(value, "routes") {
                    config.routes[name] = readRoute(r, name: name)
                }
            default:
                break
            }
        }
        // Cross-checks, each pointing at the offending node.
        if config.cluster == nil, root.mapping?["cluster"] == nil, let providers = root.mapping?["providers"]?.mapping {
            for (nameNode, p) in providers where config.providers[nameNode.string ?? ""]?.rateLimits.scope == .cluster {
                issue(p.mapping?["rate_limits"]?.mapping?["scope"] ?? nameNode,
                      "provider \"\(nameNode.string ?? "?")\" has rate_limits scope cluster, which needs a cluster: "
                          + "section naming the cluster store (redis: redis://HOST:PORT)")
            }
        }
        if let routes = root.mapping?["routes"]?.mapping {
            for (nameNode, routeNode) in routes {
                let name = nameNode.string ?? "?"
                let chain = routeNode.mapping?["targets"] ?? routeNode
                if chain.sequence?.isEmpty == true { issue(chain, "route \"\(name)\" has no targets") }
                for target in chain.sequence ?? [] {
                    guard let providerNode = target.mapping?["provider"], let p = providerNode.string else { continue }
                    if config.providers[p] == nil {
                        issue(providerNode, "route \"\(name)\" names provider \"\(p)\", which is not configured")
                    }
                }
            }
        } else if root.mapping?["providers"] != nil {
            for (name, route) in config.routes {
                for t in route.targets where config.providers[t.provider] == nil {
                    issue(root.mapping?["providers"], "default route \"\(name)\" needs provider \"\(t.provider)\"")
                }
            }
        }
    }

    mutating func readLimits(_ node: Node, into limits: inout LimitsConfig) {
        let keys: Set = ["max_frame_bytes", "max_body_bytes", "max_concurrent_calls", "drain_timeout",
                         "default_call_timeout", "hello_timeout", "frame_timeout", "max_connections",
                         "max_connections_per_uid", "upstream_connections_per_host", "upstream_connections",
                         "stream_coalescing_window"]
        for (key, _, v) in entries(node, "limits", allowed: keys) {
            switch key {
            case "max_frame_bytes": if let n = count(v, key, min: 1024) { limits.maxFrameBytes = n }
            case "max_body_bytes": if let n = count(v, key, min: 1) { limits.maxBodyBytes = n }
            case "max_concurrent_calls": if let n = count(v, key, min: 1) { limits.maxConcurrentCalls = n }
            case "drain_timeout": if let d = duration(v, key) { limits.drainTimeout = d }
            case "default_call_timeout": if let d = duration(v, key) { limits.defaultCallTimeout = d }
            case "hello_timeout": if let d = duration(v, key) { limits.helloTimeout = d }
            case "frame_timeout": if let d = duration(v, key) { limits.frameTimeout = d }
            case "max_connections": if let n = count(v, key, min: 1) { limits.maxConnections = n }
            case "max_connections_per_uid": if let n = count(v, key, min: 1) { limits.maxConnectionsPerUID = n }
            case "upstream_connections_per_host":
                if let n = count(v, key, min: 1) { limits.upstreamConnectionsPerHost = n }
            case "upstream_connections": if let n = count(v, key, min: 1) { limits.upstreamConnections = n }
            case "stream_coalescing_window":
                guard let d = duration(v, key, allowZero: true) else { break }
                guard d <= LimitsConfig.maximumStreamCoalescingWindow else {
                    issue(v, "\(key) must be at most 100ms (0s turns it off): every chunk, answer and new request "
                          + "waits up to this long while 256 or more calls are open")
                    break
                }
                limits.streamCoalescingWindow = d
            default: break
            }
        }
    }

    mutating func readCluster(_ node: Node) -> ClusterConfig? {
        let keys: Set = ["redis", "password_credential", "key_prefix", "timeout", "daemon_id", "fallback_share"]
        var cluster = ClusterConfig(redis: "")
        var ok = true
        for (key, _, v) in entries(node, "cluster", allowed: keys) {
            switch key {
            case "redis":
                guard let text = string(v, "cluster.redis") else { ok = false; continue }
                if let problem = RedisEndpoint.problem(text) {
                    issue(v, "cluster.redis: " + problem)
                    ok = false
                }
                cluster.redis = text
            case "password_credential":
                if let name = string(v, "cluster.password_credential") { cluster.passwordCredential = name }
            case "key_prefix":
                if let text = string(v, "cluster.key_prefix") { cluster.keyPrefix = text }
            case "timeout":
                if let d = duration(v, "cluster.timeout") { cluster.timeout = d }
            case "daemon_id":
                if let text = string(v, "cluster.daemon_id") { cluster.daemonID = text }
            case "fallback_share":
                guard let x = v.float, x > 0, x <= 1 else {
                    issue(v, "cluster.fallback_share must be a share of the cluster limit more than 0 and at most 1, "
                             + "such as 0.25")
                    ok = false
                    continue
                }
                cluster.fallbackShare = x
            default: break
            }
        }
        if cluster.redis.isEmpty, node.mapping?["redis"] == nil {
            issue(node, "cluster needs redis: the cluster store, like redis://127.0.0.1:6379 or "
                        + "unix:///run/redis/redis.sock")
            ok = false
        }
        return ok ? cluster : nil
    }

    mutating func readHTTP(_ node: Node, into http: inout HTTPFrontConfig) {
        let keys: Set = ["socket", "tcp", "request_timeout", "idle_timeout", "metrics", "metrics_agents"]
        for (key, _, v) in entries(node, "http", allowed: keys) {
            switch key {
            case "socket": http.socketPath = string(v, "http.socket")
            case "tcp":
                guard let text = string(v, "http.tcp") else { break }
                if let listen = Self.loopbackListen(text) {
                    http.tcpListen = listen
                } else {
                    issue(v, "http.tcp must be a loopback address and port, like 127.0.0.1:8080 or [::1]:8080 "
                             + "(the HTTP front is for this host only), got \"\(text)\"")
                }
            case "metrics_agents":
                guard let list = v.sequence else {
                    issue(v, "http.metrics_agents must be a list of agent ids")
                    break
                }
                for item in list {
                    if let id = string(item, "http.metrics_agents") { http.metricsAgents.insert(id) }
                }
            case "request_timeout": if let d = duration(v, key) { http.requestTimeout = d }
            case "idle_timeout": if let d = duration(v, key) { http.idleTimeout = d }
            case "metrics":
                guard let text = string(v, "http.metrics") else { break }
                if let access = HTTPFrontConfig.MetricsAccess(rawValue: text) {
                    http.metrics = access
                } else {
                    issue(v, "http.metrics must be one of: "
                             + HTTPFrontConfig.MetricsAccess.allCases.map(\.rawValue).joined(separator: ", "))
                }
            default: break
            }
        }
    }

    /// `127.0.0.1:8080`, `localhost:8080` or `[::1]:8080` (port 1–65535); nil for anything off the loopback.
    static func loopbackListen(_ text: String) -> HTTPFrontConfig.TCPListen? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        let host = String(text[..<colon])
        switch host {
        case "127.0.0.1", "localhost": return .init(host: "127.0.0.1", port: port)
        case "[::1]": return .init(host: "::1", port: port)
        default: return nil
        }
    }

    mutating func readProvider(_ node: Node, name: String) -> ProviderConfig? {
        let keys: Set = ["kind", "base_url", "api_key", "api_key_credential", "api_key_env", "http_version",
                         "timeouts", "ca_file", "api_version", "retry_config", "circuit_breaker", "retry_budget",
                         "rate_limits", "api_keys", "max_connections", "max_concurrent_streams"]
        var kind: ProviderConfig.Kind?
        var baseURL: String?
        var provider = ProviderConfig(kind: .openai, baseURL: "")
        var ok = true
        for (key, keyNode, v) in entries(node, "provider \"\(name)\"", allowed: keys) {
            switch key {
            case "kind":
                guard let s = string(v, key) else { ok = false; continue }
                kind = ProviderConfig.Kind(rawValue: s)
                if kind == nil {
                    issue(v, "provider \"\(name)\": unknown kind \"\(s)\" (supported: "
                        + ProviderConfig.Kind.allCases.map(\.rawValue).joined(separator: ", ") + ")")
                    ok = false
                }
            case "base_url":
                baseURL = string(v, key)
                if let u = baseURL, !(u.hasPrefix("http://") || u.hasPrefix("https://")) {
                    issue(v, "provider \"\(name)\": base_url must start with http:// or https://")
                    ok = false
                }
            case "api_key":
                // The value is deliberately not echoed.
                issue(keyNode, "provider \"\(name)\": API keys never go in the config file; use api_key_credential "
                    + "(a systemd credential) or api_key_env")
                ok = false
            case "api_key_credential":
                provider.apiKeyCredential = string(v, key)
                if let c = provider.apiKeyCredential, c.contains("/") || c.isEmpty {
                    issue(v, "provider \"\(name)\": api_key_credential is a file name, not a path")
                    ok = false
                }
            case "api_key_env":
                provider.apiKeyEnv = string(v, key)
            case "http_version":
                let s = v.string ?? ""
                if let h = ProviderConfig.HTTPVersion(rawValue: s) {
                    provider.httpVersion = h
                } else {
                    issue(v, "provider \"\(name)\": http_version must be one of "
                        + ProviderConfig.HTTPVersion.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))
                    ok = false
                }
            case "timeouts":
                readTimeouts(v, into: &provider.timeouts, provider: name)
            case "rate_limits":
                let what = "provider \"\(name)\" rate_limits"
                for (k, _, lv) in entries(v, what, allowed: ["rpm", "tpm", "burst_seconds", "scope"]) {
                    switch k {
                    case "scope":
                        guard let text = string(lv, "\(what) scope") else { continue }
                        if let scope = KeyPool.Limits.Scope(rawValue: text) {
                            provider.rateLimits.scope = scope
                        } else {
                            issue(lv, "\(what) scope must be host (this daemon's own limit) or cluster (shared by "
                                      + "every daemon through cluster:), not \"\(text)\"")
                        }
                    case "burst_seconds":
                        guard let x = lv.float, x > 0, x <= 60 else {
                            issue(lv, "\(what) burst_seconds must be a number of seconds more than 0 and at most 60")
                            continue
                        }
                        provider.rateLimits.burstSeconds = x
                    default:
                        guard let n = count(lv, k, min: 1) else { continue }
                        if k == "rpm" { provider.rateLimits.rpm = Int(n) } else { provider.rateLimits.tpm = Int(n) }
                    }
                }
            case "api_keys":
                guard let seq = v.sequence else {
                    issue(v, "api_keys must be a list of {credential: NAME} or {env: VARIABLE}")
                    continue
                }
                for item in seq {
                    var source = KeySource()
                    for (k, _, kv) in entries(item, "provider \"\(name)\" api_keys", allowed: ["credential", "env"]) {
                        if k == "credential" { source.credential = string(kv, k) } else { source.env = string(kv, k) }
                    }
                    if source.credential == nil && source.env == nil {
                        issue(item, "provider \"\(name)\": each api_keys entry needs credential or env")
                    } else {
                        provider.additionalKeys.append(source)
                    }
                }
            case "max_connections":
                if let n = count(v, "provider \"\(name)\": max_connections", min: 1) { provider.maxConnections = n }
            case "max_concurrent_streams":
                if let n = count(v, "provider \"\(name)\": max_concurrent_streams", min: 1) {
                    provider.maxConcurrentStreams = n
                }
            case "api_version":
                provider.apiVersion = string(v, key)
            case "retry_config":
                readRetry(v, into: &provider, name: name)
            case "circuit_breaker":
                readBreaker(v, into: &provider.breaker, name: name)
            case "retry_budget":
                readBudget(v, into: &provider.retryBudget, name: name)
            case "ca_file":
                provider.caFile = string(v, key)
                if let f = provider.caFile, !f.hasPrefix("/") {
                    issue(v, "provider \"\(name)\": ca_file must be an absolute path")
                    ok = false
                }
            default:
                break
            }
        }
        if kind == nil, ok, node.mapping?["kind"] == nil {
            issue(node, "provider \"\(name)\" needs a kind")
            ok = false
        }
        if baseURL == nil, node.mapping?["base_url"] == nil {
            issue(node, "provider \"\(name)\" needs a base_url")
            ok = false
        }
        guard ok, let kind, let baseURL else { return nil }
        provider.kind = kind
        provider.baseURL = baseURL
        return provider
    }

    mutating func readTimeouts(_ node: Node, into t: inout TimeoutsConfig, provider: String) {
        for (key, _, v) in entries(node, "provider \"\(provider)\" timeouts",
                                   allowed: ["connect", "first_byte", "idle", "total"]) {
            guard let d = duration(v, key) else { continue }
            switch key {
            case "connect": t.connect = d
            case "first_byte": t.firstByte = d
            case "idle": t.idle = d
            case "total": t.total = d
            default: break
            }
        }
    }

    /// A route is a list of targets, or a mapping with `targets` and `fallback_on`.
    mutating func readRoute(_ node: Node, name: String) -> RouteConfig {
        var fallback = FallbackPolicy()
        var chainNode = node
        if node.mapping != nil {
            var targets: Node?
            for (key, _, v) in entries(node, "route \"\(name)\"", allowed: ["targets", "fallback_on"]) {
                if key == "targets" { targets = v } else if let kinds = failureKinds(v, "fallback_on") {
                    fallback.fallbackOn = kinds
                }
            }
            guard let targets else {
                issue(node, "route \"\(name)\" needs targets")
                return RouteConfig(targets: [])
            }
            chainNode = targets
        }
        guard let seq = chainNode.sequence else {
            issue(chainNode, "route \"\(name)\" must be a list of targets")
            return RouteConfig(targets: [])
        }
        var chain: [RouteTarget] = []
        for item in seq {
            var provider: String?
            var model: String?
            for (key, _, v) in entries(item, "route \"\(name)\" target", allowed: ["provider", "model"]) {
                if key == "provider" { provider = string(v, key) } else { model = string(v, key) }
            }
            guard item.mapping != nil else { continue }
            if provider == nil { issue(item, "route \"\(name)\": target needs a provider") }
            if model == nil { issue(item, "route \"\(name)\": target needs a model") }
            if let provider, let model { chain.append(RouteTarget(provider: provider, model: model)) }
        }
        return RouteConfig(targets: chain, fallback: fallback)
    }

    mutating func failureKinds(_ node: Node, _ key: String) -> Set<FailureKind>? {
        guard let seq = node.sequence else {
            issue(node, "\(key) must be a list of: " + FailureKind.allCases.map(\.rawValue).joined(separator: ", "))
            return nil
        }
        var kinds: Set<FailureKind> = []
        for item in seq {
            guard let s = item.string, let kind = FailureKind(rawValue: s) else {
                issue(item, "\(key): unknown failure kind (expected one of: "
                    + FailureKind.allCases.map(\.rawValue).joined(separator: ", ") + ")")
                continue
            }
            kinds.insert(kind)
        }
        return kinds
    }

    mutating func readRetry(_ node: Node, into provider: inout ProviderConfig, name: String) {
        let keys: Set = ["retryable_status_codes", "non_retryable_error_codes", "retry_count", "backoff_strategy",
                         "backoff_base", "backoff_max", "jitter", "respect_rate_limits", "max_retry_wait"]
        for (key, _, v) in entries(node, "provider \"\(name)\" retry_config", allowed: keys) {
            switch key {
            case "retryable_status_codes":
                guard let seq = v.sequence else {
                    issue(v, "retryable_status_codes must be a list of HTTP status codes")
                    continue
                }
                var codes: Set<Int> = []
                for item in seq {
                    guard let c = item.int, (100...599).contains(c) else {
                        issue(item, "retryable_status_codes: \(item.string ?? "?") is not an HTTP status code")
                        continue
                    }
                    codes.insert(c)
                }
                provider.classifier.retryableStatusCodes = codes
            case "non_retryable_error_codes":
                provider.classifier.nonRetryableErrorCodes = Set((v.sequence ?? []).compactMap(\.string))
                if v.sequence == nil { issue(v, "non_retryable_error_codes must be a list of provider error codes") }
            case "retry_count":
                if let n = count(v, key, min: 0) { provider.retry.retryCount = Int(n) }
            case "backoff_strategy":
                if let s = v.string, let strategy = RetryPolicy.BackoffStrategy(rawValue: s) {
                    provider.retry.backoffStrategy = strategy
                } else {
                    issue(v, "backoff_strategy must be exponential or constant")
                }
            case "backoff_base": if let d = duration(v, key) { provider.retry.backoffBase = d }
            case "backoff_max": if let d = duration(v, key) { provider.retry.backoffMax = d }
            case "max_retry_wait": if let d = duration(v, key, allowZero: true) { provider.retry.maxRetryWait = d }
            case "jitter": if let b = bool(v, key) { provider.retry.jitter = b }
            case "respect_rate_limits": if let b = bool(v, key) { provider.retry.respectRateLimits = b }
            default: break
            }
        }
    }

    mutating func readBreaker(_ node: Node, into b: inout BreakerPolicy, name: String) {
        let keys: Set = ["enabled", "failure_threshold", "rolling_window", "failure_rate_threshold",
                         "minimum_calls", "timeout_period", "half_open_max_calls", "success_threshold",
                         "slow_call_threshold", "alert_failure_rate"]
        for (key, _, v) in entries(node, "provider \"\(name)\" circuit_breaker", allowed: keys) {
            switch key {
            case "enabled": if let e = bool(v, key) { b.enabled = e }
            case "failure_threshold": if let n = count(v, key, min: 1) { b.failureThreshold = Int(n) }
            case "rolling_window": if let d = duration(v, key) { b.rollingWindow = d }
            case "failure_rate_threshold": if let r = fraction(v, key) { b.failureRateThreshold = r }
            case "minimum_calls": if let n = count(v, key, min: 1) { b.minimumCalls = Int(n) }
            case "timeout_period": if let d = duration(v, key) { b.timeoutPeriod = d }
            case "half_open_max_calls": if let n = count(v, key, min: 1) { b.halfOpenMaxCalls = Int(n) }
            case "success_threshold": if let n = count(v, key, min: 1) { b.successThreshold = Int(n) }
            case "slow_call_threshold": if let d = duration(v, key) { b.slowCallThreshold = d }
            case "alert_failure_rate": if let r = fraction(v, key) { b.alertFailureRate = r }
            default: break
            }
        }
    }

    mutating func readBudget(_ node: Node, into b: inout RetryBudgetSettings, name: String) {
        for (key, _, v) in entries(node, "provider \"\(name)\" retry_budget",
                                   allowed: ["ratio", "min_retries_per_second", "window"]) {
            switch key {
            case "ratio": if let r = fraction(v, key) { b.ratio = r }
            case "min_retries_per_second":
                if let x = v.float, x >= 0 { b.minRetriesPerSecond = x } else {
                    issue(v, "min_retries_per_second must be a number ≥ 0")
                }
            case "window": if let d = duration(v, key) { b.window = d }
            default: break
            }
        }
    }
}
