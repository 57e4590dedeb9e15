import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real `redis-server` (Debian's package) on a Unix socket in a temporary directory, stopped by PID.
public final class RedisUnderTest: @unchecked Sendable {
    public let dir: String
    /// The Unix socket it listens on (no TCP port).
    public let socket: String

    public init() throws {
        dir = NSTemporaryDirectory() + "bw-redis-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        socket = dir + "/redis.sock"
        try start()
    }

    private var pid: pid_t = 0

    /// Spawned with posix_spawn (not Foundation's Process, which cannot clear the signal mask, see below) and
    /// reaped with waitpid.
    public func start() throws {
        let args = ["/usr/bin/redis-server", "--port", "0", "--unixsocket", socket, "--dir", dir, "--save", "",
                    "--appendonly", "no", "--logfile", dir + "/redis.log"]
        var argv = args.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        // A clean signal mask and default dispositions: the test runner's threads block signals, and blocked
        // signals survive exec (redis would then ignore SIGTERM).
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGTERM)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        guard posix_spawn(&pid, args[0], nil, &attr, &argv, environ) == 0 else { throw RedisStartFailure() }
        let deadline = ContinuousClock.now + .seconds(10)
        while !FileManager.default.fileExists(atPath: socket) {
            guard ContinuousClock.now < deadline, waitpid(pid, nil, WNOHANG) == 0 else { throw RedisStartFailure() }
            usleep(10_000)
        }
    }

    /// SIGTERM by PID, then SIGKILL after 5 s; reaped.
    public func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(5)
        while waitpid(pid, nil, WNOHANG) == 0 {
            if ContinuousClock.now > deadline {
                kill(pid, SIGKILL)
                waitpid(pid, nil, 0)
                break
            }
            usleep(5_000)
        }
        pid = 0
        try? FileManager.default.removeItem(atPath: socket)
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    public struct RedisStartFailure: Error {}
}
