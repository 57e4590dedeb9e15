import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A private `systemd-journald` for one test, and a reader for what lands in it.
///
/// libsystemd always writes to `/run/systemd/journal/socket`, so the harness gives that path a private meaning:
/// it starts a thread with its own mount namespace (`unshare(CLONE_NEWNS)` on that thread only), mounts empty
/// tmpfs on `/run/systemd/journal` and `/run/log` there, and starts journald from that thread with a config of
/// its own (volatile storage, no rate limit, nothing forwarded). Whatever runs on the harness's thread, the threads
/// it creates, and the processes it spawns log into that journald; the rest of the machine, and other tests
/// with harnesses of their own running in parallel, see nothing of it. Needs root on Linux, as CI runs.
///
/// ```swift
/// let journal = try JournalHarness.start()
/// defer { journal.stop() }
/// let writer = try journal.run { try JournalAuditWriter() }   // its thread is born in the namespace
/// writer.record(event)
/// let entries = try await journal.waitForEntries(count: 1, matching: ["MESSAGE_ID": id])
/// ```
///
/// A daemon started as a child process logs into the harness when it is spawned from `run` (the child inherits
/// the thread's namespace), or when its command line is wrapped with `command(_:_:)` (`nsenter` into the
/// journald's namespace).
public final class JournalHarness: Sendable {
    /// What is listening on `/run/systemd/journal/socket` in the harness's namespace.
    public enum Listener: Sendable {
        /// A private systemd-journald.
        case journald
        /// Nothing: the socket does not exist (libsystemd then reports success and drops the entry).
        case missingSocket
        /// A socket file nobody listens on, as a crashed journald leaves it (sends fail with ECONNREFUSED).
        case staleSocket
    }

    /// How to start the harness.
    public struct Options: Sendable {
        /// What listens on the journal socket.
        public var listener: Listener
        /// Lines added to the `[Journal]` section of the private journald's config, after the harness's own
        /// (e.g. `MaxLevelStore=notice` to see what an admin's filter keeps).
        public var extraConfiguration: [String]
        /// How long to wait for journald's socket to appear.
        public var startTimeout: Duration

        /// Defaults: a journald, no extra configuration, 10 s to start.
        public init(listener: Listener = .journald, extraConfiguration: [String] = [],
                    startTimeout: Duration = .seconds(10)) {
            self.listener = listener
            self.extraConfiguration = extraConfiguration
            self.startTimeout = startTimeout
        }
    }

    /// The journald's pid, when there is one.
    public let journaldPID: pid_t?
    /// A temporary directory holding the journald config and journald's own log (`journald.log`).
    public let directory: String

    private let thread: MountNamespaceThread
    private let stopped = Mutex(false)

    /// The config the private journald runs with.
    public static let baseConfiguration = [
        "Storage=volatile",
        "RateLimitIntervalSec=0",
        "RateLimitBurst=0",
        "RuntimeMaxUse=2G",
        "RuntimeKeepFree=0",
        "ForwardToSyslog=no",
        "ForwardToKMsg=no",
        "ForwardToConsole=no",
        "ForwardToWall=no",
        "ReadKMsg=no",
        "Seal=no",
    ]

    /// Where systemd-journald is installed on Debian and most other distributions.
    public static let journaldCandidates = ["/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"]

    private static let setpriv = "/usr/bin/setpriv"
    private static let unshare = "/usr/bin/unshare"

    /// How many datagrams journald's socket queues before a sender blocks: what systemd (PID 1) sets
    /// `net.unix.max_dgram_qlen` to at boot, at the least, on every host it runs.
    public static let systemdDatagramQueueLength = 512

    /// The datagram queue the private journald's socket has: `systemdDatagramQueueLength`, or the host's
    /// `net.unix.max_dgram_qlen` when `unshare` is missing.
    public let datagramQueueLength: Int

    /// Whether journald gets a network namespace of its own with systemd's queue length (`unshare` is there).
    private static var setsQueueLength: Bool { access(unshare, X_OK) == 0 }

    /// How journald is started: in a network namespace of its own whose `net.unix.max_dgram_qlen` is the one
    /// systemd sets, and with `setpriv --pdeathsig` (journald gets SIGTERM when the harness's thread dies, so a
    /// crashed test process leaves no journald behind; stop() ends journald before the thread in the normal case).
    ///
    /// Why the namespace: a unix datagram socket takes the queue length of the network namespace it is created
    /// in. systemd raises it from the kernel's default of 10 to 512 at boot because journald needs it; a machine
    /// whose PID 1 is not systemd (a container, this CI's VM) keeps 10, and with 10 a sender under load blocks in
    /// `sendmsg` for nearly every entry and is woken for each one journald takes (a context switch per entry,
    /// seen as 1.7 per call in `breakwater-bench --cost` with a policy). journald needs no network, and its path
    /// socket is reachable from every namespace that sees the path.
    static func journaldCommand(_ journald: String) -> (executable: String, arguments: [String]) {
        var command = [journald]
        if access(setpriv, X_OK) == 0 { command = [setpriv, "--pdeathsig", "SIGTERM", "--"] + command }
        guard setsQueueLength else { return (command[0], Array(command.dropFirst())) }
        // unshare and sh exec, so journald keeps this thread as its parent (and the pdeathsig); a queue length
        // that cannot be set fails the start (exit 97, said in journald.log), not the figures.
        let script = "echo \(systemdDatagramQueueLength) > /proc/sys/net/unix/max_dgram_qlen "
            + "|| { echo 'could not set net.unix.max_dgram_qlen in journald network namespace' >&2; exit 97; }; "
            + "exec \"$@\""
        return (unshare, ["--net", "--", "/bin/sh", "-c", script, "journald-harness"] + command)
    }

    /// Starts a harness (by default with a private journald, waiting until its socket exists).
    public static func start(_ options: Options = Options()) throws -> JournalHarness {
        try JournalHarness(options: options)
    }

    /// Starts a harness, runs `body` with it, and stops it whatever happens.
    public static func withHarness<T>(_ options: Options = Options(),
                                      _ body: (JournalHarness) async throws -> T) async throws -> T {
        let harness = try start(options)
        defer { harness.stop() }
        return try await body(harness)
    }

    private init(options: Options) throws {
        let directory = try makeTemporaryDirectory()
        self.directory = directory
        let journald: String?
        if options.listener == .journald {
            guard let found = Self.journaldCandidates.first(where: { access($0, X_OK) == 0 }) else {
                throw JournalHarnessError("systemd-journald is not installed (looked at "
                    + Self.journaldCandidates.joined(separator: ", ") + "); scripts/setup.sh installs systemd")
            }
            journald = found
            let config = "[Journal]\n" + (Self.baseConfiguration + options.extraConfiguration).joined(separator: "\n")
            try (config + "\n").write(toFile: directory + "/journald.conf", atomically: true, encoding: .utf8)
        } else {
            journald = nil
        }
        // Mount points must exist before the namespace copies the mount table; on the host they stay empty.
        for path in ["/run/systemd/journal", "/run/log"] {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        let pid = Mutex<pid_t?>(nil)
        let listener = options.listener
        do {
            thread = try MountNamespaceThread {
                try Self.mountPrivateJournalPaths(configuration: journald == nil ? nil : directory + "/journald.conf")
                switch listener {
                case .journald:
                    let (executable, arguments) = Self.journaldCommand(journald!)
                    let child = try ChildPID.spawn(executable, arguments: arguments, logPath: directory + "/journald.log",
                                          environment: ["SYSTEMD_LOG_TARGET=console", "SYSTEMD_LOG_LEVEL=info"])
                    pid.withLock { $0 = child }
                case .missingSocket:
                    break
                case .staleSocket:
                    try leaveStaleSocket(at: "/run/systemd/journal/socket")
                }
            }
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        journaldPID = pid.withLock { $0 }
        datagramQueueLength = journald != nil && Self.setsQueueLength
            ? Self.systemdDatagramQueueLength : Self.hostDatagramQueueLength()
        if let journaldPID {
            // Ready once it listens and has created the runtime journal (it binds the socket first).
            let socket = "/proc/\(journaldPID)/root/run/systemd/journal/socket"
            let journal = "/proc/\(journaldPID)/root/run/log/journal"
            let deadline = ContinuousClock.now + options.startTimeout
            while access(socket, F_OK) != 0 || access(journal, F_OK) != 0 {
                if ContinuousClock.now >= deadline || kill(journaldPID, 0) != 0 {
                    let log = (try? String(contentsOfFile: directory + "/journald.log", encoding: .utf8)) ?? ""
                    stop()
                    throw JournalHarnessError("systemd-journald did not start:\n\(log)")
                }
                usleep(5_000)
            }
        }
    }

    deinit {
        stop()
    }

    /// This machine's `net.unix.max_dgram_qlen` (the kernel's default is 10), or 0 when unreadable.
    public static func hostDatagramQueueLength() -> Int {
        let text = (try? String(contentsOfFile: "/proc/sys/net/unix/max_dgram_qlen", encoding: .utf8)) ?? ""
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    /// Runs `body` on the harness's thread, inside its mount namespace, and returns its result. Threads and
    /// processes `body` starts are in the namespace too: create the audit writer here, or spawn the daemon.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        try thread.run(body)
    }

    /// `executable arguments` rewritten to run inside the harness's journald namespace via `nsenter`, keeping
    /// the current directory; for launchers that cannot spawn from `run`. Needs a running journald.
    public func command(_ executable: String, _ arguments: [String]) -> (executable: String, arguments: [String]) {
        guard let journaldPID else { preconditionFailure("command(_:_:) needs a harness with a journald") }
        let cwd = FileManager.default.currentDirectoryPath
        return ("/usr/bin/nsenter", ["--mount=/proc/\(journaldPID)/ns/mnt", "--wd=\(cwd)", "--", executable]
            + arguments)
    }

    /// The private journal's directory as seen from outside the namespace (through journald's `/proc` root);
    /// `journalctl -D` reads it. Nil without a journald.
    public var journalDirectory: String? {
        journaldPID.map { "/proc/\($0)/root/run/log/journal" }
    }

    /// Entries matching every `NAME=value` in `matching` (all entries when empty), oldest first.
    public func entries(matching: [String: String] = [:]) throws -> [JournalEntry] {
        let output = try journalctl(["-o", "json", "--all"], matching: matching)
        return output.split(separator: "\n").compactMap { JournalEntry(jsonLine: $0) }
    }

    /// How many entries match, without parsing them (cheap enough for hundreds of thousands).
    public func count(matching: [String: String] = [:]) throws -> Int {
        let output = try journalctl(["-o", "cat", "--output-fields=_BOOT_ID"], matching: matching)
        return output.utf8.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
    }

    /// Polls until at least `count` entries match or `timeout` passes (journald takes entries asynchronously),
    /// then returns the matching entries, however many there are: the caller asserts the count.
    public func waitForEntries(count: Int, matching: [String: String] = [:], timeout: Duration = .seconds(10),
                               interval: Duration = .milliseconds(25)) async throws -> [JournalEntry] {
        let deadline = ContinuousClock.now + timeout
        while try self.count(matching: matching) < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: interval)
        }
        return try entries(matching: matching)
    }

    /// journald's own output (its start-up lines, and errors if it failed).
    public var journaldLog: String {
        (try? String(contentsOfFile: directory + "/journald.log", encoding: .utf8)) ?? ""
    }

    /// Stops journald (SIGTERM, then SIGKILL after 5 s; by its pid, never by name), ends the namespace thread
    /// and removes the temporary directory (kept when `BW_KEEP_TEST_DIRS` is set). Safe to call twice.
    public func stop() {
        let first = stopped.withLock { s -> Bool in
            defer { s = true }
            return !s
        }
        guard first else { return }
        if let journaldPID { terminate(journaldPID) }
        thread.stop()
        if ProcessInfo.processInfo.environment["BW_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    private func journalctl(_ format: [String], matching: [String: String]) throws -> String {
        guard let journalDirectory else { return "" }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/journalctl")
        process.arguments = ["-D", journalDirectory, "--no-pager", "-q"] + format
            + matching.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let errors = Mutex(Data())
        let drained = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            let data = stderr.fileHandleForReading.readDataToEndOfFile()
            errors.withLock { $0 = data }
            drained.signal()
        }
        let data = stdout.fileHandleForReading.readDataToEndOfFile()
        drained.wait()
        process.waitUntilExit()
        let errorText = errors.withLock { String(decoding: $0, as: UTF8.self) }
        // journalctl exits 1 with "No entries" or "No journal files were found" before journald wrote a file.
        guard process.terminationStatus == 0 || errorText.isEmpty || errorText.contains("No journal files")
        else {
            throw JournalHarnessError("journalctl failed (\(process.terminationStatus)): \(errorText)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    private static func mountPrivateJournalPaths(configuration: String?) throws {
        try mountTmpfs("/run/systemd/journal")
        try mountTmpfs("/run/log")
        // A journald that found the host's persistent journal would write there: hide it, and any drop-ins.
        for path in ["/var/log/journal", "/etc/systemd/journald.conf.d", "/run/systemd/journald.conf.d"]
        where access(path, F_OK) == 0 {
            try mountTmpfs(path)
        }
        if let configuration {
            guard mount(configuration, "/etc/systemd/journald.conf", nil, UInt(MS_BIND), nil) == 0 else {
                throw JournalHarnessError("could not bind the test journald.conf: " + String(cString: strerror(errno)))
            }
        }
    }

    private static func mountTmpfs(_ path: String) throws {
        guard mount("tmpfs", path, "tmpfs", 0, "mode=0755") == 0 else {
            throw JournalHarnessError("could not mount a tmpfs on \(path): " + String(cString: strerror(errno)))
        }
    }
}

/// Something the harness could not do; the text says what and why.
public struct JournalHarnessError: Error, CustomStringConvertible {
    /// What went wrong.
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

private func makeTemporaryDirectory() throws -> String {
    var template = Array("/tmp/bw-journal-XXXXXX".utf8CString)
    guard let path = mkdtemp(&template) else {
        throw JournalHarnessError("mkdtemp failed: " + String(cString: strerror(errno)))
    }
    return String(cString: path)
}

/// Binds a Unix datagram socket at `path` and closes it: the file stays, with nobody behind it.
private func leaveStaleSocket(at path: String) throws {
    var socket = try DatagramSocket(boundAt: path)
    socket.close()
}

/// SIGTERM `pid`, then SIGKILL if it has not exited within 5 s; reaps it either way, never waiting unbounded.
private func terminate(_ pid: pid_t) {
    kill(pid, SIGTERM)
    _ = ChildPID.wait(pid, timeout: .seconds(5))
}
