/// Why the fake provider could not start or could not load its configuration.
///
/// A struct around a private code, so cases can be added without breaking callers.
public struct FakeProviderError: Error, Sendable, Equatable, CustomStringConvertible {
    private enum Code: Sendable, Equatable {
        case invalidPersonality(String)
        case noLocalAddress
    }

    private let code: Code

    /// The personality (file, JSON or values) is not usable; the reason says what is wrong.
    public static func invalidPersonality(_ reason: String) -> FakeProviderError {
        FakeProviderError(code: .invalidPersonality(reason))
    }

    /// The listening socket reported no port.
    public static let noLocalAddress = FakeProviderError(code: .noLocalAddress)

    public var description: String {
        switch code {
        case .invalidPersonality(let reason): "invalid personality: \(reason)"
        case .noLocalAddress: "the listening socket has no local address"
        }
    }
}
