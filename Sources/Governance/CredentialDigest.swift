import Crypto

/// The SHA-256 of a token: the only form in which Breakwater keeps a credential. It prints as nothing useful, and
/// two digests compare in constant time, so neither a log line nor response timing tells anything about a token.
public struct CredentialDigest: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable {
    let bytes: [UInt8]

    /// Hashes a token as presented (the raw bytes of HELLO's credential field).
    public init(hashing token: some Sequence<UInt8>) {
        bytes = Array(SHA256.hash(data: Array(token)))
    }

    /// Reads a policy file's `token_sha256`: 64 hexadecimal digits, either case.
    public init?(hex: String) {
        let digits = Array(hex.utf8)
        guard digits.count == 64 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var i = 0
        while i < 64 {
            guard let hi = Self.nibble(digits[i]), let lo = Self.nibble(digits[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        bytes = out
    }

    /// Lower-case hex, the form `token_sha256` takes in the policy file.
    public var hex: String {
        let table = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in bytes {
            out.append(table[Int(b >> 4)])
            out.append(table[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// What an admin writes in the policy as `token_sha256` for a token they have just generated.
    public static func policyValue(forToken token: String) -> String {
        CredentialDigest(hashing: Array(token.utf8)).hex
    }

    /// Constant-time comparison: every byte is looked at whatever the first difference.
    public static func == (a: CredentialDigest, b: CredentialDigest) -> Bool {
        guard a.bytes.count == b.bytes.count else { return false }
        var diff: UInt8 = 0
        for i in a.bytes.indices { diff |= a.bytes[i] ^ b.bytes[i] }
        return diff == 0
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(bytes) }

    public var description: String { "<credential digest>" }
    public var debugDescription: String { "<credential digest>" }
    public var customMirror: Mirror { Mirror(self, children: [:]) }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// A token as presented by a client (an agent credential or a step-up credential). It never prints, so a request
/// carrying one can be logged or shown in a failed test without leaking it.
public struct PresentedToken: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public init(_ text: String) { bytes = Array(text.utf8) }

    var digest: CredentialDigest { CredentialDigest(hashing: bytes) }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [:]) }
}
