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
    /// skip the `curl_multi_wakeup` syscall.
    var wakeupPending = false
}

/// The state callers and the engine thread share: the submission queue, the live-transfer count, and the
/// multi handle (which callers touch only through `curl_multi_wakeup`).
final class EngineShared: @unchecked Sendable {
    // Unchecked because of `multi`: off the engine thread it is used only for `curl_multi_wakeup`, which
    // libcurl documents as callable from any thread, and only while holding `queue` with `isShutdown`
    // false. The engine thread frees the handle only after it has seen `isShutdown`, so no wakeup can
    // reach freed memory.
    let multi: UnsafeMutableRawPointer
    let queue = Mutex(SubmissionQueue())
    let activeTransfers = Atomic<Int>(0)

    init(multi: UnsafeMutableRawPointer) {
        self.multi = multi
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
            _ = curl_multi_wakeup(multi)
        }
    }

    /// Wakes the loop unless an earlier submission already did and the loop has not drained since. Called
    /// with the lock held, so the engine thread cannot have freed the multi handle.
    private func wakeUpIfNeeded(_ queue: inout SubmissionQueue) {
        if !queue.wakeupPending {
            queue.wakeupPending = true
            _ = curl_multi_wakeup(multi)
        }
    }
}
