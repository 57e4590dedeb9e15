/// Request ids for calls whose app gave none: `bw-` and 16 hex digits from the system's random source.
enum RequestID {
    static func make() -> String {
        var rng = SystemRandomNumberGenerator()
        let n = rng.next() as UInt64
        let hex = String(n, radix: 16)
        return "bw-" + String(repeating: "0", count: 16 - hex.count) + hex
    }
}
