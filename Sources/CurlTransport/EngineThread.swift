#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A joinable POSIX thread that runs one closure; the engine needs to join its loop on shutdown, which
/// Foundation's `Thread` cannot do.
struct EngineThread: @unchecked Sendable {
    // `pthread_t` is an opaque handle that is valid from any thread; it is only unchecked because Darwin
    // imports it as a pointer.
    private let handle: pthread_t

    private final class Body {
        let run: @Sendable () -> Void

        init(run: @escaping @Sendable () -> Void) {
            self.run = run
        }
    }

    /// Starts a thread running `body`.
    static func spawn(_ body: @escaping @Sendable () -> Void) throws -> EngineThread {
        let context = Unmanaged.passRetained(Body(run: body)).toOpaque()
        #if canImport(Glibc)
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { context in
            guard let context else { return nil }
            let body = Unmanaged<Body>.fromOpaque(context).takeRetainedValue()
            body.run()
            return nil
        }, context)
        #else
        var created: pthread_t?
        let result = pthread_create(&created, nil, { context in
            let body = Unmanaged<Body>.fromOpaque(context).takeRetainedValue()
            body.run()
            return nil
        }, context)
        #endif
        guard result == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw TransportError(kind: .other, detail: "could not start the transfer thread (error \(result))")
        }
        #if canImport(Glibc)
        return EngineThread(handle: handle)
        #else
        return EngineThread(handle: created!)
        #endif
    }

    /// Whether the caller is running on this thread.
    var isCurrent: Bool {
        pthread_equal(pthread_self(), handle) != 0
    }

    /// Waits for the thread to finish.
    func join() {
        _ = pthread_join(handle, nil)
    }

    /// Lets the thread's resources go when it finishes, for when it cannot wait for itself.
    func detach() {
        _ = pthread_detach(handle)
    }
}
