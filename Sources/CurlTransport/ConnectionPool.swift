import Synchronization

/// A cap on how many of an engine's transfers to one upstream (a provider) run at once; the rest wait in order,
/// in the engine, for one to finish.
///
/// libcurl has a per-host connection cap of its own (`CURLMOPT_MAX_HOST_CONNECTIONS`), but it is one number for
/// every host, and a transfer waiting under it is invisible: no count, and its `CURLOPT_TIMEOUT_MS` does not run.
/// A pool is per upstream, counts what waits, and holds a waiting transfer to its total limit (so a call's deadline
/// covers its wait, and the error says it was waiting for a connection).
///
/// Against HTTP/1.1 a running transfer holds one connection, so the limit is the upstream's `max_connections`;
/// against HTTP/2 it is `max_connections × max_concurrent_streams`. A pool belongs to one engine: its counts are
/// changed only within that engine's turns (which never overlap).
public final class ConnectionPool: Sendable {
    /// For error texts and status: the provider's name, never a URL.
    public let name: String
    private let limitValue: Atomic<Int>
    private let runningValue = Atomic<Int>(0)
    private let waitingValue = Atomic<Int>(0)
    private let waitedValue = Atomic<Int>(0)

    public init(name: String, limit: Int) {
        self.name = name
        self.limitValue = Atomic(max(1, limit))
    }

    /// The most transfers that run at once. Raising it lets waiting transfers start on the engine's next turn;
    /// lowering it lets running ones finish.
    public var limit: Int {
        get { limitValue.load(ordering: .relaxed) }
        set { limitValue.store(max(1, newValue), ordering: .relaxed) }
    }

    /// What the pool holds now, for status and metrics.
    public struct Snapshot: Sendable, Equatable {
        public var limit: Int
        /// Transfers running (each holding an HTTP/1.1 connection or an HTTP/2 stream).
        public var running: Int
        /// Transfers waiting for one of those to finish.
        public var waiting: Int
        /// Transfers that have had to wait, since the pool was made.
        public var waitedTotal: Int

        public init(limit: Int, running: Int, waiting: Int, waitedTotal: Int) {
            self.limit = limit
            self.running = running
            self.waiting = waiting
            self.waitedTotal = waitedTotal
        }
    }

    /// Transfers running now. Changed only within the engine's turns, so there it is exact.
    public var running: Int { runningValue.load(ordering: .relaxed) }

    public var snapshot: Snapshot {
        Snapshot(limit: limit, running: running,
                 waiting: waitingValue.load(ordering: .relaxed), waitedTotal: waitedValue.load(ordering: .relaxed))
    }

    // Engine-thread bookkeeping, mirrored in atomics so other threads can read it.
    func didStartRunning() { runningValue.add(1, ordering: .relaxed) }
    func didStopRunning() { runningValue.subtract(1, ordering: .relaxed) }
    func didStartWaiting() {
        waitingValue.add(1, ordering: .relaxed)
        waitedValue.add(1, ordering: .relaxed)
    }
    func didStopWaiting() { waitingValue.subtract(1, ordering: .relaxed) }
}
