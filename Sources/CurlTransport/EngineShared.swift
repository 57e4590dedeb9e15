import CCurl
import Synchronization


/// What `start`, `cancel` and `shutdown` hand to the engine thread.
enum EngineCommand {
    case start(TransferID, HTTPRequest, any TransferDelegate)
    case cancel(TransferID)
    /// Go on receiving a transfer its delegate paused.
    case resume(TransferID)
}

/// The submission queue, guarded by `EngineShared.queue`.
struct SubmissionQueue {
    var commands: [EngineCommand] = []
    var nextID: UInt64 = 1
    var isShutdown = false
    /// Set when a caller has woken the loop and the loop has not drained yet, so further submissions can
    /// skip the eventfd write.
    var wakeupPending = false
}

/// The state callers and the engine thread share: the submission queue, the live-transfer count, the multi
/// handle (engine thread only) and the loop's wake-up eventfd (which callers write).
final class EngineShared: @unchecked Sendable {
    // Unchecked because of `multi`, which only the engine thread uses. Off the engine thread `wakeFD` is only
    // written, and only while holding `queue` with `isShutdown` false; the engine thread closes it only after it
    // has seen `isShutdown`, so no wake-up can reach a closed (or reused) descriptor.
    let multi: UnsafeMutableRawPointer
    let wakeFD: Int32
    let queue = Mutex(SubmissionQueue())
    let activeTransfers = Atomic<Int>(0)

    init(multi: UnsafeMutableRawPointer, wakeFD: Int32) {
        self.multi = multi
        self.wakeFD = wakeFD
    }

    /// Wakes the engine loop out of its wait.
    private func wake() {
        _ = bw_eventfd_signal(wakeFD)
    }

    /// Allocates the next transfer ID and queues a start, or returns nil once the engine is shut down.
    func submitStart(_ request: HTTPRequest, delegate: any TransferDelegate) -> TransferID? {
        queue.withLock { queue in
            guard !queue.isShutdown else {
                return nil
            }
            let id = TransferID(rawValue: queue.nextID)
            queue.nextID += 1
            activeTransfers.add(1, ordering: .relaxed)
            queue.commands.append(.start(id, request, delegate))
            wakeUpIfNeeded(&queue)
            return id
        }
    }

    /// Queues a cancellation; a no-op once the engine is shut down (shutdown cancels everything anyway).
    func submitCancel(_ id: TransferID) {
        submit(.cancel(id))
    }

    /// Queues a resume of a paused transfer; a no-op once the engine is shut down.
    func submitResume(_ id: TransferID) {
        submit(.resume(id))
    }

    /// Queues a command about a transfer already started and wakes the loop; a no-op once the engine is shut down.
    private func submit(_ command: EngineCommand) {
        queue.withLock { queue in
            guard !queue.isShutdown else {
                return
            }
            queue.commands.append(command)
            wakeUpIfNeeded(&queue)
        }
    }

    /// Marks the engine as shutting down and wakes the loop so it notices.
    func submitShutdown() {
        queue.withLock { queue in
            guard !queue.isShutdown else {
                return
            }
            queue.isShutdown = true
            wake()
        }
    }

    /// Wakes the loop unless an earlier submission already did and the loop has not drained since. Called
    /// with the lock held, so the engine thread cannot have freed the multi handle.
    private func wakeUpIfNeeded(_ queue: inout SubmissionQueue) {
        if !queue.wakeupPending {
            queue.wakeupPending = true
            wake()
        }
    }
}
