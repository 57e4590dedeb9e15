import Config
import Foundation
import Governance

/// Everything the daemon reads from files at start-up and again on SIGHUP: the config, the policy it names (or
/// the one given with `--policy`), and — through `Router` — the provider keys from `$CREDENTIALS_DIRECTORY` and
/// the environment.
public struct DaemonSettings: Sendable {
    public var config: BreakwaterConfig
    public var policy: GovernancePolicy?
    public var policyPath: String?

    /// Where the settings come from; kept so a reload reads the same files.
    public struct Sources: Sendable {
        /// Nil: built-in defaults.
        public var configPath: String?
        /// `--policy`, which overrides the config's `policy:`.
        public var policyOverride: String?

        public init(configPath: String?, policyOverride: String?) {
            self.configPath = configPath
            self.policyOverride = policyOverride
        }

        /// Reads and checks every file; the first file with errors throws all of its errors.
        public func load() throws(ConfigError) -> DaemonSettings {
            var config = try configPath.map { path throws(ConfigError) in try ConfigLoader.load(file: path) }
                ?? .defaults
            // The daemon's own user may always administer it: it could stop or restart it anyway.
            config.admins.uids.insert(getuid())
            let policyPath = policyOverride ?? config.policyPath
            let policy = try policyPath.map { path throws(ConfigError) in try PolicyLoader.load(file: path) }
            if let policy {
                for agent in config.http.metricsAgents.sorted() where policy.agents[agent] == nil {
                    throw ConfigError(issues: [ConfigIssue(
                        file: configPath ?? "<config>", line: 0, column: 0,
                        message: "http.metrics_agents names agent \"\(agent)\", which the policy does not define")])
                }
            }
            if let cluster = policy?.clusterBudgets, !cluster.isEmpty, config.cluster == nil {
                throw ConfigError(issues: [ConfigIssue(
                    file: policyPath ?? "<policy>", line: 0, column: 0,
                    message: "\(cluster.joined(separator: ", ")) \(cluster.count == 1 ? "has" : "have") scope cluster, "
                        + "which needs a cluster: section in the config (the store that holds them)")])
            }
            if config.http.tcpListen != nil, policy == nil {
                throw ConfigError(issues: [ConfigIssue(
                    file: configPath ?? "<config>", line: 0, column: 0,
                    message: "http.tcp needs a policy: TCP has no peer credentials, so every call on it must "
                        + "present an agent token, and only a policy defines agents")])
            }
            return DaemonSettings(config: config, policy: policy, policyPath: policyPath)
        }
    }
}
