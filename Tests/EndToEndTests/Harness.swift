import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Where `swift build` put the binaries: beside the test bundle.
let binDir: String = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    .deletingLastPathComponent().path

/// Polls `condition` until it holds or `timeout` passes; the way these tests wait, instead of sleeping.
func waitUntil(timeout: Duration = .seconds(10), interval: Duration = .milliseconds(20),
               _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: interval)
    }
    return try await condition()
}

/// A fresh temporary directory (short path: Unix socket paths are limited to 107 bytes).
func makeTempDir() -> String {
    var template = Array("/tmp/bw-test-XXXXXX".utf8CString)
    return String(cString: mkdtemp(&template)!)
}

func chat(_ message: String) -> [UInt8] {
    Array(try! JSONSerialization.data(withJSONObject: ["messages": [["role": "user", "content": message]]]))
}

func content(_ json: [UInt8]) -> String? {
    guard let o = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any],
          let c = (o["choices"] as? [[String: Any]])?.first,
          let m = (c["message"] ?? c["delta"]) as? [String: Any] else { return nil }
    return m["content"] as? String
}

/// A child process with its output captured to a file (so a chatty child never blocks on a full pipe).
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    let logPath: String

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], logPath: String) throws {
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)!
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Waits for exit at most `timeout`; returns the exit status, or nil if it is still running.
    func waitForExit(timeout: Duration = .seconds(15)) async throws -> Int32? {
        let exited = try await waitUntil(timeout: timeout) { !self.process.isRunning }
        return exited ? process.terminationStatus : nil
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s; never waits unbounded.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        while process.isRunning, ContinuousClock.now < deadline + .seconds(5) { usleep(10_000) }
    }
}

/// A real `breakwaterd` process on a temporary socket, in front of an in-process fake provider.
final class DaemonUnderTest: @unchecked Sendable {
    static let apiKey = "sk-test-key-must-never-appear-0123456789"

    let dir: String
    let socket: String
    let fake: FakeProvider
    /// The running daemon; `respawn()` replaces it.
    private(set) var daemon: ChildProcess
    /// How the daemon was started, so `respawn()` starts it the same way.
    private let command: (String, [String])
    private let environment: [String: String]
    private var generation = 0

    /// `extraConfig` is appended to the generated YAML (e.g. a `limits:` block).
    static func start(fakePersonality: Personality = .healthy, extraConfig: String = "",
                      routes: String? = nil, withKey: Bool = true,
                      providerBlock: String? = nil, policy: String? = nil,
                      extraArguments: [String] = [], providerOptions: String = "",
                      environment: [String: String] = [:], withStateDirectory: Bool = false,
                      wrap: (@Sendable (String, [String]) -> (String, [String]))? = nil)
        async throws -> DaemonUnderTest {
        let dir = makeTempDir()
        let fake = try await FakeProvider.start(personality: fakePersonality)
        let config = dir + "/breakwater.yaml"
        try """
        providers:
        \(providerBlock ?? """
              fake:
                kind: openai
                base_url: \(fake.baseURL)
                api_key_env: BW_TEST_KEY
                http_version: "1.1"
                timeouts:
                  connect: 2s
                  first_byte: 20s
                  idle: 20s
                  total: 30s
                retry_config:
                  retry_count: 2
                  backoff_base: 10ms
            \(providerOptions)
            """)
        routes:
        \(routes ?? "  default:\n    - provider: fake\n      model: gpt-4o-mini")
        \(extraConfig)
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = dir + "/bw.sock"
        var policyArgs: [String] = []
        if let policy {
            try policy.write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
            policyArgs = ["--policy", dir + "/policy.yaml"]
        }
        let stateArgs = withStateDirectory ? ["--state-dir", dir + "/state"] : []
        let command = (wrap ?? { ($0, $1) })(binDir + "/breakwaterd", ["--config", config, "--socket", socket]
                                                 + policyArgs + stateArgs + extraArguments)
        let env = environment.merging(["BW_TEST_KEY": withKey ? apiKey : ""]) { $1 }
        let daemon = try ChildProcess(command.0, command.1, environment: env, logPath: dir + "/daemon.log")
        let d = DaemonUnderTest(dir: dir, socket: socket, fake: fake, daemon: daemon, command: command,
                                environment: env)
        let up = try await waitUntil(timeout: .seconds(30)) {
            FileManager.default.fileExists(atPath: socket) && (try? RawConnection(path: socket)) != nil
        }
        guard up else {
            d.stop()
            throw TestFailure("daemon did not come up:\n\(daemon.output)")
        }
        return d
    }

    private init(dir: String, socket: String, fake: FakeProvider, daemon: ChildProcess, command: (String, [String]),
                 environment: [String: String]) {
        self.dir = dir
        self.socket = socket
        self.fake = fake
        self.daemon = daemon
        self.command = command
        self.environment = environment
    }

    /// Starts the daemon again, the same way, after the last one exited (or was killed); its log goes to
    /// `daemon-N.log`. Does not wait for it to serve.
    func respawn() throws {
        generation += 1
        daemon = try ChildProcess(command.0, command.1, environment: environment,
                                  logPath: dir + "/daemon-\(generation).log")
    }

    func client(name: String = "e2e") -> BreakwaterClient {
        BreakwaterClient(socketPath: socket, clientName: name)
    }

    /// `breakwater status`'s answer, from a client of its own.
    func status() async throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(try await client(name: "admin").admin("status")))
            as? [String: Any] ?? [:]
    }

    func stop() {
        daemon.stop()
        Task { [fake] in try? await fake.shutdown() }
        if ProcessInfo.processInfo.environment["BW_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// The daemon's log must never hold the API key.
    func assertNoSecretsInLog(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!daemon.output.contains(Self.apiKey), sourceLocation: sourceLocation)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// `body` with a `sockaddr_un` for `path` (a Unix socket path of at most 107 bytes), as bind/connect take it.
func withUnixAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        let b = Array(path.utf8)
        raw.copyBytes(from: b)
        raw[b.count] = 0
    }
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}

/// A process's resident memory (VmRSS, from /proc), in MB; 0 when it cannot be read. `field` picks another line
/// of /proc/PID/status: `RssAnon` (its heap and stacks), `RssFile` (pages of its executable and libraries).
func residentMB(_ pid: Int32, _ field: String = "VmRSS") -> Double {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
          let kb = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    else { return 0 }
    return kb / 1024
}

/// A hand-driven protocol connection for the bad-input tests: writes arbitrary bytes, reads frames.
final class RawConnection {
    let fd: Int32
    var decoder = FrameDecoder(limits: Limits(maxFramePayload: 16 << 20))

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        let rc = withUnixAddress(path) { connect(fd, $0, $1) }
        guard rc == 0 else {
            close(fd)
            throw TestFailure("connect failed: errno \(errno)")
        }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func write(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    func write(_ frame: Frame) { write(frame.encoded()) }

    /// Half-closes: the daemon sees end of input but can still answer.
    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// The next frame, or nil when the daemon closed the connection (or 10 s passed).
    func read() throws -> Frame? {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            if let f = try decoder.next() { return f }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            decoder.feed(buf[0..<n])
        }
    }

    /// Sends HELLO and returns the daemon's.
    @discardableResult
    func hello(streamWindow: UInt32? = nil) throws -> Hello {
        write(Hello.client(clientName: "raw", streamWindow: streamWindow).frame())
        guard let f = try read() else { throw TestFailure("no HELLO answer") }
        return try Hello(frame: f)
    }

    /// True once the daemon has closed the connection (reads return end of file).
    func isClosedByPeer() throws -> Bool {
        while let f = try read() {
            _ = f
        }
        return true
    }
}
