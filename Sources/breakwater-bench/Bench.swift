import ArgumentParser
import BreakwaterClient
import CurlTransport
import Governance
import Foundation
import Histogram
import Synchronization

/// `breakwater-bench`: the same closed-loop load, in one run, (a) straight at the fake provider with libcurl and
/// (b) through client shim → breakwaterd → fake provider. Prints req/s and latency percentiles of each, the
/// overhead (b − a), and the daemon's peak RSS.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "breakwater-bench",
        abstract: "Measure the sidecar's overhead against calling the provider directly.")

    @Option(help: "Calls in flight at once.") var concurrency = 32
    @Option(help: "Seconds of measured load per phase and round.") var seconds = 5.0
    @Option(help: "Seconds of unmeasured warm-up before each phase.") var warmup = 1.0
    @Option(help: "Rounds of (direct, sidecar); alternating rounds evens out drift.") var rounds = 2
    @Flag(help: "Streamed calls instead of plain ones.") var stream = false
    @Flag(help: """
        Run the daemon with a policy: every call is authenticated (HELLO token), checked against scopes and \
        tenant, held against a budget and audited to the journal, as in a governed deployment.
        """) var policy = false
    @Option(help: """
        Provider latency scenarios, in ms, each run in full: 0 saturates the machine (throughput, CPU cost per \
        call); a realistic latency (an LLM takes 100s of ms) leaves CPU to spare and shows the latency added.
        """) var providerLatencyMs: [Int] = [20, 0]
    @Option(help: "Directory holding breakwaterd and fake-provider (default: beside this binary).") var binDir: String?

    func run() async throws {
        let bin = binDir ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().path
        var template = Array("/tmp/bw-bench-XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        print("breakwater-bench: \(concurrency) concurrent \(stream ? "streamed" : "plain") calls, "
            + "\(rounds) rounds × \(seconds) s per phase")
        if policy {
            // Without a journald the audit entries are sent to a socket nobody reads: cheaper than the real thing.
            let journald = FileManager.default.fileExists(atPath: "/run/systemd/journal/socket")
            print("policy: on (token, scopes, tenant, budget, audit); journald socket "
                + (journald ? "present" : "ABSENT: audit entries go nowhere, so the audit cost is understated"))
        }
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, "
            + "\(ProcessInfo.processInfo.physicalMemory >> 30) GiB, \(Self.cpuModel())")
        for latency in providerLatencyMs {
            try await scenario(bin: bin, dir: dir, latencyMs: latency)
        }
    }

    static let agentToken = "bench-agent-token-0123456789abcdef"

    /// One agent with the scopes the benchmark's calls need and a budget they cannot exhaust.
    static var policyText: String {
        let now = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-60))
        return """
            anonymous: deny
            agents:
              bench-agent:
                agent_identity:
                  credentials: [{name: t1, token_sha256: \(CredentialDigest.policyValue(forToken: agentToken)), \
            issued_at: \(now), validity_window: 24h}]
                scopes: {actions: [chat.reply], routes: [default], models: [gpt-4o-mini]}
                relationships: [{agent_to_tenant: acme}]
                budgets: {daily: {tokens: 1000000000000}}
            """
    }

    func scenario(bin: String, dir: String, latencyMs: Int) async throws {
        let personality = dir + "/personality-\(latencyMs).json"
        // Rate-limit headers far above what the load can reach: the daemon honours them, the direct path cannot.
        let json = #"{"name": "bench", "default_step": {"delay_first_byte_ms": \#(latencyMs)}, "#
            + #""ratelimit_limit_requests": 1000000000, "ratelimit_limit_tokens": 1000000000000}"#
        try json.write(toFile: personality, atomically: true, encoding: .utf8)
        let fake = try Child(bin + "/fake-provider", ["--port", "0", "--personality", personality],
                             log: dir + "/fake-\(latencyMs).log")
        defer { fake.stop() }
        let port = try fake.port()
        let config = dir + "/bench.yaml"
        try """
        providers:
          fake: {kind: openai, base_url: "http://127.0.0.1:\(port)/v1", api_key_env: BENCH_KEY, http_version: "1.1"}
        routes:
          default: [{provider: fake, model: gpt-4o-mini}]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = dir + "/bench-\(latencyMs).sock"
        var policyArguments: [String] = []
        if policy {
            try Self.policyText.write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
            policyArguments = ["--policy", dir + "/policy.yaml"]
        }
        let daemon = try Child(bin + "/breakwaterd", ["--config", config, "--socket", socket, "--log-level", "warning"]
                                   + policyArguments,
                               environment: ["BENCH_KEY": "bench-key"], log: dir + "/daemon-\(latencyMs).log")
        defer { daemon.stop() }
        let client = BreakwaterClient(socketPath: socket, credential: policy ? Self.agentToken : nil,
                                      clientName: "bench")
        defer { client.close() }
        let deadline = ContinuousClock.now + .seconds(30)
        while (try? await client.serverLimits()) == nil {
            guard ContinuousClock.now < deadline else { throw ValidationError("daemon did not start") }
            try await Task.sleep(for: .milliseconds(50))
        }

        let body = Array(#"{"messages":[{"role":"user","content":"Say something short about breakwaters."}],"#
            .utf8) + Array(#""max_tokens":32}"#.utf8)
        var directBody = body
        directBody.removeLast()
        directBody += Array(#","model":"gpt-4o-mini","stream":\#(stream)}"#.utf8)
        let engine = try CurlEngine()
        defer { engine.shutdown() }
        let direct = HTTPRequest(
            method: "POST", url: "http://127.0.0.1:\(port)/v1/chat/completions",
            headers: [HTTPHeader(name: "Content-Type", value: "application/json"),
                      HTTPHeader(name: "Authorization", value: "Bearer bench-key")],
            body: directBody, httpVersion: .http1_1)

        print("\n== provider latency \(latencyMs) ms"
            + (latencyMs == 0 ? " (saturation: throughput and CPU cost)" : ""))
        var directTotal = Result.empty
        var sidecarTotal = Result.empty
        var peakAnon = 0
        for round in 1...rounds {
            let a = try await measure { try await Self.directCall(engine, direct) }
            let sampler = Task {
                var peak = 0
                while !Task.isCancelled {
                    peak = max(peak, daemon.anonymousRSSKiB() ?? 0)
                    try? await Task.sleep(for: .milliseconds(100))
                }
                return peak
            }
            let (action, tenant) = policy ? ("chat.reply", "acme") : (nil, nil)
            let b = try await measure { [stream] in
                if stream {
                    let s = try await client.stream(route: "default", body: body, action: action, tenant: tenant)
                    for try await _ in s {}
                } else {
                    _ = try await client.send(route: "default", body: body, action: action, tenant: tenant)
                }
            }
            sampler.cancel()
            peakAnon = max(peakAnon, await sampler.value)
            print("round \(round):")
            print("  (a) direct   " + a.line)
            print("  (b) sidecar  " + b.line)
            directTotal.merge(a)
            sidecarTotal.merge(b)
        }
        let rss = daemon.peakRSSKiB()
        print("all rounds:")
        print("  (a) direct   " + directTotal.line)
        print("  (b) sidecar  " + sidecarTotal.line)
        print("  overhead (b − a): p50 \(Self.us(sidecarTotal.p(50), directTotal.p(50))), "
            + "p90 \(Self.us(sidecarTotal.p(90), directTotal.p(90))), "
            + "p99 \(Self.us(sidecarTotal.p(99), directTotal.p(99))), "
            + String(format: "mean %.0f µs", sidecarTotal.histogram.mean - directTotal.histogram.mean))
        print("  breakwaterd peak RSS: \(rss.map { String(format: "%.1f MB", Double($0) / 1024) } ?? "unknown")"
            + String(format: " (its own anonymous memory at most %.1f MB; the rest is shared library pages)",
                     Double(peakAnon) / 1024))
        if directTotal.errors + sidecarTotal.errors > 0 {
            print("  errors: direct \(directTotal.errors), sidecar \(sidecarTotal.errors); first: "
                + (sidecarTotal.firstError ?? directTotal.firstError ?? "?"))
        }
    }

    static func us(_ b: UInt64, _ a: UInt64) -> String {
        "\(Int64(b) - Int64(a)) µs"
    }

    static func cpuModel() -> String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return info.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1)[1]).trimmingCharacters(in: .whitespaces) } ?? "?"
    }

    /// Closed loop: `concurrency` workers, each sending its next call when the last one ends.
    func measure(_ call: @escaping @Sendable () async throws -> Void) async throws -> Result {
        for phase in [warmup, seconds] where phase > 0 {
            let end = ContinuousClock.now + .milliseconds(Int64(phase * 1000))
            let results = await withTaskGroup(of: Result.self) { group in
                for _ in 0..<concurrency {
                    group.addTask {
                        var r = Result.empty
                        while ContinuousClock.now < end {
                            let start = ContinuousClock.now
                            do {
                                try await call()
                                let d = ContinuousClock.now - start
                                r.record(UInt64(d.components.seconds) * 1_000_000
                                    + UInt64(d.components.attoseconds / 1_000_000_000_000))
                            } catch {
                                r.errors += 1
                                if r.firstError == nil { r.firstError = "\(error)" }
                            }
                        }
                        return r
                    }
                }
                return await group.reduce(into: Result.empty) { $0.merge($1) }
            }
            if phase == seconds {
                var r = results
                r.seconds = seconds
                return r
            }
        }
        return .empty
    }

    static func directCall(_ engine: CurlEngine, _ request: HTTPRequest) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            engine.start(request, delegate: OneShot(c))
        }
    }
}

/// Completes a continuation when a direct libcurl transfer ends (body discarded, like an app that parses it).
final class OneShot: TransferDelegate, Sendable {
    let continuation: Mutex<CheckedContinuation<Void, any Error>?>
    let status = Atomic<Int>(0)

    init(_ c: CheckedContinuation<Void, any Error>) {
        continuation = Mutex(c)
    }

    func transferDidReceiveHead(status: Int, headers: [HTTPHeader]) {
        self.status.store(status, ordering: .relaxed)
    }

    func transferDidReceiveBody(_ bytes: [UInt8]) {}

    func transferDidComplete(_ result: Swift.Result<Void, TransportError>) {
        let c = continuation.withLock { c in
            defer { c = nil }
            return c
        }
        let ok = (200..<300).contains(status.load(ordering: .relaxed))
        switch result {
        case .success where ok: c?.resume()
        case .success: c?.resume(throwing: ValidationError("HTTP \(status.load(ordering: .relaxed))"))
        case .failure(let e): c?.resume(throwing: e)
        }
    }
}

/// Latencies in microseconds plus counts.
struct Result: Sendable {
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .four)
    var errors = 0
    var firstError: String?
    var seconds = 0.0

    static var empty: Result { Result() }

    mutating func record(_ us: UInt64) {
        _ = histogram.record(max(1, us))
    }

    mutating func merge(_ other: Result) {
        histogram.add(other.histogram)
        errors += other.errors
        firstError = firstError ?? other.firstError
        seconds += other.seconds
    }

    func p(_ percentile: Double) -> UInt64 { histogram.valueAtPercentile(percentile) }

    var line: String {
        let rate = seconds > 0 ? Double(histogram.totalCount) / seconds : 0
        return String(format: "%8.0f req/s   p50 %6d µs   p90 %6d µs   p99 %6d µs   (%d calls, %d errors)",
                      rate, p(50), p(90), p(99), histogram.totalCount, errors)
    }
}

/// A child process whose output goes to a log file.
final class Child: @unchecked Sendable {
    let process = Process()
    let log: String

    init(_ path: String, _ args: [String], environment: [String: String] = [:], log: String) throws {
        self.log = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = args
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
    }

    /// The port from fake-provider's start line.
    func port() throws -> Int {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("{") }),
               let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
               let port = o["port"] as? Int {
                return port
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw ValidationError("fake-provider printed no port")
    }

    /// VmHWM: the most resident memory the process has used, in KiB (shared library pages included).
    func peakRSSKiB() -> Int? { statusField("VmHWM:") }

    /// RssAnon: the process's own (anonymous) resident memory now, in KiB: heap, stacks, buffers.
    func anonymousRSSKiB() -> Int? { statusField("RssAnon:") }

    private func statusField(_ name: String) -> Int? {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}
