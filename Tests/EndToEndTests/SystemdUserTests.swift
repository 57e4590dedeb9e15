import BreakwaterClient
import FakeProviderKit
import Foundation
import GRDB
import JournalTestKit
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real systemd manager (`systemd --user`) running the real unit files from `systemd/`, adapted by a drop-in
/// only where the user manager cannot do something, with a private journald beside it (JournalTestKit).
///
/// Needs root and /lib/systemd/systemd (scripts/setup.sh installs systemd). The manager needs
/// `/run/systemd/system` (the "booted with systemd" marker): made for the test and removed after, unless it was
/// there already. Its runtime directory (`XDG_RUNTIME_DIR`) is a fresh one of its own under the work directory,
/// never a real `/run/user/0` (a user manager does not come back up on a stale one, and the host's must not be
/// touched).
final class UserManager: @unchecked Sendable {
    static let marker = "/run/systemd/system"

    /// Everything the test writes: unit config and state directories (XDG_CONFIG_HOME, XDG_STATE_HOME), socket.
    let work: String
    /// `XDG_RUNTIME_DIR` for the manager: the private bus socket, the unit directory.
    var runtimeDirectory: String { work + "/run" }
    /// The manager's pid (spawned and reaped here, not with Foundation's `Process`: see `ChildPID`).
    private var managerPID: pid_t = 0
    /// What the manager printed (it logs to the journal once that is up).
    var managerOutput: String { (try? String(contentsOfFile: work + "/manager.log", encoding: .utf8)) ?? "" }
    private let madeMarker: Bool
    private var environment: [String: String] {
        ["XDG_RUNTIME_DIR": runtimeDirectory, "XDG_CONFIG_HOME": work + "/config",
         "XDG_STATE_HOME": work + "/state"]
    }

    var unitDirectory: String { runtimeDirectory + "/systemd/user" }
    var socket: String { work + "/bw.sock" }
    var httpSocket: String { work + "/http.sock" }
    var configFile: String { work + "/config/breakwater/breakwater.yaml" }
    /// `$STATE_DIRECTORY/breakwater.sqlite`: a user manager puts StateDirectory= under $XDG_STATE_HOME from
    /// systemd 254 on, under $XDG_CONFIG_HOME before (Debian 12 has 252).
    var stateFile: String? {
        [work + "/state/breakwater/breakwater.sqlite", work + "/config/breakwater/breakwater.sqlite"]
            .first { FileManager.default.fileExists(atPath: $0) }
    }

    init(journal: JournalHarness) async throws {
        var template = Array("/var/tmp/bw-sdu-XXXXXX".utf8CString)
        work = String(cString: mkdtemp(&template)!)
        madeMarker = !FileManager.default.fileExists(atPath: Self.marker)
        try FileManager.default.createDirectory(atPath: Self.marker, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: runtimeDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        for sub in ["/config/breakwater", "/state"] {
            try FileManager.default.createDirectory(atPath: work + sub, withIntermediateDirectories: true)
        }
        // Inside the journald's mount namespace: the manager and every service it starts log there. The manager
        // logs its own messages (unit started, watchdog timeout, ...) there too with --log-target=journal.
        let command = journal.command("/lib/systemd/systemd", ["--user", "--log-target=journal"])
        managerPID = try ChildPID.spawn(command.executable, arguments: command.arguments,
                                        logPath: work + "/manager.log", environment: Self.processEnvironment(environment))
        let up = try await waitUntil(timeout: .seconds(20)) {
            FileManager.default.fileExists(atPath: runtimeDirectory + "/systemd/private")
        }
        if !up {
            stop()
            throw TestFailure("systemd --user did not come up:\n\(managerOutput)")
        }
    }

    /// Runs `systemctl --user ARGS`; returns the exit status (nil: still running after 30 s, killed) and output.
    @discardableResult
    func systemctl(_ arguments: [String]) async throws -> (status: Int32?, output: String) {
        let (pid, log) = try spawnSystemctl(arguments)
        var status: Int32?
        let exited = try await waitUntil(timeout: .seconds(30), interval: .milliseconds(10)) {
            status = ChildPID.exitStatus(pid)
            return status != nil
        }
        if !exited { status = ChildPID.wait(pid, timeout: .zero) }
        return (status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    /// Not Foundation's `Process`, which cannot supervise the manager (see `ChildPID`).
    private func spawnSystemctl(_ arguments: [String]) throws -> (pid_t, String) {
        let log = work + "/systemctl-\(UUID().uuidString).log"
        return (try ChildPID.spawn("/bin/systemctl", arguments: ["--user", "--no-pager"] + arguments, logPath: log,
                                   environment: Self.processEnvironment(environment)), log)
    }

    /// This process's environment with `overrides`, as `NAME=value` strings.
    static func processEnvironment(_ overrides: [String: String]) -> [String] {
        ProcessInfo.processInfo.environment.merging(overrides) { $1 }.map { "\($0)=\($1)" }
    }

    /// One property of a unit, e.g. `MainPID`.
    func show(_ unit: String, _ property: String) async throws -> String {
        try await systemctl(["show", "-p", property, "--value", unit]).output
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func stop() {
        // Blocking waits: this runs from `defer`, which cannot await.
        if let (pid, _) = try? spawnSystemctl(["exit"]) { _ = ChildPID.wait(pid, timeout: .seconds(30)) }
        _ = ChildPID.wait(managerPID, timeout: .seconds(10))
        if madeMarker { try? FileManager.default.removeItem(atPath: Self.marker) }
        if ProcessInfo.processInfo.environment["BW_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(atPath: work)
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(4))) struct SystemdUserTests {
    static let apiKey = "sk-systemd-user-test-key-0123456789"
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static func config(fake: String, defaultModel: String, fallbackModel: String? = nil) -> String {
        var routes = "  default:\n    - provider: fake\n      model: \(defaultModel)\n"
        if let fallbackModel { routes += "    - provider: fake\n      model: \(fallbackModel)\n" }
        return """
            providers:
              fake:
                kind: openai
                base_url: \(fake)
                api_key_env: BW_TEST_KEY
                http_version: "1.1"
                retry_config: {retry_count: 2, backoff_base: 10ms}
              dead:
                kind: openai
                base_url: http://127.0.0.1:9/v1
                api_key_env: BW_TEST_KEY
                retry_config: {retry_count: 0}
                circuit_breaker: {failure_threshold: 1, timeout_period: 300s}
            routes:
            \(routes)  dead:
                - provider: dead
                  model: gone

            """
    }

    /// Installs the real units plus the drop-ins, and starts the socket.
    static func install(_ m: UserManager) async throws {
        let units = repository + "/systemd"
        try FileManager.default.createDirectory(atPath: m.unitDirectory + "/breakwater.socket.d",
                                                withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: m.unitDirectory + "/breakwater.service.d",
                                                withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: m.unitDirectory + "/breakwater-http.socket.d",
                                                withIntermediateDirectories: true)
        for unit in ["breakwater.socket", "breakwater-http.socket", "breakwater.service"] {
            try FileManager.default.copyItem(atPath: units + "/" + unit, toPath: m.unitDirectory + "/" + unit)
        }
        try """
            # Test drop-in. The socket lives in the test's directory; the breakwater group does not exist here.
            [Socket]
            ListenStream=
            ListenStream=\(m.socket)
            SocketGroup=

            """.write(toFile: m.unitDirectory + "/breakwater.socket.d/test.conf", atomically: true, encoding: .utf8)
        try """
            # Test drop-in, as for breakwater.socket.
            [Socket]
            ListenStream=
            ListenStream=\(m.httpSocket)
            SocketGroup=

            """.write(toFile: m.unitDirectory + "/breakwater-http.socket.d/test.conf", atomically: true,
                      encoding: .utf8)
        try """
            # Test drop-in.
            [Service]
            # This build's binary (the unit runs /usr/local/bin/breakwaterd); the config path is the unit's own.
            ExecStart=
            ExecStart=\(binDir)/breakwaterd --config ${CONFIGURATION_DIRECTORY}/breakwater.yaml
            # What a user manager cannot do: each made the start fail with 226/NAMESPACE, or does not apply
            # (DynamicUser=, LoadCredential= deliver nothing under a user manager; see ../shared/TESTING.md).
            DynamicUser=no
            LoadCredential=
            PrivateTmp=no
            ProtectProc=default
            ProcSubset=all
            ProtectKernelTunables=no
            ProtectKernelModules=no
            ProtectKernelLogs=no
            ProtectControlGroups=no
            ProtectSystem=no
            ProtectHome=no
            # Without LoadCredential=, the fake provider's key comes from the environment.
            Environment=BW_TEST_KEY=\(apiKey)
            # Test-only: a 4 s watchdog (the unit has 30 s) so the wedge case is quick, and the fault switch
            # that lets SIGUSR2 wedge the serving event loop.
            WatchdogSec=4s
            Environment=BREAKWATER_TEST_FAULTS=wedge-on-sigusr2

            """.write(toFile: m.unitDirectory + "/breakwater.service.d/test.conf", atomically: true, encoding: .utf8)
        try await m.systemctl(["daemon-reload"])
        let (started, out) = try await m.systemctl(["start", "breakwater.socket", "breakwater-http.socket"])
        try #require(started == 0, "\(out)\n\(m.managerOutput)")
    }

    /// Real curl (`-sS`, 20 s at most): its exit status and output.
    static func curl(_ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sS", "--max-time", "20"] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func client(_ m: UserManager) -> BreakwaterClient {
        var c = BreakwaterClient.Configuration(socketPath: m.socket, clientName: "systemd-user-test")
        c.reconnectAttempts = 40
        c.reconnectBackoffMs = 50
        c.helloTimeoutMs = 10_000
        return BreakwaterClient(configuration: c)
    }

    /// Four workers sending calls one after another until `outcomes.stopped`.
    static func steadyLoad(_ client: BreakwaterClient, _ outcomes: LoadTally) -> Task<Void, Never> {
        Task {
            await withTaskGroup(of: Void.self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        var n = 0
                        outcomes.workerStarted()
                        defer { outcomes.workerEnded() }
                        while !outcomes.stopped.load(ordering: .relaxed) {
                            n += 1
                            do {
                                let r = try await client.send(route: "default", body: chat("load \(worker)-\(n)"),
                                                              timeoutMs: 20_000)
                                outcomes.record(content(r.body) == "Echo: load \(worker)-\(n)" ? nil : "wrong")
                            } catch {
                                let kind = (error as? BreakwaterError)?.kind
                                outcomes.record(kind == .daemonRestarted ? "daemonRestarted" : "\(error)")
                            }
                        }
                    }
                }
            }
        }
    }

    static func stop(_ load: Task<Void, Never>, _ outcomes: LoadTally) async throws {
        outcomes.stopped.store(true, ordering: .relaxed)
        let ended = try await waitUntil(timeout: .seconds(30)) { outcomes.running == 0 }
        #expect(ended, "every load call ended: \(outcomes.running) still waiting")
        if !ended { load.cancel() }
        await load.value
    }

    @Test func underARealUserManager() async throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd") else {
            Issue.record("needs root and systemd installed (scripts/setup.sh)")
            return
        }
        let fake = try await FakeProvider.start()
        defer { Task { try? await fake.shutdown() } }
        try await JournalHarness.withHarness { journal in
            let m = try await UserManager(journal: journal)
            defer { m.stop() }
            try Self.config(fake: fake.baseURL, defaultModel: "model-a")
                .write(toFile: m.configFile, atomically: true, encoding: .utf8)
            try await Self.install(m)
            let client = Self.client(m)

            // 1. Socket activation: nothing runs until the first connection — here an HTTP one, with real curl,
            // to the HTTP front's socket; then the binary socket is served by the same process.
            #expect(try await m.show("breakwater.service", "ActiveState") == "inactive")
            let (curled, answer) = try Self.curl(["--unix-socket", m.httpSocket, "http://b/v1/chat/completions",
                                                  "-d", #"{"model":"default","messages":[{"role":"user","content":"over http"}]}"#])
            #expect(curled == 0 && answer.contains(#""content":"Echo: over http""#), "\(answer)")
            #expect(try await m.show("breakwater.service", "ActiveState") == "active")
            let first = try await client.send(route: "default", body: chat("first"))
            #expect(content(first.body) == "Echo: first")
            let firstPID = try await m.show("breakwater.service", "MainPID")
            print("systemd --user: socket activation started breakwaterd (pid \(firstPID)) on the first connection")

            // 2. `systemctl --user status` shows the STATUS= line with live figures.
            let statusShown = try await waitUntil(timeout: .seconds(10)) {
                let (_, out) = try await m.systemctl(["status", "breakwater.service"])
                return out.contains("Status: \"serving; connections:") && out.contains("calls: 2,")
                    && out.contains("calls/s:")
            }
            let (_, status) = try await m.systemctl(["status", "breakwater.service"])
            #expect(statusShown, "\(status)")
            if let line = status.split(separator: "\n").first(where: { $0.contains("Status:") }) {
                print("systemd --user: \(line.trimmingCharacters(in: .whitespaces))")
            }

            // 3. `systemctl --user reload` applies a changed fallback chain.
            try Self.config(fake: fake.baseURL, defaultModel: "model-b", fallbackModel: "model-a")
                .write(toFile: m.configFile, atomically: true, encoding: .utf8)
            let (reloaded, reloadOut) = try await m.systemctl(["reload", "breakwater.service"])
            #expect(reloaded == 0, "\(reloadOut)")
            #expect(try await waitUntil {
                try await client.send(route: "default", body: chat("after reload")).head.model == "model-b"
            })
            fake.script([FaultStep(status: 500), FaultStep(status: 500), FaultStep(status: 500)])
            let fellBack = try await client.send(route: "default", body: chat("fallback"))
            #expect(fellBack.head.model == "model-a", "the new chain falls back to model-a: \(fellBack.head)")
            #expect(try await m.show("breakwater.service", "MainPID") == firstPID, "a reload is not a restart")
            print("systemd --user: reload applied the new chain model-b → model-a without a restart")

            // 4. An open breaker, written to the state store (within a second) before the crash.
            await #expect { _ = try await client.send(route: "dead", body: chat("x")) } throws: { _ in true }
            let stored = try await waitUntil(timeout: .seconds(5)) {
                guard let file = m.stateFile else { return false }
                let db = try stateDatabase(file)
                return try await db.read {
                    try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM open_breakers WHERE target = 'dead/gone'") ?? 0
                } == 1
            }
            #expect(stored, "the open breaker reached $STATE_DIRECTORY/breakwater.sqlite")

            // 5. kill -9 under a steady load: systemd restarts the daemon; no call that had not started upstream
            // fails (the shim sends those again); those in flight upstream fail at once with daemonRestarted.
            let outcomes = LoadTally()
            let load = Self.steadyLoad(client, outcomes)
            #expect(try await waitUntil { outcomes.total >= 200 }, "load is flowing")
            let (killed, killOut) = try await m.systemctl(["kill", "--signal=SIGKILL", "--kill-who=main",
                                                           "breakwater.service"])
            #expect(killed == 0, "\(killOut)")
            let atKill = outcomes.total
            let restarted = try await waitUntil(timeout: .seconds(20)) {
                let pid = try await m.show("breakwater.service", "MainPID")
                let state = try await m.show("breakwater.service", "ActiveState")
                return pid != "0" && pid != firstPID && state == "active"
            }
            #expect(restarted, "systemd restarted the daemon:\n\(m.managerOutput)")
            #expect(try await waitUntil { outcomes.total >= atKill + 200 }, "load flows again after the restart")
            try await Self.stop(load, outcomes)
            let secondPID = try await m.show("breakwater.service", "MainPID")
            #expect(try await m.show("breakwater.service", "NRestarts") == "1")
            let failures = outcomes.failures
            let unexpected = failures.filter { $0.key != "daemonRestarted" }
            #expect(unexpected.isEmpty, "only calls in flight upstream may fail: \(failures)")
            #expect(failures["daemonRestarted", default: 0] <= 4, "at most one per worker was upstream: \(failures)")
            print("systemd --user: kill -9 under load: \(outcomes.total) calls, \(outcomes.successes) answered, "
                + "\(failures["daemonRestarted", default: 0]) failed with daemonRestarted (in flight upstream), "
                + "0 other failures; pid \(firstPID) → \(secondPID)")

            // 6. The open breaker is still open in the new process.
            let breakers = try await client.admin("breakers")
            let list = (try JSONSerialization.jsonObject(with: Data(breakers)) as? [String: Any])?["breakers"]
                as? [[String: Any]] ?? []
            let dead = list.first { $0["target"] as? String == "dead/gone" }
            #expect(dead?["state"] as? String == "open", "\(list)")
            #expect((dead?["reopens_in_ms"] as? Int ?? 0) > 200_000, "\(list)")

            // 7. The journal holds the audit trail of both processes.
            let completed = ["MESSAGE_ID": "f91d955ff15343e4b82e60d0aa363d11"]
            let before = try await journal.waitForEntries(count: 1, matching: completed.merging(["_PID": firstPID]) { $1 })
            let after = try await journal.waitForEntries(count: 1, matching: completed.merging(["_PID": secondPID]) { $1 })
            #expect(!before.isEmpty && !after.isEmpty, "call_completed entries from pid \(firstPID) and \(secondPID)")
            print("systemd --user: journal has \(before.count) call_completed entries from the first process and "
                + "\(after.count) from the restarted one")

            // 8. `systemctl --user restart` under load: the daemon drains (calls in flight finish), calls sent
            // meanwhile wait in the socket's queue or are sent again by the shim: not one fails.
            let calm = LoadTally()
            let calmLoad = Self.steadyLoad(client, calm)
            #expect(try await waitUntil { calm.total >= 100 }, "load is flowing")
            let (restartedByHand, restartOut) = try await m.systemctl(["restart", "breakwater.service"])
            #expect(restartedByHand == 0, "\(restartOut)")
            let atRestart = calm.total
            #expect(try await waitUntil { calm.total >= atRestart + 100 }, "load flows again after the restart")
            try await Self.stop(calmLoad, calm)
            let thirdPID = try await m.show("breakwater.service", "MainPID")
            #expect(thirdPID != secondPID && thirdPID != "0")
            #expect(calm.failures.isEmpty, "a graceful restart fails no call: \(calm.failures)")
            print("systemd --user: systemctl restart under load: \(calm.total) calls, \(calm.successes) answered, "
                + "\(calm.failures.values.reduce(0, +)) failed; pid \(secondPID) → \(thirdPID)")

            // 9. A wedged serving loop stops the watchdog pings: systemd kills and restarts the daemon. (A manual
            // restart starts NRestarts, the count of automatic ones, from 0 again.)
            let restartsBefore = Int(try await m.show("breakwater.service", "NRestarts")) ?? -1
            let (wedged, wedgeOut) = try await m.systemctl(["kill", "--signal=SIGUSR2", "--kill-who=main",
                                                            "breakwater.service"])
            #expect(wedged == 0, "\(wedgeOut)")
            // 4 s watchdog, then at most TimeoutAbortSec=10s for the SIGABRT backtrace before SIGKILL.
            let watchdogRestart = try await waitUntil(timeout: .seconds(40)) {
                let pid = try await m.show("breakwater.service", "MainPID")
                let restarts = try await m.show("breakwater.service", "NRestarts")
                return pid != "0" && pid != thirdPID && Int(restarts) == restartsBefore + 1
            }
            #expect(watchdogRestart, "systemd restarted the wedged daemon:\n\(m.managerOutput)")
            // The manager (started with --log-target=journal) says why it killed the daemon.
            let timeouts = try journal.entries().compactMap(\.message).filter { $0.contains("Watchdog timeout") }
            #expect(!timeouts.isEmpty, "the manager logged the watchdog timeout")
            let afterWedge = try await client.send(route: "default", body: chat("after the wedge"))
            #expect(content(afterWedge.body) == "Echo: after the wedge")
            if watchdogRestart, let timeout = timeouts.first {
                print("systemd --user: wedged serving loop → \(timeout) → restarted, serving again")
            }

            // Nothing secret in the journal.
            let all = try journal.entries()
            #expect(!all.contains { $0.description.contains(Self.apiKey) })
        }
    }
}

/// Outcomes of the load's calls, by failure description (nil: answered correctly).
final class LoadTally: Sendable {
    let stopped = Atomic<Bool>(false)
    private let workers = Atomic<Int>(0)

    func workerStarted() { workers.add(1, ordering: .relaxed) }
    func workerEnded() { workers.subtract(1, ordering: .relaxed) }
    /// Workers still in their loop.
    var running: Int { workers.load(ordering: .relaxed) }

    private let state = Mutex((total: 0, successes: 0, failures: [String: Int]()))

    func record(_ failure: String?) {
        state.withLock { s in
            s.total += 1
            if let failure { s.failures[failure, default: 0] += 1 } else { s.successes += 1 }
        }
    }

    var total: Int { state.withLock { $0.total } }
    var successes: Int { state.withLock { $0.successes } }
    var failures: [String: Int] { state.withLock { $0.failures } }
}
