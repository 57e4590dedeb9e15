import Synchronization

/// Whether the app is taking a call's answer: the call's credit (PROTOCOL.md, "Flow control") and whether its
/// connection's write buffer is full. Shared by the connection's event loop, which grants credit and reports the
/// buffer, and the curl engine's delegate callbacks, which spend credit as they make DATA frames and pause the
/// transfer (`TransferDelegate.transferShouldPause`) while the app is behind. So the daemon stops reading the
/// provider within one chunk of the app falling behind, without a hop to the event loop first.
///
/// Written by hand: this is the small lock-free hand-off between two threads that pausing needs; nothing in NIO
/// or libcurl keeps per-stream credit for a transfer.
final class ReaderFlow: Sendable {
    // Every access is sequentially consistent: each side writes its own flag or count and then reads the other's
    // (a store then a load), which acquire/release ordering does not keep in order.

    /// Credit when the client does no flow control: never runs out (only the write buffer pauses the call).
    static let unlimited = Int.max / 2

    /// Bytes of DATA the daemon may still send on the call; below zero after a chunk that overshot.
    private let credit: Atomic<Int>
    /// The connection's write buffer is over its high-water mark.
    private let blocked: Atomic<Bool>
    /// The engine thread paused the current transfer for this, and nobody has resumed it since.
    private let parked = Atomic<Bool>(false)
    /// The call ended: a late chunk of its transfer (before the engine sees the cancel) is not paused.
    private let ended = Atomic<Bool>(false)
    /// Counts calls parked right now (`status`: calls waiting for their reader).
    private let stats: DaemonStats

    init(window: Int?, blocked: Bool, stats: DaemonStats) {
        credit = Atomic(window ?? Self.unlimited)
        self.blocked = Atomic(blocked)
        self.stats = stats
    }

    private var mustPause: Bool {
        blocked.load(ordering: .sequentiallyConsistent) || credit.load(ordering: .sequentiallyConsistent) <= 0
    }

    /// Engine thread, before a chunk is handed over: whether to pause instead.
    func shouldPause() -> Bool {
        guard mustPause, !ended.load(ordering: .sequentiallyConsistent) else { return false }
        if !parked.exchange(true, ordering: .sequentiallyConsistent) {
            stats.callsWaitingForReader.add(1, ordering: .relaxed)
        }
        if ended.load(ordering: .sequentiallyConsistent) {
            _ = unpark()
            return false
        }
        if mustPause { return true }
        // Credit or room came while parking. Whoever clears the flag owns the wake-up: if it was us, go on now;
        // if the event loop got there first, it has asked the engine to resume, so pausing is safe too.
        guard unpark() else { return true }
        return false
    }

    /// Clears the parked flag; true when this call did (and so owns the resume).
    private func unpark() -> Bool {
        guard parked.exchange(false, ordering: .sequentiallyConsistent) else { return false }
        stats.callsWaitingForReader.subtract(1, ordering: .relaxed)
        return true
    }

    /// The call ended: it waits for nobody any more.
    func end() {
        ended.store(true, ordering: .sequentiallyConsistent)
        _ = unpark()
    }

    /// Engine thread: `bytes` of DATA were made for the app.
    func spend(_ bytes: Int) {
        credit.subtract(bytes, ordering: .sequentiallyConsistent)
    }

    /// Event loop: the client granted `bytes` more (WINDOW_UPDATE). False when the credit would pass the most a
    /// stream may hold (a client error). `resume` is called when a paused transfer may go on.
    func grant(_ bytes: Int, max: Int, resume: () -> Void) -> Bool {
        let now = credit.add(bytes, ordering: .sequentiallyConsistent).newValue
        guard now <= max else { return false }
        wakeIfParked(resume)
        return true
    }

    /// Event loop: the connection's write buffer went over (true) or back under (false) its water mark.
    func setBlocked(_ full: Bool, resume: () -> Void) {
        blocked.store(full, ordering: .sequentiallyConsistent)
        if !full { wakeIfParked(resume) }
    }

    private func wakeIfParked(_ resume: () -> Void) {
        guard !mustPause, unpark() else { return }
        resume()
    }
}
