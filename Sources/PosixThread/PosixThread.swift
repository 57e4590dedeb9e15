#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A POSIX thread running one closure: the one place the project calls `pthread_create`. Written by hand because
/// Foundation's `Thread` cannot be joined (the curl engine joins its loop on shutdown) and would pull Foundation
/// into the client shim and the journal writer, which avoid it.
public struct PosixThread: @unchecked Sendable {
    // `pthread_t` is an opaque handle valid from any thread; unchecked only because Darwin imports it as a pointer.
    private let handle: pthread_t

    /// `pthread_create` refused: its error number (`EAGAIN` when the process is out of threads).
    public struct SpawnError: Error, Sendable, CustomStringConvertible {
        public let code: Int32
        public var description: String { "could not start a thread (error \(code))" }
    }

    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    private init(handle: pthread_t) {
        self.handle = handle
    }

    /// Starts a joinable thread running `body`; `join()` or `detach()` it.
    public static func spawn(_ body: @escaping @Sendable () -> Void) throws(SpawnError) -> PosixThread {
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        #if canImport(Darwin)
        var created: pthread_t?
        let result = pthread_create(&created, nil, { context in
            Unmanaged<Body>.fromOpaque(context).takeRetainedValue().run()
            return nil
        }, context)
        #else
        var created = pthread_t()
        let result = pthread_create(&created, nil, { context in
            guard let context else { return nil }
            Unmanaged<Body>.fromOpaque(context).takeRetainedValue().run()
            return nil
        }, context)
        #endif
        guard result == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw SpawnError(code: result)
        }
        #if canImport(Darwin)
        return PosixThread(handle: created!)
        #else
        return PosixThread(handle: created)
        #endif
    }

    /// Starts a detached thread running `body`: its resources go when it ends.
    public static func detached(_ body: @escaping @Sendable () -> Void) throws(SpawnError) {
        try spawn(body).detach()
    }

    /// Whether the caller is running on this thread.
    public var isCurrent: Bool {
        pthread_equal(pthread_self(), handle) != 0
    }

    /// Waits for the thread to finish.
    public func join() {
        _ = pthread_join(handle, nil)
    }

    /// Lets the thread's resources go when it finishes, for when nobody will join it.
    public func detach() {
        _ = pthread_detach(handle)
    }
}
