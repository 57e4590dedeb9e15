import Foundation

/// Encodes and decodes a value the way a state store would (JSON), to prove snapshots are plain Codable data.
enum JSONRoundTrip {
    static func roundTrip<T: Codable>(_ value: T) throws -> T {
        try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
    }
}
