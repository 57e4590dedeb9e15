/// What went wrong talking to a provider, in terms the daemon maps to protocol error codes.
///
/// Messages are built from status codes and the provider's error type/code only, never from prompts, completions
/// or headers, so they are safe to send to the app and to log.
public struct ProviderError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// The app's request is unusable (not JSON, no messages).
        case badRequest
        /// The provider answered with an error status.
        case upstreamStatus(Int)
        /// The provider's answer could not be understood.
        case malformedResponse
    }

    public var kind: Kind
    public var message: String
    /// The provider's own error type and code, e.g. `rate_limit_exceeded`, when it sent them.
    public var providerCode: String?

    public init(_ kind: Kind, _ message: String, providerCode: String? = nil) {
        self.kind = kind
        self.message = message
        self.providerCode = providerCode
    }

    public var description: String { message }
}
