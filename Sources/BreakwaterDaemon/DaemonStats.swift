import Synchronization

/// Live figures for STATUS= and the admin CLI; atomics so the hot path never takes a lock for them.
public final class DaemonStats: Sendable {
    public let connections = Atomic<Int>(0)
    public let callsInFlight = Atomic<Int>(0)
    public let callsStarted = Atomic<Int>(0)
    public let callsFailed = Atomic<Int>(0)
    public let protocolErrors = Atomic<Int>(0)

    public init() {}

    public var statusLine: String {
        "connections: \(connections.load(ordering: .relaxed)), "
            + "calls in flight: \(callsInFlight.load(ordering: .relaxed)), "
            + "calls: \(callsStarted.load(ordering: .relaxed)), "
            + "failed: \(callsFailed.load(ordering: .relaxed))"
    }
}
