import Config
import Fleet
import Foundation
import Resilience

/// What the daemon knows of the cluster store: the client (its thread and connection), whether the store
/// answers, and how many daemons it last counted. Kept inside the resilience registry's state, under its lock,
/// so a call's key decision reads it for free.
struct ClusterLink: Sendable {
    let client: FleetClient
    /// The store's address as logs and audit entries show it (never a password).
    let store: String
    /// `cluster.fallback_share`; nil: one over the live daemons.
    let configuredShare: Double?
    var reachable = true
    var liveDaemons = 1
    /// Since when the store has been unreachable.
    var degradedSince: Instant?
    /// How many times the store was lost since start.
    var outages = 0
    /// Per provider: the store's key names by key index, and the rate they run at.
    var keys: [String: (names: [String], rate: FleetRate)] = [:]
    /// When each key's remaining count was last told to the store.
    var remainingToldAt: [String: Instant] = [:]

    /// The share of a cluster limit this daemon takes while the store is down.
    var share: Double { configuredShare ?? 1 / Double(max(1, liveDaemons)) }

    /// Starts the client for `config`. The password comes from the credential `password_credential` under
    /// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`), never the config file.
    static func start(_ config: ClusterConfig, environment: [String: String],
                      onHealth: @escaping @Sendable (FleetHealth) -> Void) throws -> ClusterLink {
        let endpoint: RedisEndpoint
        switch RedisEndpoint.parse(config.redis) {
        case .success(let e): endpoint = e
        case .failure(let why): throw ClusterStartError(message: "cluster.redis: " + why.message)
        }
        var password: String?
        if let name = config.passwordCredential {
            guard let secret = CredentialResolver.credential(name, environment: environment) else {
                throw ClusterStartError(message: "cluster.password_credential \"\(name)\" is not a readable, "
                    + "non-empty credential (LoadCredential=\(name):...)")
            }
            password = secret.value
        }
        let id = config.daemonID ?? ProcessInfo.processInfo.hostName + "-" + String(getpid())
        let client = try FleetClient(
            settings: FleetSettings(endpoint: endpoint, password: password, keyPrefix: config.keyPrefix,
                                    timeout: config.timeout, daemonID: id),
            onHealth: onHealth)
        return ClusterLink(client: client, store: endpoint.description, configuredShare: config.fallbackShare)
    }
}

struct ClusterStartError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
