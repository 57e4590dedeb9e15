import ArgumentParser
import BreakwaterClient
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `breakwater demo`: the whole path on this machine with no key and no internet. Starts a fake provider and a
/// daemon on a temporary socket, sends calls through the client shim, prints what happened, and stops both.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run fake provider + daemon + client on a temporary socket and show each feature working.")

    @Option(help: "Directory holding the breakwaterd and fake-provider binaries (default: beside this one).")
    var binDir: String?

    func run() async throws {
        let bin = binDir ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().path
        var template = Array("/tmp/breakwater-demo-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ValidationError("cannot make a temporary directory") }
        let dir = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        print("== Breakwater demo (temporary directory \(dir))")
        let fake = try Spawned.start(bin + "/fake-provider", ["--port", "0"])
        defer { fake.stop() }
        let line = try fake.firstLine(timeout: 30)
        guard let info = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let port = info["port"] as? Int else { throw ValidationError("fake provider said: \(line)") }
        print("fake provider (OpenAI format) on 127.0.0.1:\(port)")

        let config = dir + "/breakwater.yaml"
        try """
        # Everything not named here keeps its built-in default.
        providers:
          fake-openai:
            kind: openai
            base_url: http://127.0.0.1:\(port)/v1
            api_key_env: BREAKWATER_DEMO_KEY
            http_version: "1.1"
        routes:
          default:
            - provider: fake-openai
              model: gpt-4o-mini
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = dir + "/breakwater.sock"
        let daemon = try Spawned.start(bin + "/breakwaterd",
                                       ["--config", config, "--socket", socket, "--log-level", "warning"],
                                       environment: ["BREAKWATER_DEMO_KEY": "demo-key-not-a-secret"],
                                       captureOutput: false)
        defer { daemon.stop() }
        try await waitForSocket(socket, timeout: 30)
        print("breakwaterd serving on \(socket)\n")

        let client = BreakwaterClient(socketPath: socket, clientName: "breakwater-demo")
        var failures = 0
        func check(_ ok: Bool, _ what: String) {
            print(ok ? "  ok: \(what)" : "  FAILED: \(what)")
            if !ok { failures += 1 }
        }

        print("1. A plain call")
        var clock = ContinuousClock.now
        let plain = try await client.send(route: "default", body: chatBody("Hello from the demo"))
        print("  answer: \(assistantText(plain.body) ?? "?")")
        print("  from \(plain.head.provider)/\(plain.head.model), request \(plain.head.requestID), "
            + "\(plain.trailers.totalTokens ?? 0) tokens, \(ms(since: clock)) ms")
        check(assistantText(plain.body) == "Echo: Hello from the demo", "the answer came back whole")

        print("\n2. A streamed call: chunks arrive as the provider sends them")
        try await scriptFake(port: port, [["chunk_interval_ms": 150]])
        clock = .now
        let stream = try await client.stream(route: "default", body: chatBody("one two three four five"))
        var arrivals: [Int] = []
        for try await chunk in stream {
            let text = assistantText(chunk) ?? ""
            arrivals.append(ms(since: clock))
            print("  +\(arrivals.last!) ms  \(text.debugDescription)")
        }
        print("  trailers: \(stream.trailers?.totalTokens ?? 0) tokens")
        check(arrivals.count >= 5 && arrivals.last! - arrivals.first! >= 300,
              "chunks were spread over time, not delivered at the end")

        print("\n3. 100 concurrent calls on one connection")
        clock = .now
        let results = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<100 {
                group.addTask {
                    let r = try? await client.send(route: "default", body: chatBody("call \(i)"))
                    return r.map { assistantText($0.body) == "Echo: call \(i)" } ?? false
                }
            }
            return await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
        }
        print("  \(results)/100 answered correctly in \(ms(since: clock)) ms")
        check(results == 100, "every concurrent call got its own answer")

        print("\n4. A provider that fails once is retried; one that keeps failing is a typed error")
        try await scriptFake(port: port, [["status": 503]])
        let retried = try await client.send(route: "default", body: chatBody("worth a retry"))
        print("  answered after \(retried.head.attempts) attempts: \(assistantText(retried.body) ?? "?")")
        check(retried.head.attempts == 2, "the 503 was retried and the call succeeded")
        try await scriptFake(port: port, [["status": 503], ["status": 503], ["status": 503]])
        do {
            _ = try await client.send(route: "default", body: chatBody("this one fails"))
            check(false, "three 503s in a row were reported")
        } catch {
            print("  \(error)")
            check(error.code == .upstreamError && error.upstreamStatus == 503,
                  "three 503s in a row were reported as UPSTREAM_ERROR, listing every attempt")
        }

        print("\n5. Cancelling a slow call stops it upstream")
        try await scriptFake(port: port, [["delay_first_byte_ms": 10_000]])
        let before = try await fakeStats(port: port)["aborted"] as? Int ?? 0
        clock = .now
        let slow = Task { try await client.send(route: "default", body: chatBody("slow")) }
        try await Task.sleep(for: .milliseconds(300))
        slow.cancel()
        let outcome = await slow.result
        print("  call ended after \(ms(since: clock)) ms: \(outcome)")
        var aborted = before
        let deadline = ContinuousClock.now + .seconds(5)
        while aborted == before, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            aborted = try await fakeStats(port: port)["aborted"] as? Int ?? 0
        }
        check(aborted == before + 1, "the provider saw the upstream request abandoned")

        print("\n6. Unknown route")
        do {
            _ = try await client.send(route: "nope", body: chatBody("x"))
        } catch {
            print("  \(error)")
            check(error.code == .unknownRoute, "refused with UNKNOWN_ROUTE")
        }

        client.close()
        print(failures == 0 ? "\ndemo OK" : "\ndemo FAILED (\(failures) checks)")
        if failures > 0 { throw ExitCode(1) }
    }

    func ms(since start: ContinuousClock.Instant) -> Int {
        let d = ContinuousClock.now - start
        return Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }

    func scriptFake(port: Int, _ steps: [[String: Any]]) async throws {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/_fake/script")!)
        request.httpMethod = "POST"
        request.httpBody = try JSONSerialization.data(withJSONObject: steps)
        _ = try await URLSession.shared.data(for: request)
    }

    func fakeStats(port: Int) async throws -> [String: Any] {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/_fake/stats")!)
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }

    func waitForSocket(_ path: String, timeout: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(timeout)
        while ContinuousClock.now < deadline {
            let probe = BreakwaterClient(configuration: {
                var c = BreakwaterClient.Configuration(socketPath: path)
                c.reconnectAttempts = 1
                return c
            }())
            if (try? await probe.serverLimits()) != nil {
                probe.close()
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("breakwaterd did not start listening on \(path) within \(timeout) s")
    }
}

/// A child process the demo owns: started with its stdout piped, stopped with SIGTERM.
final class Spawned: @unchecked Sendable {
    let process = Process()
    let output = Pipe()

    static func start(_ path: String, _ args: [String], environment: [String: String] = [:],
                      captureOutput: Bool = true) throws -> Spawned {
        let s = Spawned()
        s.process.executableURL = URL(fileURLWithPath: path)
        s.process.arguments = args
        s.process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if captureOutput { s.process.standardOutput = s.output }
        try s.process.run()
        return s
    }

    /// The first line the child prints, waiting at most `timeout` seconds.
    func firstLine(timeout: Int) throws -> String {
        let handle = output.fileHandleForReading
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(TimeInterval(timeout))
        while Date() < deadline {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            bytes.append(contentsOf: chunk)
            if let nl = bytes.firstIndex(of: 0x0A) { return String(decoding: bytes[..<nl], as: UTF8.self) }
        }
        throw ValidationError("\(process.executableURL?.lastPathComponent ?? "child") printed no start line")
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}
