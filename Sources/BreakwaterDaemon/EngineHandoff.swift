import CurlTransport
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Carries what upstream calls report (within a turn of the curl engine, on its thread or an event loop's that ran
/// the turn) to their event loops: the jobs of one turn are handed to each event loop as one `execute`, at the
/// turn's end.
///
/// At 64 calls in flight one turn often ends several transfers and delivers chunks of several streams; one job per
/// callback made the event loop take its task lock, and be woken, once for each. In order per event loop, so a
/// call's progress still comes before its completion.
final class EngineHandoff: EngineTurnObserver, @unchecked Sendable {
    // Unchecked: `pending` is touched only within the engine's turns, which never overlap (`send` checks that it
    // runs on the thread in a turn, and hands over directly from any other); `turnThread` is atomic.
    private var pending: [(loop: any EventLoop, jobs: [@Sendable () -> Void], bytes: Int)] = []
    /// The thread running the engine's present turn, 0 between turns.
    private let turnThread = Atomic<UInt>(0)

    /// Answer bytes one event loop's jobs may hold before they go over mid-turn: one turn can read a large answer
    /// whole, and the writes that make a connection unwritable (and so pause its calls' transfers) happen only
    /// once the event loop has the frames.
    static let bytesPerHandoff = 64 * 1024

    func engineTurnBegan() {
        turnThread.store(UInt(pthread_self()), ordering: .relaxed)
    }

    /// Queues `job` (carrying `bytes` of answer) for `loop` until the engine's turn ends, or until the loop's jobs
    /// carry `bytesPerHandoff`; outside a turn, executes it on `loop` at once.
    func send(_ loop: any EventLoop, bytes: Int = 0, _ job: @escaping @Sendable () -> Void) {
        guard turnThread.load(ordering: .relaxed) == UInt(pthread_self()) else {
            loop.execute(job)
            return
        }
        let index: Int
        if let found = pending.firstIndex(where: { $0.loop === loop }) {
            index = found
            pending[index].jobs.append(job)
            pending[index].bytes += bytes
        } else {
            index = pending.count
            pending.append((loop, [job], bytes))
        }
        if pending[index].bytes >= Self.bytesPerHandoff {
            let (loop, jobs, _) = pending.remove(at: index)
            Self.execute(jobs, on: loop)
        }
    }

    func engineTurnEnded() {
        turnThread.store(0, ordering: .relaxed)
        guard !pending.isEmpty else { return }
        for (loop, jobs, _) in pending {
            Self.execute(jobs, on: loop)
        }
        pending.removeAll(keepingCapacity: true)
    }

    private static func execute(_ jobs: [@Sendable () -> Void], on loop: any EventLoop) {
        if jobs.count == 1 {
            loop.execute(jobs[0])
        } else {
            loop.execute { for job in jobs { job() } }
        }
    }
}
