import CLinuxNamespace
import PosixThread
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A thread living in its own mount namespace, running closures it is handed one at a time.
///
/// `unshare(CLONE_NEWNS)` works on one thread of a multithreaded process (it implies CLONE_FS, which unshares
/// only the calling thread's root and cwd). The thread, every thread it creates and every process it spawns see
/// the mounts made here; the rest of the test process does not. That is how a test's audit writer, whose
/// socket is `/run/systemd/journal/socket` (as the daemon's always is), reaches a private journald: create the
/// writer (and so its thread) on this thread.
final class MountNamespaceThread: Sendable {
    private struct Job: Sendable {
        let body: @Sendable () -> Void
    }

    private struct State {
        var jobs: [Job] = []
        var stopping = false
    }

    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)

    /// Starts the thread and runs `setup` there once the namespace exists; throws what `setup` throws (the
    /// thread then ends).
    init(setup: @escaping @Sendable () throws -> Void) throws {
        let started = DispatchSemaphore(value: 0)
        let setupError = Mutex<(any Error)?>(nil)
        try spawnThread { [self] in
            do {
                guard bw_unshare_mount_namespace() == 0 else {
                    throw JournalHarnessError("unshare(CLONE_NEWNS) failed: \(String(cString: strerror(errno))) "
                        + "(JournalHarness needs root on Linux)")
                }
                // Keep every mount made here out of the parent namespace, even where / is a shared mount.
                guard mount(nil, "/", nil, UInt(MS_REC | MS_PRIVATE), nil) == 0 else {
                    throw JournalHarnessError("could not make the test's mounts private: "
                        + String(cString: strerror(errno)))
                }
                try setup()
            } catch {
                setupError.withLock { $0 = error }
                started.signal()
                exited.signal()
                return
            }
            started.signal()
            loop()
            exited.signal()
        }
        started.wait()
        if let error = setupError.withLock({ $0 }) { throw error }
    }

    /// Runs `body` on the namespace thread and waits for its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<T, any Error>?>(nil)
        let job = Job {
            let outcome = Result { try body() }
            result.withLock { $0 = outcome }
            done.signal()
        }
        let accepted = state.withLock { s -> Bool in
            guard !s.stopping else { return false }
            s.jobs.append(job)
            return true
        }
        guard accepted else { throw JournalHarnessError("the journal harness was stopped") }
        wakeup.signal()
        done.wait()
        return try result.withLock { $0! }.get()
    }

    /// Lets the thread end once it has finished the job in hand, and waits for that.
    func stop() {
        let first = state.withLock { s -> Bool in
            defer { s.stopping = true }
            return !s.stopping
        }
        guard first else { return }
        wakeup.signal()
        exited.wait()
    }

    private func loop() {
        while true {
            wakeup.wait()
            while let job = state.withLock({ s in s.jobs.isEmpty ? nil : s.jobs.removeFirst() }) {
                job.body()
            }
            if state.withLock({ $0.stopping && $0.jobs.isEmpty }) { return }
        }
    }

    private func spawnThread(_ body: @escaping @Sendable () -> Void) throws {
        do {
            try PosixThread.detached(body)
        } catch {
            throw JournalHarnessError("could not start the namespace thread (error \(error.code))")
        }
    }
}
