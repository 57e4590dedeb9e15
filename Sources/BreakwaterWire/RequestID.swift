import Synchronization

/// Request ids for calls whose app gave none (made by the client shim, so a call sent again after a daemon restart
/// keeps its id; or by the daemon for clients that send none): `bw-`, 8 hex digits drawn once per process, and a
/// counter, so ids are unique across processes and restarts without a random-number syscall per call.
public enum RequestID {
    private static let prefix: String = {
        var rng = SystemRandomNumberGenerator()
        return hex(UInt64(truncatingIfNeeded: rng.next() as UInt32), digits: 8)
    }()
    private static let counter = Atomic<UInt64>(0)

    public static func make() -> String {
        let n = counter.add(1, ordering: .relaxed).newValue
        return "bw-" + prefix + hex(n, digits: 8)
    }

    private static func hex(_ n: UInt64, digits: Int) -> String {
        let s = String(n, radix: 16)
        return s.count >= digits ? s : String(repeating: "0", count: digits - s.count) + s
    }
}
