import Synchronization

/// Live figures for STATUS= and the admin CLI; atomics so the hot path never takes a lock for them.
public final class DaemonStats: Sendable {
    public let connections = Atomic<Int>(0)
    public let callsInFlight = Atomic<Int>(0)
    public let callsStarted = Atomic<Int>(0)
    public let callsFailed = Atomic<Int>(0)
    public let protocolErrors = Atomic<Int>(0)
    /// Streamed calls whose provider is paused right now because their app is not reading (flow control).
    public let callsWaitingForReader = Atomic<Int>(0)
    /// Answer body bytes read from providers, all calls together: what flow control holds back shows here.
    public let upstreamBodyBytes = Atomic<Int>(0)
    /// Calls per second over the last heartbeat period (2 s), in thousandths; set by the heartbeat.
    let callsPerSecondMilli = Atomic<Int>(0)
    let startedAt = ContinuousClock.now

    var callsPerSecond: Double { Double(callsPerSecondMilli.load(ordering: .relaxed)) / 1000 }

    public init() {}

    public var statusLine: String {
        "connections: \(connections.load(ordering: .relaxed)), "
            + "calls in flight: \(callsInFlight.load(ordering: .relaxed)), "
            + "calls: \(callsStarted.load(ordering: .relaxed)), "
            + "failed: \(callsFailed.load(ordering: .relaxed))"
    }
}
