import Foundation

/// A secret string (an API key). Printing it shows nothing, so it cannot slip into a log line by accident.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

/// Finds provider API keys: first `$CREDENTIALS_DIRECTORY/<api_key_credential>` (systemd `LoadCredential=`), then
/// the environment variable `api_key_env`. Never the config file.
public enum CredentialResolver {
    public static func apiKey(for provider: ProviderConfig,
                              environment: [String: String] = ProcessInfo.processInfo.environment) -> Secret? {
        key(KeySource(credential: provider.apiKeyCredential, env: provider.apiKeyEnv), environment: environment)
    }

    /// Every key the provider has, in order: the first (`api_key_credential`/`api_key_env`), then `api_keys:`.
    /// Keys that cannot be found are left out.
    public static func apiKeys(for provider: ProviderConfig,
                               environment: [String: String] = ProcessInfo.processInfo.environment) -> [Secret] {
        ([KeySource(credential: provider.apiKeyCredential, env: provider.apiKeyEnv)] + provider.additionalKeys)
            .compactMap { key($0, environment: environment) }
    }

    /// The credential names of `provider` whose file is there but cannot be read as text (a directory, no
    /// permission, not UTF-8): a configuration error the admin must fix, reported by name, never by content.
    /// Such a key falls back to `api_key_env`, or counts as missing: calls then skip that provider with
    /// NO_CREDENTIAL, and nothing is retried or counted against it.
    public static func unreadableCredentials(for provider: ProviderConfig,
                                             environment: [String: String] = ProcessInfo.processInfo.environment)
        -> [String] {
        guard let dir = environment["CREDENTIALS_DIRECTORY"] else { return [] }
        let names = ([provider.apiKeyCredential] + provider.additionalKeys.map(\.credential)).compactMap { $0 }
        return names.filter { name in
            let path = dir + "/" + name
            return FileManager.default.fileExists(atPath: path)
                && (try? String(contentsOfFile: path, encoding: .utf8)) == nil
        }
    }

    /// The secret in `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`), trimmed; nil when it is missing,
    /// unreadable or empty. For secrets other than API keys (the cluster store's password).
    public static func credential(_ name: String,
                                  environment: [String: String] = ProcessInfo.processInfo.environment) -> Secret? {
        key(KeySource(credential: name), environment: environment)
    }

    static func key(_ source: KeySource, environment: [String: String]) -> Secret? {
        if let name = source.credential, let dir = environment["CREDENTIALS_DIRECTORY"],
           let text = try? String(contentsOfFile: dir + "/" + name, encoding: .utf8) {
            let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if !key.isEmpty { return Secret(key) }
        }
        if let env = source.env, let key = environment[env]?.trimmingCharacters(in: .whitespacesAndNewlines),
           !key.isEmpty {
            return Secret(key)
        }
        return nil
    }
}
