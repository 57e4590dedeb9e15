import ArgumentParser
import BreakwaterClient
import CurlTransport
import Governance
import Foundation
import Histogram
import Synchronization

/// `breakwater-bench`: the same closed-loop load, in one run, (a) straight at the fake provider with libcurl and
/// (b) through client shim → breakwaterd → fake provider. Prints req/s and latency percentiles of each, the
/// overhead (b − a), and the daemon's peak RSS. `--chaos` runs the fault matrix instead (Chaos.swift).
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "breakwater-bench",
        abstract: "Measure the sidecar's overhead against calling the provider directly.")

    @Option(help: "Calls in flight at once.") var concurrency = 32
    @Option(help: "Seconds of measured load per phase and round (default 5); with --chaos, per cell (default 10).")
    var seconds: Double?
    @Option(help: "Seconds of unmeasured warm-up before each phase.") var warmup = 1.0
    @Option(help: "Rounds of (direct, sidecar); alternating rounds evens out drift.") var rounds = 2
    @Flag(help: "Streamed calls instead of plain ones.") var stream = false
    @Flag(help: """
        Run the daemon with a policy: every call is authenticated (HELLO token), checked against scopes and \
        tenant, held against a budget and audited to the journal, as in a governed deployment.
        """) var policy = false
    @Option(help: """
        Provider latency scenarios, in ms, each run in full (default: 20, then 0): 0 saturates the machine \
        (throughput, CPU cost per call); a realistic latency (an LLM takes 100s of ms) leaves CPU to spare and \
        shows the latency added. With --chaos: one value, L (default 20).
        """) var providerLatencyMs: [Int] = []
    @Option(help: "Directory holding breakwaterd and fake-provider (default: beside this binary).") var binDir: String?

    @Flag(help: """
        Sustained load through a matrix of provider faults instead: for each fault row, concurrency and mode \
        (direct, retries only, with fallback), success rate, throughput, latency and upstream attempts per call \
        as the fake providers counted them (README, Benchmark).
        """) var chaos = false
    @Flag(help: """
        The OpenAI-compatible HTTP front instead: wrk (one thread; Debian's wrk package) straight at the fake \
        provider and through the daemon's loopback TCP listener, and the binary protocol through the shim, at each \
        of --http-connections, against one governed daemon (README, Benchmark).
        """) var http = false
    @Flag(help: """
        What a call costs the daemon instead: at saturation, at each of --cost-concurrency calls in flight, without \
        and with a policy (auditing into a private journald), its CPU time and context switches per call \
        (README, Benchmark).
        """) var cost = false
    @Option(help: "With --cost: calls in flight, comma-separated.") var costConcurrency = "1,16,64"
    @Option(help: """
        With --cost: how many times to run the two daemons, alternating (plain, governed, plain, ...); with more \
        than one it prints each run's row, then the median per row and the median of the runs' ratios.
        """) var costRounds = 1
    @Flag(help: """
        With --cost: provider rate limits shared through a real redis-server (scope: cluster) against the same \
        limits held by the daemon alone (scope: host), instead of policy off and on: the latency and daemon CPU \
        the cluster store adds per call (README, Fleet).
        """) var cluster = false
    @Flag(help: """
        With --cost: a governed daemon whose tenant budget is held and settled in a real redis-server (budgets \
        scope: cluster) against the same budget in the daemon's own ledger (scope: host): what the store's round \
        trip before each call adds (README, Fleet).
        """) var clusterBudgets = false
    @Flag(help: """
        Many slow streams instead: at each of --open-streams streams open at once, each sending a chunk every \
        100 ms, against an HTTP/1.1 provider (max_connections raised) and an HTTP/2 one (nghttpx in front of the \
        fake): the daemon's CPU per forwarded chunk and resident memory per open stream (README, Benchmark).
        """) var slowStreams = false
    @Flag(help: """
        What the daemon parses of every answer instead, timed alone in this process (an OpenAI stream event, a \
        whole answer, an event's SSE lines, an answer's rate-limit headers): ns per operation (BENCHMARKS.md).
        """) var parsers = false
    @Option(help: "With --slow-streams: numbers of streams open at once, comma-separated.")
    var openStreams = "100,1000,5000"
    @Option(help: """
        With --slow-streams: the daemon's limits.stream_coalescing_window for each row, comma-separated (e.g. \
        0s,5ms,10ms); each count runs at each window. Default: the daemon's default (5ms).
        """) var coalescingWindows = "default"
    @Option(help: "With --http: numbers of connections (and calls in flight), comma-separated.")
    var httpConnections = "1,16,64"
    @Option(help: "With --chaos: concurrencies to run each row at, comma-separated.") var chaosConcurrency = "16,64"
    @Option(help: "With --chaos: the rows to run, by number or name, comma-separated (e.g. 3,5 or hard-down).")
    var rows: String?
    @Option(help: "With --chaos: YAML lines appended to the primary provider's block in the daemon's config.")
    var extraProviderYaml: String?
    @Option(help: "With --chaos: also write every cell's figures to this file as JSON.") var chaosJson: String?
    @Option(help: """
        With --chaos: the seed of the fakes' fault generators (which requests meet a probabilistic fault); run \
        several to see how much a cell owes to the draw.
        """) var faultSeed: UInt64 = 1

    /// Seconds of measured load per phase (the non-chaos benchmark).
    var phaseSeconds: Double { seconds ?? 5 }

    func validate() throws {
        if cluster || clusterBudgets, !cost { throw ValidationError("--cluster and --cluster-budgets go with --cost") }
        if cluster, clusterBudgets { throw ValidationError("--cluster and --cluster-budgets are separate runs") }
        if cost || slowStreams {
            guard !policy, !chaos, !http, !(cost && slowStreams) else {
                throw ValidationError("--cost runs with and without a policy itself; --slow-streams, --chaos and "
                    + "--http are other benchmarks")
            }
        }
        if chaos {
            guard !stream, !policy else {
                throw ValidationError("--chaos picks streaming per row and runs without a policy")
            }
            guard providerLatencyMs.count <= 1 else { throw ValidationError("--chaos takes one provider latency") }
            _ = try Chaos.parseConcurrencies(chaosConcurrency)
            _ = try Chaos.parseRows(rows)
        }
        guard (seconds ?? 1) > 0, warmup >= 0, concurrency > 0, rounds > 0 else {
            throw ValidationError("--seconds, --concurrency and --rounds must be positive, --warmup not negative")
        }
    }

    func run() async throws {
        let bin = binDir ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().path
        var template = Array("/tmp/bw-bench-XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        if parsers {
            ParserBench().run()
            return
        }
        if cost {
            try await CostBench(bin: bin, dir: dir, seconds: seconds ?? 5, warmup: warmup,
                                concurrencies: Chaos.parseConcurrencies(costConcurrency), stream: stream,
                                cluster: cluster, clusterBudgets: clusterBudgets, rounds: max(1, costRounds)).run()
            return
        }
        if slowStreams {
            try await SlowStreams(bin: bin, dir: dir, seconds: seconds ?? 10,
                                  counts: Chaos.parseConcurrencies(openStreams),
                                  windows: coalescingWindows.split(separator: ",").map {
                                      $0.trimmingCharacters(in: .whitespaces) }).run()
            return
        }
        if http {
            print("breakwater-bench --http")
            print("machine: " + Machine.line)
            print("command: " + Machine.command)
            let connections = try Chaos.parseConcurrencies(httpConnections)
            try await HTTPBench(bin: bin, dir: dir, seconds: Int(seconds ?? 8), connections: connections,
                                latencyMs: providerLatencyMs.first ?? 0).run()
            return
        }
        if chaos {
            let run = try Chaos(
                bin: bin, dir: dir, seconds: seconds ?? 10, warmup: warmup,
                concurrencies: Chaos.parseConcurrencies(chaosConcurrency), rows: Chaos.parseRows(rows),
                latencyMs: providerLatencyMs.first ?? 20, extraProviderYAML: extraProviderYaml, jsonPath: chaosJson,
                faultSeed: faultSeed)
            try await run.run()
            return
        }
        print("breakwater-bench: \(concurrency) concurrent \(stream ? "streamed" : "plain") calls, "
            + "\(rounds) rounds × \(phaseSeconds) s per phase")
        if policy {
            // Without a journald the audit entries are sent to a socket nobody reads: cheaper than the real thing.
            let journald = FileManager.default.fileExists(atPath: "/run/systemd/journal/socket")
            print("policy: on (token, scopes, tenant, budget, audit); journald socket "
                + (journald ? "present" : "ABSENT: audit entries go nowhere, so the audit cost is understated"))
        }
        print("machine: " + Machine.line)
        print("command: " + Machine.command)
        for latency in providerLatencyMs.isEmpty ? [20, 0] : providerLatencyMs {
            try await scenario(bin: bin, dir: dir, latencyMs: latency)
        }
    }

    static let agentToken = "bench-agent-token-0123456789abcdef"

    /// What every benchmark call asks (through the daemon, which adds the model).
    static let callBody = Array(#"{"messages":[{"role":"user","content":"Say something short about breakwaters."}],"#
        .utf8) + Array(#""max_tokens":32}"#.utf8)

    /// One agent with the scopes the benchmark's calls need and a budget they cannot exhaust; `clusterBudget`:
    /// its tenant has one too, held in the cluster store (`scope: cluster`), or in the daemon's ledger.
    static func policyText(tenantBudget scope: String? = nil) -> String {
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
            """ + (scope.map { "\ntenants:\n  acme:\n    budgets: {scope: \($0), daily: {tokens: 1000000000000}}\n" } ?? "")
    }

    /// The fake provider answering after `latencyMs`, announcing rate limits far above what the load can reach (the
    /// daemon honours them, the direct path cannot), and a daemon config with it as provider `fake` and route
    /// `default` (plus `extraConfig`, whole YAML lines). `tag` names its files in `dir`.
    /// `providerOptions`: more keys of provider `fake`'s flow mapping, each starting with ", ".
    static func startFake(bin: String, dir: String, latencyMs: Int, tag: String,
                          extraConfig: String = "", providerOptions: String = "")
        throws -> (fake: Child, port: Int, config: String) {
        let personality = dir + "/personality-\(tag).json"
        let json = #"{"name": "bench", "default_step": {"delay_first_byte_ms": \#(latencyMs)}, "#
            + #""ratelimit_limit_requests": 1000000000, "ratelimit_limit_tokens": 1000000000000}"#
        try json.write(toFile: personality, atomically: true, encoding: .utf8)
        let fake = try Child(bin + "/fake-provider", ["--port", "0", "--personality", personality],
                             log: dir + "/fake-\(tag).log")
        let port = try fake.port()
        let config = dir + "/bench-\(tag).yaml"
        try """
        providers:
          fake: {kind: openai, base_url: "http://127.0.0.1:\(port)/v1", api_key_env: BENCH_KEY, http_version: "1.1"\(providerOptions)}
        routes:
          default: [{provider: fake, model: gpt-4o-mini}]

        """.appending(extraConfig).write(toFile: config, atomically: true, encoding: .utf8)
        return (fake, port, config)
    }

    func scenario(bin: String, dir: String, latencyMs: Int) async throws {
        let (fake, port, config) = try Self.startFake(bin: bin, dir: dir, latencyMs: latencyMs, tag: "\(latencyMs)")
        defer { fake.stop() }
        let socket = dir + "/bench-\(latencyMs).sock"
        var policyArguments: [String] = []
        if policy {
            try Self.policyText().write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
            policyArguments = ["--policy", dir + "/policy.yaml"]
        }
        let daemon = try Child(bin + "/breakwaterd", ["--config", config, "--socket", socket, "--log-level", "warning"]
                                   + policyArguments,
                               environment: ["BENCH_KEY": "bench-key"], log: dir + "/daemon-\(latencyMs).log")
        defer { daemon.stop() }
        let client = BreakwaterClient(socketPath: socket, credential: policy ? Self.agentToken : nil,
                                      clientName: "bench")
        defer { client.close() }
        try await waitUntilServing(client, daemon)

        let body = Self.callBody
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
        var daemonCPU = 0
        for round in 1...rounds {
            let a = try await measure { try await directCall(engine, direct) }
            let sampler = Task {
                var peak = 0
                while !Task.isCancelled {
                    peak = max(peak, daemon.anonymousRSSKiB() ?? 0)
                    try? await Task.sleep(for: .milliseconds(100))
                }
                return peak
            }
            let (action, tenant) = policy ? ("chat.reply", "acme") : (nil, nil)
            let cpu = CPUWindow()
            let b = try await measure(cpu: (cpu, daemon)) { [stream] in
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
            if let used = cpu.used, b.histogram.totalCount > 0 {
                let perCall = Double(used) / Double(b.histogram.totalCount)
                print(String(format: "      breakwaterd CPU (user + system) %.1f µs per call", perCall))
                daemonCPU += used
            }
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
        if daemonCPU > 0, sidecarTotal.histogram.totalCount > 0 {
            print(String(format: "  breakwaterd CPU (user + system): %.1f µs per call",
                         Double(daemonCPU) / Double(sidecarTotal.histogram.totalCount)))
        }
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

    /// The closed loop at this run's concurrency, warm-up and window.
    /// With `cpu`, the child's CPU time is read at the window's start and end (not over the warm-up).
    func measure(cpu: (CPUWindow, Child)? = nil,
                 _ call: @escaping @Sendable () async throws -> Void) async throws -> Result {
        await ClosedLoop(concurrency: concurrency, warmup: warmup, seconds: phaseSeconds)
            .run(checkpoints: cpu == nil ? [] : [0, phaseSeconds], atCheckpoint: { index in
                cpu?.0.read(index, cpu?.1.cpuMicroseconds())
            }, call)
    }
}

/// A child's CPU time at the measured window's start and end.
final class CPUWindow: @unchecked Sendable {
    // Touched only from ClosedLoop's checkpoint callback, one call at a time, then read after the run.
    private var start: Int?
    private var end: Int?

    func read(_ checkpoint: Int, _ micros: Int?) {
        if checkpoint == 0 { start = micros } else { end = micros }
    }

    /// Microseconds of CPU the child used in the window.
    var used: Int? {
        guard let start, let end else { return nil }
        return end - start
    }
}
