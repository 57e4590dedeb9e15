#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Nanoseconds on the monotonic clock, as plain integers: the loop compares and subtracts them for every
/// transfer on every turn, so they are kept cheaper than `ContinuousClock.Instant`.
enum MonotonicClock {
    static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
    }
}

extension Duration {
    /// The duration in whole nanoseconds, clamped to `0...UInt64.max / 2`.
    var clampedNanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) {
            return 0
        }
        let limit = UInt64.max / 2
        if seconds >= Int64(limit / 1_000_000_000) {
            return limit
        }
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    /// The duration in whole milliseconds, rounded up so a limit is never shortened, and at least 1 so that
    /// libcurl does not read it as "no limit".
    var curlMilliseconds: Int {
        let nanoseconds = clampedNanoseconds
        let milliseconds = (nanoseconds + 999_999) / 1_000_000
        return Int(clamping: max(milliseconds, 1))
    }
}
