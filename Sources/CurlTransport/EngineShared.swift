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
/// handle (used only within a turn, see `EngineLoop`) and the engine thread's wake-up eventfd.
final class EngineShared: @unchecked Sendable {
    // Unchecked because of `multi`, which only the thread running a turn uses. `wakeFD` is written only while
    // holding `queue` with `isShutdown` false, or within a turn before the engine finished; the engine thread
    // closes it only after it has seen `isShutdown`, in its last turn, so no wake-up can reach a closed (or reused)
    // descriptor.
    let multi: UnsafeMutableRawPointer
    let wakeFD: Int32
    let queue = Mutex(SubmissionQueue())
    let activeTransfers = Atomic<Int>(0)
    /// Easy handles kept for reuse (`EngineLoop.freeHandles.count`).
    let idleHandles = Atomic<Int>(0)

    init(multi: UnsafeMutableRawPointer, wakeFD: Int32) {
        self.multi = multi
        self.wakeFD = wakeFD
    }

    /// Wakes the engine thread out of its wait. Only with `queue` held or within a turn (see above).
    func wakeLoop() {
        _ = bw_eventfd_signal(wakeFD)
    }

    /// Allocates the next transfer ID and queues a start, or returns nil once the engine is shut down. With `wake`
    /// false the caller runs the turn itself (`EngineLoop.runTurnHere`).
    func submitStart(_ request: HTTPRequest, delegate: any TransferDelegate, wake: Bool) -> TransferID? {
        queue.withLock { queue in
            guard !queue.isShutdown else {
                return nil
            }
            let id = TransferID(rawValue: queue.nextID)
            queue.nextID += 1
            activeTransfers.add(1, ordering: .relaxed)
            queue.commands.append(.start(id, request, delegate))
            if wake { wakeUpIfNeeded(&queue) }
            return id
        }
    }

    /// Queues a command about a transfer already started; false (nothing queued) once the engine is shut down
    /// (shutdown cancels everything anyway). With `wake` false the caller runs the turn itself.
    func submit(_ command: EngineCommand, wake: Bool) -> Bool {
        queue.withLock { queue in
            guard !queue.isShutdown else {
                return false
            }
            queue.commands.append(command)
            if wake { wakeUpIfNeeded(&queue) }
            return true
        }
    }

    /// Marks the engine as shutting down and wakes the loop so it notices.
    func submitShutdown() {
        queue.withLock { queue in
            guard !queue.isShutdown else {
                return
            }
            queue.isShutdown = true
            wakeLoop()
        }
    }

    /// Wakes the engine thread if commands are queued that no turn has taken yet (a caller meant to run the turn
    /// but another thread held it), unless an earlier call already woke it and it has not drained since.
    func wakeLoopIfPending() {
        queue.withLock { queue in
            guard !queue.isShutdown, !queue.commands.isEmpty else {
                return
            }
            wakeUpIfNeeded(&queue)
        }
    }

    /// Wakes the loop unless an earlier submission already did and the loop has not drained since. Called
    /// with the lock held and the engine not shut down, so the engine thread cannot have closed the eventfd.
    private func wakeUpIfNeeded(_ queue: inout SubmissionQueue) {
        if !queue.wakeupPending {
            queue.wakeupPending = true
            wakeLoop()
        }
    }
}
