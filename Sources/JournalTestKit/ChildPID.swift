import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Child processes started with posix_spawn and reaped with waitpid, for what Foundation's `Process` cannot do:
/// start a child from a particular thread (it inherits that thread's mount namespace), or supervise one that
/// closes the fds it inherits. `Process` learns that a child exited when a socket it hands the child is closed,
/// then blocks in wait4 on its one monitor thread: `systemd --user` closes that socket at start, so the thread
/// blocked for good on the running manager and no later `Process` in the test process ever finished.
public enum ChildPID {
    /// Starts `executable` with stdin from /dev/null and stdout and stderr appended to `logPath`. `environment`
    /// is the child's whole environment (`NAME=value`); PATH is added from this process when it names none.
    public static func spawn(_ executable: String, arguments: [String], logPath: String,
                             environment: [String]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var env = environment
        if !env.contains(where: { $0.hasPrefix("PATH=") }) {
            env.append("PATH=" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"))
        }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard result == 0 else {
            throw JournalHarnessError("could not start \(executable): " + String(cString: strerror(result)))
        }
        return pid
    }

    /// The child's exit status if it has exited (it is reaped then), nil while it runs. Killed by signal N: 128+N.
    public static func exitStatus(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    /// Waits at most `timeout` for the child to exit, blocking this thread. Returns its exit status; nil when it
    /// was still running, in which case it is SIGKILLed and reaped.
    public static func wait(_ pid: pid_t, timeout: Duration) -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let status = exitStatus(pid) { return status }
            if ContinuousClock.now >= deadline { break }
            usleep(5_000)
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
        return nil
    }
}
